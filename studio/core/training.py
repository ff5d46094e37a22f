"""A training Session: one run of one RunConfig, on transformers' Trainer with a PEFT model.

    session = Session(RunConfig.from_toml("run.toml"))
    result = session.run(sink=print)          # blocks; call session.control.stop() from elsewhere

The Session makes the run folder (config.toml, events.jsonl, checkpoints/, adapter/),
loads the base model and the data, lets the chosen variant build its adapters, and runs the
Trainer with callbacks that turn the Trainer's logs into events, honour stop and pause requests
between optimizer steps, and keep variant state beside each checkpoint. A stopped run still saves
its adapter. `Session(config, resume_dir=RUN_FOLDER)` continues from the run's last checkpoint.

Crash safety: a run killed at any point (SIGKILL, power cut) resumes from its newest complete
checkpoint (one carrying the `studio_complete` marker, written last) and continues the same loss
curve; on resume the event log is cut back to its last whole line, and what the killed process
left half-written (a checkpoint without its marker, a temporary adapter folder) is removed. A
full disk, an exception, running out of memory or a NaN loss end the run `failed` with one
sentence, and keep every checkpoint saved before. One process trains a run folder at a time
(the event log is locked while the run is open).

Everything heavy (torch, transformers, peft) is imported inside methods, so importing this module
is cheap for the window.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .names import PEFT_PREFIX
from . import distributed, storage
from .config import RunConfig, legacy_options, resolved_paths
from .errors import ConfigError, StudioError, TrainingError, one_line
from .paths import DiskFullError, atomic_dir, disk_full_error, fsync_file, sweep_stale, write_text_atomic
from .telemetry.events import EventLog, LogBusy, Sink, make_event, plain, read_events
from .telemetry.monitor import Telemetry
from .telemetry.monitor import make_callback as make_telemetry_callback
from .variants import BuildContext, get_variant
from .variants.base import build_checked

STATE_JSON = "studio_state.json"          # variant state (JSON) kept in the run folder and checkpoints
STATE_TENSORS = "studio_state.safetensors"


class RunControl:
    """Stop and pause requests, set from any thread, honoured between optimizer steps."""

    def __init__(self):
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # a paused run wakes up to stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_while_paused(self, timeout: float = 0.2) -> None:
        self._running.wait(timeout)


@dataclass
class RunResult:
    run_dir: Path
    status: str                   # completed, stopped, failed
    adapter_path: Path | None
    error: str | None = None
    exit_code: int = 0            # 0 ok, 1 failure while training, 2 bad input
    gallery_entry: str | None = None   # the adapter's name in the gallery, when it was added
    error_field: str | None = None     # the config field the error is about ("variant.r"), if any


def pick_device(requested: str):
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for, but torch sees no CUDA device "
                          "(is this the CPU build of torch?)")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.device: mps was asked for, but this machine has no Apple GPU")
    return torch.device(requested)


def pick_storage(cfg: RunConfig, device) -> "storage.Storage":
    """How this run holds its base and computes (storage.py has the rules); bad combinations
    are one ConfigError, raised before anything is loaded."""
    import torch

    gpu_bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported()
    if cfg.train.precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision: fp16 needs a CUDA device, this run is on {device.type} "
                          "(use fp32 or bf16)")
    if cfg.train.precision == "bf16" and not gpu_bf16:
        raise ConfigError("train.precision: this GPU does not support bf16 (use fp16 or fp32)")
    return storage.resolve(cfg.model.dtype, cfg.model.quantize, cfg.train.precision, device.type,
                           gpu_bf16=gpu_bf16, variant=cfg.variant_name)


def planned_steps(n_train: int, batch_size: int, grad_accum: int, epochs: float, max_steps: int,
                  world_size: int = 1) -> int:
    """Optimizer steps the Trainer will take (its own arithmetic, for AdaLoRA's schedule)."""
    if max_steps > 0:
        return max_steps
    batches = math.ceil(n_train / (batch_size * world_size))
    per_epoch = max(batches // grad_accum + int(batches % grad_accum > 0), 1)
    return max(math.ceil(epochs * per_epoch), 1)


def training_arguments(cfg: RunConfig, run_dir: Path, device, precision: str, has_eval: bool,
                       padding_free: bool = False, world: distributed.World | None = None):
    """The Trainer's arguments for a run config. Logging every step feeds the live charts;
    the Trainer's own printing and reporting are off (events are the report). Padding-free
    batches have no attention_mask to count real tokens by; their few pad tokens (a row's tail)
    are counted with the rest. On several processes (distributed.py) each takes its share of
    train.batch_size."""
    from transformers import TrainingArguments

    world = world or distributed.World()
    batch = distributed.per_process_batch(cfg.train.batch_size, world)
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        gradient_accumulation_steps=cfg.train.grad_accum,
        num_train_epochs=cfg.train.epochs,
        max_steps=cfg.train.max_steps if cfg.train.max_steps > 0 else -1,
        learning_rate=cfg.train.learning_rate,
        # transformers' "constant" ignores warmup_steps; with a warmup it is constant_with_warmup
        lr_scheduler_type=("constant_with_warmup" if cfg.train.lr_scheduler == "constant" and cfg.train.warmup_steps > 0
                           else cfg.train.lr_scheduler),
        warmup_steps=cfg.train.warmup_steps,
        weight_decay=cfg.train.weight_decay,
        max_grad_norm=cfg.train.max_grad_norm if cfg.train.max_grad_norm > 0 else 0.0,
        # under FSDP the launcher's config checkpoints activations (the Trainer refuses both)
        activation_checkpointing=cfg.train.gradient_checkpointing and not _fsdp_checkpoints_activations(world),
        # non-reentrant: with frozen embeddings the reentrant variant sees no input needing grad
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.train.gradient_checkpointing else None,
        logging_strategy="steps", logging_steps=1,
        logging_nan_inf_filter=False,  # a NaN must reach our callback, not be logged as 0
        eval_strategy="steps" if (cfg.train.eval_every > 0 and has_eval) else "no",
        eval_steps=cfg.train.eval_every or None,
        save_strategy="steps" if cfg.train.save_every > 0 else "no",
        save_steps=cfg.train.save_every or 500,
        seed=cfg.train.seed,
        use_cpu=device.type == "cpu",
        bf16=precision == "bf16", fp16=precision == "fp16",
        report_to=[], disable_tqdm=True, remove_unused_columns=False,
        include_num_input_tokens_seen="all" if padding_free else "non_padding",
        dataloader_num_workers=0,
        label_names=["labels"],
        # every trainable parameter of every variant takes part in each forward (DDP then skips
        # its search for unused ones, a walk of the autograd graph per step)
        ddp_find_unused_parameters=False,
        # several processes: a causal LM's loss is summed over label tokens and divided by the
        # count of all processes (the Trainer then multiplies by their number, as DDP averages);
        # a classifier's loss is a mean that ignores that count, so it must not be multiplied
        average_tokens_across_devices=cfg.model.task == "causal-lm",
    )


def _fsdp_checkpoints_activations(world: distributed.World | None) -> bool:
    return (world is not None and world.mode == "fsdp"
            and os.environ.get("FSDP_ACTIVATION_CHECKPOINTING", "").lower() in distributed.TRUE)


def new_run_dir(output_dir: str, variant: str) -> Path:
    base = Path(output_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        name = f"{stamp}-{variant}" + (f"-{i}" if i else "")
        path = base / name
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise TrainingError(f"train.output_dir: could not create a new run folder in {base}")


CHECKPOINT_DONE = "studio_complete"  # written last in a checkpoint: a crash mid-save leaves none


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted((p for p in (Path(run_dir) / "checkpoints").glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[-1].isdigit()), key=lambda p: int(p.name.split("-")[-1]))


def _complete(checkpoint: Path) -> bool:
    return (checkpoint / "trainer_state.json").is_file() and (checkpoint / CHECKPOINT_DONE).is_file()


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that was written completely (Trainer state and our variant state)."""
    ckpts = [p for p in _checkpoints(run_dir) if _complete(p)]
    return ckpts[-1] if ckpts else None


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders a crash or a full disk interrupted (no marker): never resumed from."""
    return [p for p in _checkpoints(run_dir) if not _complete(p)]


def metrics_from_events(events, upto_step: int) -> dict:
    """The final-metrics record (last loss, last eval) as a run had it at `upto_step`."""
    metrics: dict = {}
    for event in events:
        if not isinstance(event.get("step"), int) or event["step"] > upto_step:
            continue
        if event.get("type") == "step" and event.get("loss") is not None:
            metrics["loss"] = event["loss"]
        elif event.get("type") == "eval":
            metrics.update({k: v for k, v in event.items() if k not in ("type", "step", "time")})
    return metrics


# The Trainer's own state files are pickles; transformers reads them with weights_only=True.
TRAINER_PICKLES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt")


def check_checkpoint_files(checkpoint: Path) -> None:
    """Read a checkpoint's files the way resuming will, before anything is changed, so that a
    damaged or tampered file is one sentence naming it. The pickles are read with
    weights_only=True: a file holding anything but tensors and plain containers is refused
    without running it. The safetensors files are checked by safetensors itself."""
    import torch
    from transformers.trainer_pt_utils import safe_globals as trainer_safe_globals

    from .errors import InputError
    from .safeload import check_safetensors

    for path in sorted(checkpoint.glob("*.safetensors")):
        check_safetensors(path, InputError)
    for name in TRAINER_PICKLES:
        path = checkpoint / name
        if not path.is_file():
            continue
        try:
            with trainer_safe_globals():   # the Trainer's own allowlist (numpy RNG state)
                torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:   # UnpicklingError (a foreign object), RuntimeError/EOFError (damage)
            what = ("holds Python objects other than tensors, so it was not loaded (a tampered or foreign "
                    "file)" if "weights_only" in str(e) or "Unsupported global" in str(e)
                    else f"cannot be read ({type(e).__name__})")
            raise InputError(f"{path}: {what}; delete {checkpoint.name} to resume from the checkpoint "
                             "before it") from None


def finished_status(run_dir: Path) -> str | None:
    """The status of the last run_finished event in a run folder's log, if any."""
    path = run_dir / "events.jsonl"
    status = None
    if path.is_file():
        for event in read_events(path):
            if event.get("type") == "run_finished":
                status = event.get("status")
    return status


def adapted_layers(model) -> list[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    names = []
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            names.append(name.removeprefix(PEFT_PREFIX))
    return names


class Session:
    """One run. `run()` blocks until the run ends and never raises for a failed run: the failure
    is a `run_finished` event with status `failed` and one readable sentence."""

    def __init__(self, config: RunConfig, *, resume_dir: str | Path | None = None,
                 control: RunControl | None = None, callbacks: list | None = None):
        self.config = config
        self.extra_callbacks = list(callbacks or [])   # more TrainerCallbacks (benchmarks, launchers)
        self.resume_dir = Path(resume_dir) if resume_dir else None
        self.control = control or RunControl()
        self.run_dir: Path | None = None
        self.gallery_entry: str | None = None
        self.model = None
        self.tokenizer = None
        self._log: EventLog | None = None
        self._step = 0
        self._metrics: dict = {}
        self._timing: dict = {}   # train_s, telemetry_s (during training), final_telemetry_s
        self.telemetry = None
        self._paused_s = 0.0
        self._estimate = ""   # the memory plan's peak, told beside an out-of-memory failure
        self.world = distributed.world()   # one process, or one of several (accelerate launch)

    # -- the run -----------------------------------------------------------------------------

    def run(self, sink: Sink | None = None) -> RunResult:
        """Run to the end. Bad input (config, data, model) fails before the run folder is made,
        so a mistake leaves nothing behind; later failures are recorded in the folder."""
        self._sink = sink
        self._pending: list[dict] = []
        status, error, exit_code, adapter = "failed", None, 1, None
        error_field = None
        try:
            self.config = resolved_paths(self.config)
            if self.resume_dir is not None and (self.resume_dir / "config.toml").is_file():
                self.config = legacy_options(self.config, self.resume_dir / "config.toml")
            status, adapter = self._train()
            exit_code = 0
            if adapter is not None and self.config.train.gallery and self.world.is_main:
                self._add_to_gallery(status)
        except _StoppedBeforeStart:
            status, exit_code = "stopped", 0
        except StudioError as e:
            if isinstance(e, DiskFullError):
                e = self._as_disk_full(e) or e
            error, exit_code, error_field = str(e), e.exit_code, getattr(e, "field", None)
        except KeyboardInterrupt:
            error, exit_code, status = "interrupted", 130, "stopped"
        except MemoryError:
            error = _out_of_memory("cpu", self._estimate)
        except Exception as e:  # a bug or a library failure: one line for people, the trace in the folder
            full = self._as_disk_full(e)
            oom = _out_of_memory_in(e, self._estimate)
            if not self.world.is_main and distributed.lost_peer(e):
                error, exit_code = distributed.LOST_PEER, 1   # the failed process says why
            elif full is not None:
                error = str(full)
            elif oom is not None:
                error = oom
            else:
                error = one_line(e)
                if self.run_dir is not None:
                    name = "error.log" if self.world.is_main else f"error-process{self.world.rank}.log"
                    try:
                        (self.run_dir / name).write_text(traceback.format_exc(), encoding="utf-8")
                        error += f" (details in {self.run_dir / name})"
                    except OSError:  # the disk that failed the run may fail this too
                        pass
        finally:
            try:
                self._emit("run_finished", status=status, error=error, error_field=error_field,
                           adapter_path=str(adapter) if adapter else None, gallery_entry=self.gallery_entry,
                           **self._timing)
            except Exception:  # a full disk or a broken sink must not hide the run's own error
                pass
            finally:
                if self.telemetry is not None:
                    self.telemetry.release()
                if self._log is not None:
                    _release(self.run_dir)
                    try:
                        self._log.close()
                    except OSError:
                        pass
        return RunResult(self.run_dir, status, adapter, error, exit_code, self.gallery_entry, error_field)

    def _resume_hint(self) -> str:
        return f"free some space and resume with lora-studio train --resume {self.run_dir}"

    def _as_disk_full(self, e: BaseException) -> DiskFullError | None:
        """A full disk while training, as one sentence naming what was being written. A checkpoint
        it interrupted (no marker) is removed, which gives back the space it took; the checkpoints
        before it are untouched."""
        if self.run_dir is None:
            where = getattr(e, "filename", None) or self.config.train.output_dir
            return disk_full_error(e, where, "free some space and start the run again")
        partial = incomplete_checkpoints(self.run_dir) if self._log is not None else []
        where = getattr(e, "path", None) if isinstance(e, DiskFullError) else None
        where = where or (partial[-1] if partial else None) or getattr(e, "filename", None) or self.run_dir
        full = disk_full_error(e, where, self._resume_hint())
        if full is not None:
            for folder in partial:
                shutil.rmtree(folder, ignore_errors=True)
        return full

    def _add_to_gallery(self, status: str) -> None:
        """The saved adapter becomes a gallery entry; a failure here is reported, not fatal (the
        adapter is safe in the run folder, and `lora-studio gallery add RUN` can retry)."""
        from .gallery import Gallery

        try:
            gallery = Gallery()
            run, step = str(self.run_dir.resolve()), self._step
            for entry in gallery.entries():   # a resumed run that was killed after adding itself
                if entry.source_run == run and entry.meta.get("step") == step:
                    self.gallery_entry = entry.name
                    return
            self.gallery_entry = gallery.add_run(self.run_dir, status=status).name
            self._progress(f"added to the gallery as {self.gallery_entry}")
        except (StudioError, OSError) as e:
            self._progress(f"warning: the adapter was not added to the gallery ({e})")

    def _open_run_folder(self) -> None:
        """Make (or reopen, when resuming) the run folder and start its event log with the events
        reported so far. On several processes the main one does it and tells the others where
        the folder is, or that it could not be made (then every process ends with its error)."""
        if not self.world.distributed:
            self._make_run_folder()
            return

        def make():
            if self.world.is_main:
                self._make_run_folder()

        self._main_first(make)
        self.run_dir = Path(distributed.share(str(self.run_dir) if self.world.is_main else None, self.world))

    def _main_first(self, fn):
        """fn() in the main process, then in the others, unless it failed in the main one: then
        every process ends with the main one's error (which it prints)."""
        w = self.world
        if w.is_main:
            try:
                value = fn()
            except StudioError as e:
                distributed.share(("error", str(e), e.exit_code), w)
                raise
            except BaseException as e:   # a bug or a library failure: the others end too
                distributed.share(("error", one_line(e), 1), w)
                raise
            distributed.share(("ok",), w)
            return value
        outcome = distributed.share(None, w)
        if outcome[0] == "error":
            raise _MainProcessFailed(outcome[1], outcome[2])
        return fn()

    def _make_run_folder(self) -> None:
        cfg = self.config
        fresh = None
        try:
            if self.resume_dir is not None:
                run_dir = self.resume_dir
            else:
                run_dir = fresh = new_run_dir(cfg.train.output_dir, cfg.variant_name)
                write_text_atomic(run_dir / "config.toml", cfg.to_toml(),
                                  hint="free some space and start the run again")
            # the lock: one process trains a run folder at a time (a second resume, a GUI and a CLI)
            log = EventLog(run_dir / "events.jsonl", forward=self._sink, exclusive=True)
        except LogBusy:
            raise ConfigError(f"{run_dir}: another lora-studio process is training this run right now "
                              "(wait for it to end, or stop it, before resuming)") from None
        except (OSError, DiskFullError) as e:
            if fresh is not None:
                shutil.rmtree(fresh, ignore_errors=True)   # nothing of this run is in it yet
            if isinstance(e, DiskFullError):
                raise
            full = disk_full_error(e, getattr(e, "filename", None) or cfg.train.output_dir,
                                   "free some space and start the run again")
            if full is not None:
                raise full from None
            raise ConfigError(f"train.output_dir: cannot write the run folder ({e.strerror}: {e.filename})") from None
        self.run_dir, self._log = run_dir, log
        _claim(run_dir)
        for event in self._pending:
            self._log.write(event)
        self._pending = []
        if self.resume_dir is not None:
            self._clean_after_crash()

    def _clean_after_crash(self) -> None:
        """What a killed or failed process left half-written in this run folder, which this
        process now holds alone: checkpoints without their marker, temporary adapter folders
        and files. The complete checkpoints and the adapter are untouched."""
        for folder in incomplete_checkpoints(self.run_dir):
            shutil.rmtree(folder, ignore_errors=True)
            self._progress(f"removed {folder.name}: it was cut short while being saved")
        for where in (self.run_dir, self.run_dir / "checkpoints", *_checkpoints(self.run_dir)):
            sweep_stale(where, everything=True)

    def _emit(self, type: str, **payload) -> None:
        event = make_event(type, self._step, **payload)
        if type == "step" and payload.get("loss") is not None:
            self._metrics["loss"] = payload["loss"]
        elif type == "eval":
            self._metrics.update(payload)
        if not self.world.is_main:   # the main process reports the run
            return
        if self._log is not None:
            self._log(event)
            return
        event = plain(event)
        self._pending.append(event)
        if self._sink is not None:
            self._sink(event)

    def _progress(self, message: str) -> None:
        self._emit("progress", message=message)

    def _train(self):
        import datasets
        import torch
        import transformers
        from transformers import Trainer

        from .data import FALLBACK_CHAT_TEMPLATE, prepare_data
        from .models import load_model, load_tokenizer, resolve_source

        cfg = self.config
        if self.resume_dir is not None:
            if not (self.resume_dir / "config.toml").is_file():
                raise ConfigError(f"{self.resume_dir}: not a run folder (no config.toml)")
            from . import runlock

            pid = runlock.holder(self.resume_dir) if self.world.is_main else None
            if pid is not None:   # besides the lock on the event log, which not every filesystem has
                raise ConfigError(f"{self.resume_dir}: this run is still running in process {pid} "
                                  f"(if it is not, delete {self.resume_dir / runlock.LOCK})")
            if finished_status(self.resume_dir) == "completed":
                raise ConfigError(f"{self.resume_dir}: this run already completed; nothing to resume "
                                  "(start a new run with more steps)")
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
        device = pick_device(cfg.train.device)
        held = pick_storage(cfg, device)
        precision = held.compute
        variant = get_variant(cfg.variant_name)
        opts = cfg.variant_options()
        w = self.world
        if w.distributed:
            distributed.per_process_batch(cfg.train.batch_size, w)   # bad input: before anything is loaded
            distributed.check_variant(cfg.variant_name, w)
            state = distributed.start(w, use_cpu=device.type == "cpu")
            if device.type == "cuda":
                device = state.device   # this process's own GPU (cuda:LOCAL_RANK)
                torch.cuda.set_device(device)
            # the run config decides the precision, whatever the launcher was told
            os.environ["ACCELERATE_MIXED_PRECISION"] = {"bf16": "bf16", "fp16": "fp16"}.get(precision, "no")
            self._progress(f"{w.size} processes ({w.mode}), {distributed.per_process_batch(cfg.train.batch_size, w)} "
                           f"of the {cfg.train.batch_size} examples of a step each")
            if w.sharded:
                self._progress("note: telemetry is off: the adapter weights are sharded across processes")
            # the main process converts a GGUF (or downloads) first; the others then find it cached
            resolved = self._main_first(lambda: resolve_source(cfg.model.source, cfg.model.trust_remote_code,
                                                               progress=self._progress))
        else:
            resolved = resolve_source(cfg.model.source, cfg.model.trust_remote_code, progress=self._progress)
        self._check_cancelled()
        self.tokenizer = load_tokenizer(resolved, cfg.model.trust_remote_code)
        self._progress("reading the dataset")
        # several processes: the main one prepares (and caches) the data, the others then load it
        prepare = lambda: prepare_data(cfg.data, self.tokenizer, cfg.model.task, seed=cfg.train.seed,  # noqa: E731
                                       progress=self._progress if self.world.is_main else None)
        data = self._main_first(prepare) if self.world.distributed else prepare()
        for note in data.notes:   # rows skipped or dropped, no room for an eval split
            self._progress(f"note: {note}")
        self._check_cancelled()
        if data.chat_template_used == "fallback-chatml":
            # saved with the adapter, so generation formats prompts the way training did
            self.tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
            self._progress(f"warning: {cfg.model.source} has no chat template: the conversations are laid out "
                           "as ChatML, and that template is saved with the adapter")
        self._estimate = _plan_estimate(cfg, str(resolved.path), device)
        self._progress(f"loading the base model ({held.describe()}" + (f": {held.why})" if held.why else ")"))
        # The adapter is fp32 whatever the base (master weights; peft upcasts it over a half
        # base), and bf16/fp16 compute is autocast on top. Delta-LoRA keeps the W it moves in
        # fp32 (its build upcasts the adapted layers: a bf16 W would round its updates away).
        base = load_model(resolved, cfg.model.task, label_names=data.label_names, storage=held, device=device,
                          trust_remote_code=cfg.model.trust_remote_code, pad_token_id=self.tokenizer.pad_token_id)
        if not held.quantized:   # a quantized model is placed while it loads (device_map)
            base.to(device)
        self._check_cancelled()
        fast = self._pick_batch_layout(base, data, device)

        total = planned_steps(len(data.train), cfg.train.batch_size, cfg.train.grad_accum, cfg.train.epochs,
                              cfg.train.max_steps)
        saved_state = self._saved_state()
        ctx = BuildContext(task=cfg.model.task, total_steps=total, learning_rate=cfg.train.learning_rate,
                           weight_decay=cfg.train.weight_decay, seed=cfg.train.seed, device=device,
                           train_dataset=data.train, collator=data.collator, batch_size=cfg.train.batch_size,
                           emit=lambda ev: self._emit(ev.pop("type"), **ev),
                           # several processes must build the same model: a stop waits for the first step
                           should_stop=lambda: self.control.stop_requested and not w.distributed,
                           saved_state=saved_state,
                           state=dict(saved_state))
        transformers.set_seed(cfg.train.seed)
        model = build_checked(variant, base, opts, ctx)   # a target or rank the model refutes: ConfigError
        if not held.quantized:
            # peft puts each adapter on its layer's device already; bitsandbytes' 8-bit layers
            # lose their scales to a .to() after their first forward (the batch-layout probe)
            model.to(device)
        self.model = model
        self._check_cancelled()
        self._open_run_folder()
        if w.is_main:
            write_text_atomic(self.run_dir / STATE_JSON, json.dumps(ctx.state, indent=1))

        checkpoint = last_checkpoint(self.run_dir) if self.resume_dir else None
        if self.resume_dir is not None and checkpoint is None:
            self._progress("no checkpoint in this run folder yet: starting from the beginning")
        if checkpoint is not None:
            self._restore_checkpoint(model, variant, opts, checkpoint, ctx)
            self._metrics = metrics_from_events(read_events(self.run_dir / "events.jsonl"), self._step)

        trainable, total_params = model.get_nb_trainable_parameters()
        self._emit("run_started", config=cfg.to_dict(), trainable_params=int(trainable),
                   total_params=int(total_params), adapted_layers=adapted_layers(model), device=str(device),
                   precision=precision, base_dtype=held.dtype, quantize=held.quantize, total_steps=total, train_examples=len(data.train),
                   eval_examples=len(data.eval) if data.eval is not None else 0, data_format=data.format,
                   resumed_from=str(checkpoint) if checkpoint else None, run_dir=str(self.run_dir),
                   processes=w.size, launch=w.mode, **fast)

        args = training_arguments(cfg, self.run_dir, device, precision, has_eval=data.eval is not None,
                                  padding_free=fast.get("padding_free", False), world=w)
        # FSDP and DeepSpeed wrap the model before the optimizer may see its parameters: there
        # the Trainer asks for the variant's optimizer itself (create_optimizer), after wrapping
        late_optimizer = w.mode in ("fsdp", "deepspeed")
        optimizer = None if late_optimizer else variant.make_optimizer(model, opts, ctx)
        event_callback = _event_callback(self, variant, opts)
        self.telemetry = Telemetry(model, variant, opts, emit=lambda ev: self._emit(ev.pop("type"), **ev),
                                   every=cfg.telemetry.every, dense_every=cfg.telemetry.dense_every,
                                   budget=cfg.telemetry.budget / 100)
        # telemetry last: it sees each step after the variant's own callbacks (AdaLoRA's allocation).
        # It measures in the main process only (the others hold the same weights), and not at all
        # when the weights are sharded (FSDP): no process then holds a whole adapter.
        measure = w.is_main and not w.sharded
        callbacks = ([event_callback] + list(variant.callbacks(model, opts, ctx))
                     + ([make_telemetry_callback(self.telemetry)] if measure else []) + self.extra_callbacks)
        trainer_cls = _trainer_making_optimizer(variant, opts, ctx) if late_optimizer else Trainer
        trainer = trainer_cls(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                          data_collator=data.collator, callbacks=callbacks,
                          optimizers=(optimizer, None),
                          compute_metrics=_accuracy if cfg.model.task == "sequence-classification" else None)
        if w.distributed and args.average_tokens_across_devices and trainer.model_accepts_loss_kwargs:
            variant.scale_loss_terms(model, opts, w.size)
        # our sink reports progress; the Trainer's own printer would write dicts to stdout
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)

        if self.control.stop_requested and not w.distributed:
            return "stopped", self._save_adapter(model, variant, opts, resolved)
        if checkpoint is not None and self._step >= total:
            # killed after its last checkpoint, while (or before) saving the adapter: no step is left
            self._progress(f"{checkpoint.name} is the end of training: saving the adapter")
            if measure:
                self.telemetry.finish(self._step)
            return "completed", self._save_adapter(model, variant, opts, resolved)
        if checkpoint is not None:
            # The weights are already in place (_restore_checkpoint, through the variant, which
            # knows its own layout: AdaLoRA's saved adapter is pruned, Delta-LoRA's W moved). The
            # Trainer still restores optimizer, scheduler, RNG and data position from the folder.
            trainer._load_from_checkpoint = lambda *args, **kwargs: None
        started = time.perf_counter()
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except torch.cuda.OutOfMemoryError:
            raise TrainingError(_out_of_memory("cuda", self._estimate)) from None
        except MemoryError:
            raise TrainingError(_out_of_memory("cpu", self._estimate)) from None
        finally:
            # bf16/fp16: accelerate wrapped model.forward in autocast and the Trainer leaves it so;
            # restore the plain forward, so the model computes in its own fp32 after the run
            trainer.accelerator.unwrap_model(model, keep_fp32_wrapper=False)
        self._timing = {"train_s": time.perf_counter() - started - self._paused_s, "paused_s": self._paused_s,
                        "telemetry_s": self.telemetry.spent,
                        "telemetry_postponed": self.telemetry.postponed}
        self._step = trainer.state.global_step
        if event_callback.diverged_at is not None:
            raise TrainingError(f"the loss became NaN or infinite at step {event_callback.diverged_at}: "
                                "lower train.learning_rate (no adapter was saved)")
        spent = self.telemetry.spent
        if measure:
            self.telemetry.finish(self._step)   # the last word on the adapter being saved
        self._timing["final_telemetry_s"] = self.telemetry.spent - spent
        finished = trainer.state.global_step >= trainer.state.max_steps
        status = "completed" if finished or not self.control.stop_requested else "stopped"
        return status, self._save_adapter(model, variant, opts, resolved)

    # -- pieces ------------------------------------------------------------------------------

    def _pick_batch_layout(self, base, data, device) -> dict:
        """Padding-free rows and label-only logits for a causal LM, where the model computes them
        exactly (fastpath.probe); the collator is set before any variant sees a batch."""
        cfg = self.config
        collator = data.collator
        if cfg.model.task != "causal-lm" or not hasattr(collator, "padding_free"):
            return {}
        from .fastpath import probe, use_packed_attention

        wanted_pf = bool(cfg.data.padding_free)
        wanted_ll = bool(cfg.train.label_logits_only)
        previous = use_packed_attention(base) if wanted_pf else None
        segments = previous is not None
        if wanted_pf or wanted_ll:
            wanted_pf, wanted_ll, notes = probe(base, device, padding_free=wanted_pf, label_logits=wanted_ll,
                                                segments=segments)
            for note in notes:
                self._progress(f"note: {note}")
        if previous is not None and not wanted_pf:
            base.set_attn_implementation(previous)
            segments = False
        collator.segments = segments
        collator.padding_free, collator.label_logits_only = wanted_pf, wanted_ll
        hidden = getattr(base.config, "hidden_size", None)
        if isinstance(hidden, int) and hidden > 0:
            collator.attention_tokens = 6 * hidden   # how rows of packed examples are priced (data.pack_rows)
        layout = [("padding-free rows, attention per example" if segments else "padding-free rows") if wanted_pf
                  else "padded to the longest example"]
        if wanted_ll:
            layout.append("output layer on labelled positions only")
        self._progress("batches: " + ", ".join(layout))
        return {"padding_free": wanted_pf, "label_logits_only": wanted_ll}

    def _check_cancelled(self) -> None:
        """Preparation (a GGUF conversion, tokenization, loading) runs before any folder exists;
        a stop asked meanwhile ends the run at the next phase boundary with nothing written.
        Several processes stop together, at a step boundary (EventCallback.on_step_end)."""
        if self.control.stop_requested and self.resume_dir is None and not self.world.distributed:
            raise _StoppedBeforeStart()

    def _saved_state(self) -> dict:
        if self.resume_dir is None:
            return {}
        path = self.resume_dir / STATE_JSON
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        return {}

    def _restore_checkpoint(self, model, variant, opts, checkpoint: Path, ctx) -> None:
        """Put the checkpoint's adapter weights and the variant's extra state into the model
        before the Trainer loads optimizer, scheduler and data position from the same folder."""
        from safetensors.torch import load_file

        check_checkpoint_files(checkpoint)
        variant.load_checkpoint_weights(model, opts, checkpoint)
        tensors_path = checkpoint / STATE_TENSORS
        tensors = load_file(str(tensors_path)) if tensors_path.is_file() else {}
        variant.restore_state(model, opts, tensors, ctx)
        self._step = int(checkpoint.name.split("-")[-1])
        self._progress(f"resuming from {checkpoint.name}")

    def save_checkpoint_state(self, checkpoint: Path, variant, opts) -> None:
        from safetensors.torch import save_file

        tensors = variant.checkpoint_state(self.model, opts)
        if tensors:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                      str(checkpoint / STATE_TENSORS))
        state_json = self.run_dir / STATE_JSON
        if state_json.is_file():
            write_text_atomic(checkpoint / STATE_JSON, state_json.read_text(encoding="utf-8"))

    def _save_adapter(self, model, variant, opts, resolved) -> Path:
        final = self.run_dir / "adapter"
        if not self.world.is_main:   # the main process saves it (the weights are the same in all)
            return final
        variant.scale_loss_terms(model, opts, 1)   # the adapter's config as the person set it
        with atomic_dir(final, hint=self._resume_hint()) as tmp:
            variant.export_adapter(model, opts, tmp)
            meta = {"base_model": resolved.source, "base_path": resolved.path,
                    "base_fingerprint": resolved.fingerprint, "task": self.config.model.task,
                    "variant": self.config.variant_name, "options": self.config.variant,
                    "run": str(self.run_dir), "step": self._step, "metrics": self._final_metrics()}
            id2label = getattr(getattr(model, "config", None), "id2label", None)
            if self.config.model.task == "sequence-classification" and id2label:
                meta["labels"] = [str(id2label[i]) for i in sorted(id2label)]
            (tmp / "studio.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(tmp))
        return final

    def _final_metrics(self) -> dict:
        return dict(self._metrics)


class _MainProcessFailed(StudioError):
    """The main process of a distributed run failed to open the run folder; it reports why."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class _StoppedBeforeStart(StudioError):
    """Stop was pressed while the model was still loading: nothing to save, no folder made."""

    exit_code = 0

    def __init__(self):
        super().__init__("stopped before training started")


def memory_mb(device) -> float | None:
    """Memory in use, in MiB: the CUDA allocator's live bytes on a GPU (a host-side counter, no
    sync), this process's resident set on the CPU (Linux /proc; None elsewhere)."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return torch.cuda.memory_allocated(device) / 2**20
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _finite(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and math.isfinite(value))


def _claim(run_dir: Path) -> None:
    """Name this process in the run folder's run.lock (runlock.py), for a window that opens the
    folder meanwhile; the event log's lock is what keeps a second writer out."""
    try:
        from . import runlock

        runlock.claim(run_dir)
    except (ImportError, AttributeError, OSError):
        pass


def _release(run_dir: Path) -> None:
    try:
        from . import runlock

        runlock.release(run_dir)
    except (ImportError, AttributeError, OSError):
        pass


def _out_of_memory(kind: str, estimate: str = "") -> str:
    where = {"cuda": "GPU memory", "mps": "GPU memory (Apple)"}.get(kind, "memory (RAM)")
    beside = f" ({estimate})" if estimate else ""
    return (f"out of {where}{beside}: lower train.batch_size or data.max_seq_len, or set "
            "train.gradient_checkpointing = true (the checkpoints saved so far are kept)")


def _out_of_memory_in(e: BaseException, estimate: str = "") -> str | None:
    """The out-of-memory sentence for an allocator's error that is not a MemoryError, else None."""
    text = str(e)
    if type(e).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text:
        return _out_of_memory("cuda", estimate)
    if "MPS backend out of memory" in text:
        return _out_of_memory("mps", estimate)
    if "can't allocate memory" in text or "DefaultCPUAllocator" in text:
        return _out_of_memory("cpu", estimate)
    return None


def _plan_estimate(cfg: RunConfig, source: str, device) -> str:
    """'the plan estimated a peak of ~3.1 GiB with 2.0 GiB free': the memory plan of this run,
    told beside an out-of-memory failure ("" when the model's shapes cannot be read)."""
    from . import plan

    try:
        cfg = cfg.copy()
        cfg.model.source = source
        est = plan.estimate(cfg, device=device.type if device.type in ("cpu", "cuda") else "cpu")
    except Exception:   # a remote-code or odd model: the failure is told without it
        return ""
    free = f" with {plan.gib(est.free_bytes)} free" if est.free_bytes is not None else ""
    return f"the memory plan estimated a peak of ~{plan.gib(est.peak_bytes)}{free} when the run started"


def _accuracy(eval_pred) -> dict:
    import numpy as np

    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def _build_event_callback_class():
    from transformers import TrainerCallback

    class EventCallback(TrainerCallback):
        """Trainer logs -> events; stop/pause between optimizer steps; variant state at checkpoints."""

        def __init__(self, session: Session, variant, opts):
            self.session = session
            self.variant = variant
            self.opts = opts
            self._last_time = None
            self._last_tokens = 0
            self.diverged_at = None   # the step whose loss or gradient was NaN/inf

        def on_train_begin(self, args, state, control, **kwargs):
            self._last_time = time.perf_counter()
            self._last_tokens = state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            s = self.session
            s._step = state.global_step
            if s.control.paused and not s.control.stop_requested:
                s._emit("paused")
                waited = time.perf_counter()
                while s.control.paused and not s.control.stop_requested:
                    s.control.wait_while_paused()
                waited = time.perf_counter() - waited
                s._paused_s += waited
                if s.telemetry is not None:   # a pause earns telemetry no time budget
                    s.telemetry.idle(waited)
                if not s.control.stop_requested:
                    s._emit("resumed")
                # a pause is neither slow training nor part of the step: the clock skips it. (This
                # runs between the step and its log; restarting the clock here made the step last
                # only from the resume to the log: 59,841 tokens/s against ~16.)
                if self._last_time is not None:
                    self._last_time += waited
            stop = s.control.stop_requested
            if s.world.distributed:   # every process stops at the same step, or none does
                stop = distributed.anyone(stop, args.device)
                if stop:
                    s.control.stop()   # so that every process reports the run as stopped
            if stop:
                control.should_training_stop = True
                control.should_save = True  # a checkpoint, so that --resume continues from here

        def on_log(self, args, state, control, logs=None, **kwargs):
            s = self.session
            logs = dict(logs or {})
            if "loss" in logs:
                if not all(_finite(logs.get(k)) for k in ("loss", "grad_norm")):
                    self.diverged_at = state.global_step
                    control.should_training_stop = True
                    control.should_save = False  # keep the last good checkpoint the newest
                now = time.perf_counter()
                tokens = state.num_input_tokens_seen
                dt = now - (self._last_time or now)
                tps = (tokens - self._last_tokens) / dt if dt > 0 else None
                self._last_time, self._last_tokens = now, tokens
                s._emit("step", loss=logs.get("loss"), lr=logs.get("learning_rate"),
                        grad_norm=logs.get("grad_norm"), tokens_per_s=tps, epoch=logs.get("epoch"),
                        total_steps=state.max_steps, memory_mb=memory_mb(args.device))
                if s.control.stop_requested and not s.world.distributed:  # asked while this step was reported
                    control.should_training_stop = True
                    control.should_save = True
            elif any(k.startswith("eval_") for k in logs):
                s._emit("eval", **{k: v for k, v in logs.items() if k.startswith("eval_") or k == "epoch"})

        def _restart_clock(self):
            self._last_time = time.perf_counter()

        def on_evaluate(self, args, state, control, **kwargs):
            self._restart_clock()  # evaluation time is not training throughput

        def on_save(self, args, state, control, **kwargs):
            s = self.session
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            # every process has written its part (its RNG state) before the marker says it is whole
            distributed.barrier(s.world)
            if path.is_dir() and s.world.is_main:
                s.save_checkpoint_state(path, self.variant, self.opts)
                for f in path.iterdir():   # on disk before the marker says the checkpoint is whole
                    if f.is_file():
                        fsync_file(f)
                (path / CHECKPOINT_DONE).write_text("", encoding="utf-8")
                s._emit("checkpoint", path=str(path))
            self._restart_clock()

    return EventCallback


def _trainer_making_optimizer(variant, opts, ctx):
    """A Trainer whose optimizer is the variant's, made from the wrapped (sharded) model."""
    from transformers import Trainer

    class VariantOptimizerTrainer(Trainer):
        def create_optimizer(self, model=None):
            if self.optimizer is None:
                self.optimizer = variant.make_optimizer(model if model is not None else self.model, opts, ctx)
            if self.optimizer is None:
                return super().create_optimizer(model) if model is not None else super().create_optimizer()
            return self.optimizer

    return VariantOptimizerTrainer


def _event_callback(session, variant, opts):
    return _build_event_callback_class()(session, variant, opts)
