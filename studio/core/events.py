"""The event protocol: the contract between the engine and both faces (the window and the CLI).

A run reports plain-data events to a sink, and the Session appends each one to the run folder's
`events.jsonl` (telemetry/events.py), so a finished run is re-read and re-drawn exactly as it
looked live. Every event is a dict with `type`, `step` (the optimizer step it belongs to) and
`time` (seconds since the epoch), plus the fields of its kind, defined once here:

    EVENT_KINDS["step"]          # the TypedDict of a kind: its fields and their types
    problems(event)              # [] when the event matches its kind, else one line per problem
    describe(event)              # the one line a person reads (window log, CLI), or None

Who emits what: training.Session (run_started, progress, step, eval, checkpoint, paused, resumed,
run_finished), telemetry.monitor.Telemetry (spectra, importance, decomposition, progress), and a
variant's `telemetry_events` or its `build` through `ctx.emit` (AdaLoRA: ranks, importance; LoRA-drop:
ranks, importance). A run the window finds killed is shown as "interrupted", a state no event carries.
Readers: ui.history.RunHistory (the charts), ui.run_session (the log and the status bar), the CLI's
progress printer, gallery.Gallery (telemetry.json) and training.metrics_from_events.

Fields may be None when a value was not finite (events are JSON-safe: NaN becomes null). A kind
may carry more fields than listed (a variant adds its own); a listed field with a wrong type, a
missing required field or an unknown kind is a problem.
"""

from __future__ import annotations

import typing
from typing import Any, Literal, TypedDict, Union

try:
    from typing import NotRequired, Required
except ImportError:   # Python 3.10
    from typing_extensions import NotRequired, Required


class Event(TypedDict):
    type: str
    step: int
    time: float


class RunStarted(Event, total=False):
    """The model is loaded, the adapter applied and the data prepared: training begins."""
    config: Required[dict]              # the run's config (RunConfig.to_dict)
    trainable_params: Required[int]
    total_params: Required[int]
    adapted_layers: Required[list]      # the adapted modules' names, in model order
    device: Required[str]
    precision: str                      # compute dtype: fp32 / bf16 / fp16
    base_dtype: str                     # how the frozen base is held
    quantize: str                       # none / 4bit / 8bit
    total_steps: int
    train_examples: int
    eval_examples: int
    data_format: str
    resumed_from: Union[str, None]      # the checkpoint a resumed run started from
    run_dir: str
    processes: int
    launch: str                         # single / ddp / fsdp / deepspeed
    padding_free: bool                  # the batch layout the run picked (training.py's probe)
    label_logits_only: bool


class Progress(Event):
    """A phase of preparation or a note (a conversion, tokenizing, a skipped measurement)."""
    message: str


class Step(Event, total=False):
    """One optimizer step's log (Trainer.on_log)."""
    loss: Union[float, None]
    lr: Union[float, None]
    grad_norm: Union[float, None]
    tokens_per_s: Union[float, None]    # tokens of this step over its time, pauses excluded
    epoch: Union[float, None]
    total_steps: Union[int, None]
    memory_mb: Union[float, None]       # memory in use: the CUDA allocator's, the process's RSS on a CPU


class Eval(Event, total=False):
    """An evaluation: eval_loss and the Trainer's other eval_* metrics."""
    eval_loss: Union[float, None]
    epoch: Union[float, None]


class Checkpoint(Event):
    """A complete checkpoint (its marker file written): a resume can start here."""
    path: str


class Paused(Event):
    """The run paused after the step under way."""


class Resumed(Event):
    """The run goes on after a pause."""


class RunFinished(Event, total=False):
    """The run ended, whatever the way (the last event of every run)."""
    status: Required[Literal["completed", "stopped", "failed"]]
    error: Union[str, None]
    error_field: Union[str, None]       # the config field the error is about ("variant.r")
    adapter_path: Union[str, None]
    gallery_entry: Union[str, None]
    train_s: float
    paused_s: float
    telemetry_s: float
    final_telemetry_s: float
    telemetry_postponed: int            # scheduled measurements skipped for the time budget


class Spectra(Event, total=False):
    """Singular values of every adapter update ΔW (sv, k90, k99, stable/effective rank, kind;
    DoRA adds magnitude), by layer name."""
    layers: Required[dict]
    final: bool                         # the measurement after the last step
    cost_s: float                       # what the measurement took
    postponed: int                      # scheduled measurements skipped since the last one


class Importance(Event, total=False):
    """A per-layer importance score, by layer name, and the method that scored it."""
    method: Required[str]
    layers: Required[dict]
    kept: list                          # LoRA-drop: the layers that keep their own pair
    threshold: Union[float, None]
    sample_rows: Union[int, None]


class Ranks(Event, total=False):
    """Each layer's rank (AdaLoRA's allocation; LoRA-drop's kept layers at r, shared at 0)."""
    layers: Required[dict]
    budget: int                         # AdaLoRA: the ranks' sum now
    target_budget: int                  # AdaLoRA: the sum it is pruned towards
    kept: list                          # LoRA-drop
    shared: dict                        # LoRA-drop: shared pair -> the layers that use it


class Decomposition(Event):
    """DoRA's split of each layer's change: magnitude ΔM and direction ΔD, by layer name."""
    layers: dict


EVENT_KINDS: dict[str, type] = {
    "run_started": RunStarted, "progress": Progress, "step": Step, "eval": Eval, "checkpoint": Checkpoint,
    "paused": Paused, "resumed": Resumed, "run_finished": RunFinished, "spectra": Spectra,
    "importance": Importance, "ranks": Ranks, "decomposition": Decomposition,
}


def _accepts(kind_type: Any, value: Any) -> bool:
    """Does a JSON value match a field's annotation (int for float allowed, as JSON has one number)?"""
    origin = typing.get_origin(kind_type)
    if origin in (Required, NotRequired):
        return _accepts(typing.get_args(kind_type)[0], value)
    if origin is Union:
        return any(_accepts(t, value) for t in typing.get_args(kind_type))
    if origin is Literal:
        return value in typing.get_args(kind_type)
    if kind_type is type(None):
        return value is None
    if kind_type is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind_type is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind_type in (str, bool, dict, list):
        return isinstance(value, kind_type)
    return True


def problems(event: Any) -> list[str]:
    """What is wrong with `event` against its kind's definition: [] when nothing is."""
    if not isinstance(event, dict):
        return [f"an event is a JSON object, not {type(event).__name__}"]
    kind = event.get("type")
    if kind not in EVENT_KINDS:
        return [f"unknown event type {kind!r}"]
    cls = EVENT_KINDS[kind]
    hints = typing.get_type_hints(cls, include_extras=True)
    found = []
    for name in sorted(cls.__required_keys__):
        if name not in event:
            found.append(f"{kind}: missing {name}")
    for name, value in event.items():
        if name in hints and not _accepts(hints[name], value):
            found.append(f"{kind}.{name}: {value!r:.60} is not {_type_name(hints[name])}")
    return found


def _type_name(t: Any) -> str:
    return str(t).replace("typing.", "").replace("typing_extensions.", "")


def _number(value: Any, fmt: str = ".4g") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def describe(event: dict) -> str | None:
    """The one line a person reads for an event, the same in the window's log and on the CLI;
    None for the kinds that only charts show (step, spectra, importance, ranks, decomposition)."""
    from .storage import held_text

    kind = event.get("type")
    step = event.get("step")
    if kind == "run_started":
        variant = ((event.get("config") or {}).get("variant") or {}).get("name", "")
        held = held_text(event)
        return (f"{variant}: {event.get('trainable_params', 0):,} trainable of {event.get('total_params', 0):,} "
                f"parameters, {len(event.get('adapted_layers') or [])} adapted layers, "
                f"{event.get('train_examples', '?')} training examples on {event.get('device')}"
                + (f" ({held})" if held else ""))
    if kind == "progress":
        return str(event.get("message", ""))
    if kind == "eval":
        metrics = ", ".join(f"{k.removeprefix('eval_')} {_number(v)}" for k, v in event.items()
                            if k.startswith("eval_") and isinstance(v, (int, float)))
        return f"eval at step {step}: {metrics}"
    if kind == "checkpoint":
        return f"checkpoint: {event.get('path')}"
    if kind in ("paused", "resumed"):
        return f"{kind} at step {step}"
    if kind == "run_finished":
        return f"run {event.get('status')} at step {step}" + (f": {event['error']}" if event.get("error") else "")
    return None


__all__ = ["Event", "EVENT_KINDS", "problems", "describe", "RunStarted", "Progress", "Step", "Eval", "Checkpoint",
           "Paused", "Resumed", "RunFinished", "Spectra", "Importance", "Ranks", "Decomposition"]
