"""What every variant is: a name, a one-line description, an options dataclass, and hooks.

Everything the rest of the studio knows about a variant is asked of it here, never decided by
`if name == ...` elsewhere (PEFT's `PEFT_TYPE_TO_CONFIG_MAPPING` pattern). A variant module in
this package defines a subclass and registers one instance with `register(...)` at import; the
package imports every module it holds, so a ninth variant is one new module and nothing else.
The registered instance is a prototype that describes the variant; a run calls `for_run()` and
keeps its own state (Delta-LoRA's tracker, LoRA-drop's selection) on that fresh instance.

What a variant declares (class attributes and plain methods, torch-free):
    name, title, description, paper, options_cls, order, rank_option, peft_type, saved_as
    needs_whole_weights            why it cannot run on sharded weights (FSDP, ZeRO-3), or ""
    moves_base_weights             it changes the frozen W itself (no quantized base)
    adapter_numbers(opts, targets) its trainable and frozen numbers, for the memory plan
    rank_overrides(rank)           a preset's rank as this variant's own options
    recognizes(config)             an adapter_config.json from elsewhere is this variant's file
    combine_refusal                why peft cannot combine its adapters, or "" (plain LoRA form)

Hooks, in the order a run calls them:
    build(model, opts, ctx)        -> the PEFT model (may run a preliminary stage, like LoRA-drop)
    make_optimizer(model, opts, ctx) -> a torch optimizer, or None for the Trainer's AdamW
    callbacks(model, opts, ctx)    -> extra transformers TrainerCallbacks
    checkpoint_state(model, opts)  -> tensors saved beside each Trainer checkpoint (resume)
    load_checkpoint_weights(model, opts, checkpoint) -> the adapter weights of a checkpoint (resume)
    restore_state(model, opts, tensors, ctx) -> put that state back when a run resumes
    export_adapter(model, opts, out_dir) -> write a stock-PEFT-loadable adapter into out_dir
Telemetry (studio/core/telemetry), between optimizer steps:
    update_factors(model, opts)    -> each adapted layer's update as low-rank factors (LayerUpdate)
    telemetry_events(model, opts)  -> extra events of the variant's own (AdaLoRA's ranks)
torch, transformers and peft are imported inside the hooks, never at module import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..names import PEFT_PREFIX
from ..options import option

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
REGISTRY: dict[str, "Variant"] = {}


@dataclass
class CommonOptions:
    """Options every variant has. Variants subclass this and add their own fields."""

    r: int = option(16, "Adapter rank: the width of the low-rank update", min=1, max=4096)
    alpha: float = option(32.0, "Scale of the update: ΔW is multiplied by alpha / r", min=0.0)
    dropout: float = option(0.0, "Dropout on the adapter's input during training", min=0.0, max=0.9)
    target_modules: str = option("all-linear",
                                 "Layers to adapt: all-linear, or module names separated by commas (q_proj,v_proj)")

    def check(self) -> None:
        """Cross-field checks; raise ValueError('field: expected ..., got ...')."""
        if not self.target_modules.strip():
            raise ValueError("target_modules: expected all-linear or module names, got ''")


@dataclass
class BuildContext:
    """What a variant may need to build itself, all plain or library objects (no Qt)."""

    task: str = "causal-lm"                  # "causal-lm" or "sequence-classification"
    total_steps: int = 0                     # optimizer steps the run will take
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    seed: int = 0
    device: Any = None                       # torch.device the model lives on
    train_dataset: Any = None                # tokenized rows (datasets.Dataset)
    collator: Callable | None = None
    batch_size: int = 4
    emit: Callable[[dict], None] = lambda event: None   # report an event ({"type": ...})
    should_stop: Callable[[], bool] = lambda: False
    saved_state: dict = field(default_factory=dict)     # JSON state from a run being resumed
    state: dict = field(default_factory=dict)           # JSON state to keep with the run folder


class Variant:
    name: str = ""
    title: str = ""            # how people write its name (LoRA+, VeRA); the name when empty
    description: str = ""
    paper: str = ""            # the paper it follows: authors, year, title (arXiv id)
    options_cls: type = CommonOptions
    order: int = 1000          # where the window and the CLI list it (smaller first, then by name)
    peft_type: str = "LORA"    # the peft_type its saved adapter_config.json has
    saved_as: str = "lora"     # the variant its saved adapter reads back as (see `recognizes`)
    # what it does on whole weights outside forward and backward, which sharded weights (FSDP,
    # DeepSpeed ZeRO-3) cannot give it ("" if nothing: it runs under any launch)
    needs_whole_weights: str = ""
    # True if it moves the frozen base weights W themselves (a quantized W cannot take small
    # updates, and the plan counts the adapted W in fp32)
    moves_base_weights: bool = False
    # peft's add_weighted_adapter combines plain LoRA adapters: "" if this variant's saved
    # adapter is one, else why not (shown when a person picks it for Combine)
    combine_refusal: str = "peft combines LoRA adapters only (resize it first, which turns it into a LoRA)"
    # the option that sets each adapted layer's rank, which must not exceed the layer's smaller
    # side (None: the rank is not per layer, as VeRA's shared random projections)
    rank_option: str | None = "r"
    # peft "task_type" names for the two tasks
    TASK_TYPES = {"causal-lm": "CAUSAL_LM", "sequence-classification": "SEQ_CLS"}

    def __init__(self) -> None:
        """Per-run state goes on instances made by `for_run`; subclasses that keep some set it
        up here."""

    def for_run(self) -> "Variant":
        """A fresh instance for one run, so that state one run keeps (a tracker, a selection)
        never lives on the registry's prototype or leaks into the next run."""
        return type(self)()

    @property
    def display_name(self) -> str:
        return self.title or self.name

    @property
    def summary(self) -> str:
        """The first paragraph of the variant's module docstring: what its paper does and how it
        is built here (the window shows it under the variant selector)."""
        import sys

        doc = (sys.modules[type(self).__module__].__doc__ or "").strip()
        return " ".join(doc.split("\n\n")[0].split())

    # -- what the plan, presets, the gallery and export ask (plain data, no torch) -------------

    def adapter_numbers(self, opts, targets: list[tuple[int, int]]) -> tuple[int, int, int]:
        """(trainable numbers, frozen adapter numbers, numbers of W kept in an extra fp32 copy)
        of this variant's adapter on layers of (d_out, d_in) `targets`: the memory plan's input.
        The default is LoRA's: A (r x d_in) and B (d_out x r) per layer, all trained."""
        r = int(getattr(opts, "r", 16))
        return sum(r * (d_in + d_out) for d_out, d_in in targets), 0, 0

    def rank_overrides(self, rank: int) -> list[str]:
        """A preset's rank as config overrides of this variant's options (alpha = 2 x rank, the
        usual starting point); [] if the variant's rank means something else."""
        if self.rank_option is None:
            return []
        return [f"variant.{self.rank_option}={rank}", f"variant.alpha={2 * rank}"]

    def recognizes(self, config: dict) -> bool:
        """True if a stock PEFT adapter_config.json (made elsewhere) is exactly this variant's
        saved form. Variants that save as plain LoRA (LoRA+, LoRA-FA, ...) leave it False: a
        file alone cannot tell them from LoRA."""
        return False

    # -- what a run calls ----------------------------------------------------------------------

    def build(self, model, opts, ctx: BuildContext):
        raise NotImplementedError

    def make_optimizer(self, model, opts, ctx: BuildContext):
        return None

    def callbacks(self, model, opts, ctx: BuildContext) -> list:
        return []

    def scale_loss_terms(self, model, opts, factor: int) -> None:
        """On N processes the Trainer multiplies each process's loss by N (the token average over
        all processes, before DDP averages the gradients): a term the variant adds to the loss
        itself must be divided by the same N to keep its weight. factor=1 undoes it."""

    def checkpoint_state(self, model, opts) -> dict:
        return {}

    def restore_state(self, model, opts, tensors: dict, ctx: BuildContext) -> None:
        pass

    def load_checkpoint_weights(self, model, opts, checkpoint) -> None:
        """Put a Trainer checkpoint's adapter weights into a freshly built model (resume)."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = checkpoint / "adapter_model.safetensors"
        if weights.is_file():
            set_peft_model_state_dict(model, load_file(str(weights)))

    def export_adapter(self, model, opts, out_dir) -> None:
        model.save_pretrained(str(out_dir))

    def update_factors(self, model, opts) -> list:
        """Every adapted layer's effective update as U·K·Vᵀ factors (telemetry/updates.py)."""
        from ..telemetry.updates import peft_updates

        return peft_updates(model)

    def telemetry_events(self, model, opts) -> list[dict]:
        return []

    # -- helpers for subclasses --------------------------------------------------------------

    def target_modules(self, opts) -> str | list[str]:
        text = opts.target_modules.strip()
        if text == "all-linear":
            return "all-linear"
        return [t.strip() for t in text.split(",") if t.strip()]

    def task_type(self, ctx: BuildContext) -> str:
        return self.TASK_TYPES[ctx.task]

    def adamw_with_ratios(self, model, ctx: BuildContext, ratios: dict[str, float]):
        """AdamW with the Trainer's betas (0.9, 0.999) and eps (1e-8), weight decay ctx.weight_decay
        on every group, and the trainable parameters whose name contains a key of `ratios`
        learning at that multiple of ctx.learning_rate (one group per ratio, in a fixed order, so
        a checkpoint's optimizer state fits on resume; the Trainer's schedule scales every group
        alike). None when every ratio is 1: then the Trainer makes its own optimizer."""
        import torch

        if all(r == 1.0 for r in ratios.values()):
            return None
        groups: dict[float, list] = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            ratio = next((r for key, r in ratios.items() if key in name), 1.0)
            groups.setdefault(ratio, []).append(param)
        return torch.optim.AdamW([{"params": params, "lr": ctx.learning_rate * ratio}
                                  for ratio, params in groups.items()],
                                 lr=ctx.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=ctx.weight_decay)

    def lora_config(self, opts, ctx: BuildContext, **extra):
        from peft import LoraConfig

        kwargs = dict(r=opts.r, lora_alpha=opts.alpha, lora_dropout=opts.dropout,
                      target_modules=self.target_modules(opts), task_type=self.task_type(ctx))
        kwargs.update(extra)
        return LoraConfig(**kwargs)


def build_checked(variant: Variant, model, opts, ctx: BuildContext):
    """`variant.build`, with the two mistakes only the model can reveal turned into one-line
    ConfigErrors: target modules that match no layer, and a rank above a layer's size."""
    from ..errors import ConfigError

    try:
        peft_model = variant.build(model, opts, ctx)
    except ValueError as e:
        if type(e).__name__ != "NoMatchingPeftModuleError" and "Target module" not in str(e):
            raise
        names = sorted(linear_layer_names(model))
        raise ConfigError(f"variant.target_modules: {opts.target_modules!r} matches no layer of this model "
                          f"(its linear layers: {', '.join(names[:12]) or 'none'}; or all-linear)") from None
    if variant.rank_option:
        check_ranks(peft_model, variant.rank_option, getattr(opts, variant.rank_option))
    return peft_model


def linear_layer_names(model) -> set[str]:
    """Short names of the model's linear layers (q_proj, dense, ...), for target_modules."""
    import torch

    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name}


def check_ranks(peft_model, option: str, rank: int) -> None:
    """A rank above min(in, out) of an adapted layer adds parameters and no expressive power."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from ..errors import ConfigError

    smallest = None
    for name, module in peft_model.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        dims = (getattr(module, "in_features", None), getattr(module, "out_features", None))
        if not all(isinstance(d, int) and d > 0 for d in dims):
            continue
        if smallest is None or min(dims) < min(smallest[1]):
            smallest = (name.removeprefix(PEFT_PREFIX), dims)
    if smallest is not None and rank > min(smallest[1]):
        layer, (fan_in, fan_out) = smallest
        raise ConfigError(f"variant.{option}: expected at most {min(smallest[1])} for this model ({layer} maps "
                          f"{fan_in} to {fan_out} features), got {rank}")


def register(variant: Variant) -> Variant:
    """Add a variant to the registry; fails loudly on a bad or duplicate name."""
    name = variant.name
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"variant name {name!r} must be lowercase words joined by '-'")
    if name in REGISTRY:
        raise ValueError(f"variant {name!r} is registered twice")
    if not variant.description or "\n" in variant.description:
        raise ValueError(f"variant {name!r} needs a one-line description")
    if not issubclass(variant.options_cls, CommonOptions):
        raise ValueError(f"variant {name!r}: options must subclass CommonOptions")
    REGISTRY[name] = variant
    return variant
