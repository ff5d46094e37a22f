"""LoRA-drop (Zhou et al. 2024): measure which LoRA modules matter, keep those, and let all the
others of a type share one trainable pair.

Stage 1 (inside `build`): train ordinary LoRA briefly on a random fraction α of the training set,
then, in eval mode, score every module by g_i = Σ over the sample's non-padding tokens of
‖s·B_iA_i x_i‖². Normalise per module type (q_proj, k_proj, ...; or globally), sort descending and
keep the smallest prefix whose cumulative importance reaches T.
Stage 2: remove the stage-1 LoRA (unload, not merge: W stays the base weight), put fresh LoRA on
every target module, and tie the unselected modules of each (type, shape) to ONE trainable pair,
so the model starts exactly at the base and the optimizer sees one copy of each shared pair.

Resume: the selection goes into ctx.state["lora_drop"]; when ctx.saved_state has it, stage 1 is
skipped and the ties are rebuilt from it. Export: a stock PEFT adapter (peft clones aliased
tensors before safetensors, so every module gets its own equal copy) plus `lora_drop.json` with
the selection; `retie(peft_model, selection)` re-ties a loaded model for further training.

Unconfirmed readings of the paper, exposed as options: α = 0.1, per-type normalisation, and
stage-1 weights being discarded (stage 2 starts fresh).
"""

from __future__ import annotations

import json
import math
import random
import weakref
from dataclasses import dataclass
from pathlib import Path

from ..names import PEFT_PREFIX
from ..options import option
from .base import Variant, register
from .lora import LoraOptions, lora_init_kwargs

ADAPTER = "default"
SIDECAR = "lora_drop.json"


@dataclass
class LoraDropOptions(LoraOptions):
    sample_fraction: float = option(0.1, "α: fraction of the training set used to measure importance "
                                         "(at least one batch)", min=0.0001, max=1.0)
    threshold: float = option(0.9, "T: keep the most important modules until their share of the "
                                   "importance reaches T", min=0.0, max=1.0)
    stage1_steps: int = option(0, "Optimizer steps of the measuring LoRA (0 = one pass over the sample)", min=0)
    normalise: str = option("per-type", "Compare a module with others of its type (q_proj, ...) or with all",
                            choices=("per-type", "global"))


def module_type(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def lora_modules(peft_model) -> dict:
    """{module path inside the base model: LoraLayer}, in model order."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in getattr(module, "lora_A", {}):
            out[name.removeprefix(PEFT_PREFIX)] = module
    return out


# -- stage 1 ---------------------------------------------------------------------------------------

def sample_indices(ctx, fraction: float) -> list[int]:
    """A seeded random subset of the training rows, at least one batch. For sequence
    classification it is stratified by label (the same fraction of each class)."""
    n = len(ctx.train_dataset)
    rng = random.Random(ctx.seed)
    want = min(n, max(ctx.batch_size, math.ceil(fraction * n)))
    columns = getattr(ctx.train_dataset, "column_names", []) or []
    if ctx.task == "sequence-classification" and "labels" in columns:
        by_class: dict = {}
        for i, label in enumerate(ctx.train_dataset["labels"]):
            by_class.setdefault(label, []).append(i)
        picked = []
        for rows in by_class.values():
            picked += rng.sample(rows, max(1, round(len(rows) * want / n)))
        rng.shuffle(picked)
        return picked[:max(want, len(by_class))]
    return rng.sample(range(n), want)


def _batches(ctx, indices: list[int]):
    for start in range(0, len(indices), ctx.batch_size):
        rows = [ctx.train_dataset[i] for i in indices[start:start + ctx.batch_size]]
        yield {k: v.to(ctx.device) if hasattr(v, "to") else v for k, v in ctx.collator(rows).items()}


def train_measuring_lora(peft_model, opts, ctx, indices: list[int]) -> None:
    """A plain AdamW loop, not a Trainer: this is a measurement pass that needs no checkpoints,
    logging, schedules or callbacks, and it must not touch the run's output folder."""
    import torch

    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=ctx.learning_rate, weight_decay=ctx.weight_decay)
    steps = opts.stage1_steps or math.ceil(len(indices) / ctx.batch_size)
    peft_model.train()
    done = 0
    while done < steps:
        for batch in _batches(ctx, indices):
            if done >= steps or ctx.should_stop():
                return
            loss = peft_model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1


def measure_importance(peft_model, ctx, indices: list[int]) -> dict[str, float]:
    """g_i = Σ over non-padding tokens of ‖s·B_iA_i x_i‖², in eval mode, by a forward hook on
    each lora_B (its output times the layer's scaling is the LoRA branch's contribution)."""
    import torch

    layers = lora_modules(peft_model)
    sums = {name: torch.zeros((), dtype=torch.float64, device=ctx.device) for name in layers}
    mask_box: dict = {}

    def hook_for(name, layer):
        def hook(module, inputs, output):
            contrib = output.float() * layer.scaling[ADAPTER]
            per_token = contrib.pow(2).sum(dim=-1)                       # (batch, seq)
            mask = mask_box.get("mask")
            if mask is not None and mask.shape == per_token.shape:
                per_token = per_token * mask
            sums[name] += per_token.sum().double()                      # stays on device: no sync
        return hook

    handles = [layer.lora_B[ADAPTER].register_forward_hook(hook_for(name, layer)) for name, layer in layers.items()]
    peft_model.eval()
    try:
        with torch.no_grad():
            for batch in _batches(ctx, indices):
                if ctx.should_stop():
                    break
                mask = batch.get("attention_mask")
                mask_box["mask"] = mask.to(torch.float32) if mask is not None else None
                peft_model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: float(value) for name, value in sums.items()}   # one sync at the end


def select(raw: dict[str, float], threshold: float, normalise: str) -> tuple[list[str], dict[str, float]]:
    """Normalise g to I (per type, or over all) and keep, within each group, the smallest
    prefix of the descending order whose cumulative I reaches T. Returns (kept, I)."""
    groups: dict[str, list[str]] = {}
    for name in raw:
        groups.setdefault(module_type(name) if normalise == "per-type" else "all", []).append(name)
    importance: dict[str, float] = {}
    kept: list[str] = []
    for names in groups.values():
        total = sum(raw[n] for n in names)
        for n in names:   # no signal at all (e.g. stopped before any step): treat them as equal
            importance[n] = raw[n] / total if total > 0 else 1.0 / len(names)
        cumulative = 0.0
        for n in sorted(names, key=lambda n: importance[n], reverse=True):
            kept.append(n)
            cumulative += importance[n]
            if cumulative >= threshold - 1e-12:
                break
    order = list(raw)
    return sorted(kept, key=order.index), importance


def share_groups(layers: dict, kept: list[str]) -> dict[str, list[str]]:
    """Unselected modules grouped by (type, shape). The key is the type; a type whose modules
    have more than one shape gets one key per shape, "type@out x in"."""
    by_key: dict[tuple, list[str]] = {}
    for name, layer in layers.items():
        if name in kept:
            continue
        a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
        by_key.setdefault((module_type(name), b.shape[0], a.shape[1]), []).append(name)
    shapes_per_type: dict[str, int] = {}
    for t, _, _ in by_key:
        shapes_per_type[t] = shapes_per_type.get(t, 0) + 1
    return {(t if shapes_per_type[t] == 1 else f"{t}@{out}x{fan_in}"): names
            for (t, out, fan_in), names in by_key.items()}


def retie(peft_model, selection: dict) -> None:
    """Make the modules of each shared group use ONE lora_A/lora_B pair (the first module's), as
    in training. Use after PeftModel.from_pretrained(...) with the sidecar's selection to train on."""
    layers = lora_modules(getattr(peft_model, "module", peft_model))
    for key, names in selection.get("shared", {}).items():
        missing = [n for n in names if n not in layers]
        if missing:
            raise KeyError(f"lora-drop: shared group {key!r} names modules not in the model: {missing[:3]}")
        first = layers[names[0]]
        shared_a, shared_b = first.lora_A[ADAPTER], first.lora_B[ADAPTER]
        for name in names[1:]:
            layers[name].lora_A[ADAPTER] = shared_a
            layers[name].lora_B[ADAPTER] = shared_b


def _unload_keeping_base(peft_model):
    """peft's unload() without merging. unload() would put a trained copy of every
    modules_to_save module (a classification head) into the base; put the untouched original back
    first so that stage 2 starts from the real base."""
    from peft.utils.other import ModulesToSaveWrapper

    wrappers = [(name, m) for name, m in peft_model.base_model.model.named_modules()
                if isinstance(m, ModulesToSaveWrapper)]
    for name, wrapper in wrappers:
        parent_name, _, child = name.rpartition(".")
        parent = peft_model.base_model.model.get_submodule(parent_name) if parent_name else peft_model.base_model.model
        setattr(parent, child, wrapper.original_module)
    return peft_model.unload()


class LoraDrop(Variant):
    name = "lora-drop"
    description = "Measure each LoRA module's output on a sample; keep the important ones, others share one pair."
    paper = "Zhou et al. 2024, LoRA-drop: Efficient LoRA Parameter Pruning based on Output Evaluation (arXiv:2402.07721)"
    options_cls = LoraDropOptions
    title = "LoRA-drop"
    order = 50
    needs_whole_weights = "measures each layer's adapter output and ties layers together before training"

    def __init__(self):
        # selection per built model, for export_adapter (which gets no ctx); on the run's own
        # instance (for_run), never on the registry's
        self._selections: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def build(self, model, opts, ctx):
        import torch
        from peft import get_peft_model

        opts.check()
        config = self.lora_config(opts, ctx, **lora_init_kwargs(opts))
        saved = (ctx.saved_state or {}).get("lora_drop")
        if saved:
            selection = saved
        else:
            selection = self._stage1(model, opts, ctx, config)
            model = selection.pop("_base")
        # Stage-2 init depends only on the seed, so a fresh run and its resume build the same model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            peft_model = get_peft_model(model, self.lora_config(opts, ctx, **lora_init_kwargs(opts)))
        retie(peft_model, selection)
        ctx.state["lora_drop"] = selection
        self._selections[peft_model] = selection
        layers = lora_modules(peft_model)
        ctx.emit({"type": "ranks", "layers": {n: (opts.r if n in selection["kept"] else 0) for n in layers},
                  "kept": list(selection["kept"]), "shared": {k: list(v) for k, v in selection["shared"].items()}})
        if selection.get("importance"):
            ctx.emit({"type": "importance", "method": "lora-drop ‖BAx‖²", "layers": dict(selection["importance"]),
                      "kept": list(selection["kept"]), "threshold": opts.threshold,
                      "sample_rows": selection.get("sample_rows")})
        return peft_model

    def _stage1(self, model, opts, ctx, config) -> dict:
        import torch
        from peft import get_peft_model

        if ctx.train_dataset is None or ctx.collator is None:
            raise ValueError("lora-drop: needs ctx.train_dataset and ctx.collator for its measuring stage")
        indices = sample_indices(ctx, opts.sample_fraction)
        # fork_rng: the measuring stage must not shift the run's random stream.
        with torch.random.fork_rng(devices=[ctx.device] if getattr(ctx.device, "type", "cpu") == "cuda" else []):
            torch.manual_seed(ctx.seed)
            measuring = get_peft_model(model, config)
            train_measuring_lora(measuring, opts, ctx, indices)
            raw = measure_importance(measuring, ctx, indices)
        layers = lora_modules(measuring)
        kept, importance = select(raw, opts.threshold, opts.normalise)
        shared = share_groups(layers, kept)
        base = _unload_keeping_base(measuring)
        for p in base.parameters():   # get_peft_model froze them; stage 2 freezes again anyway
            p.requires_grad_(False)
        return {"kept": kept, "shared": shared, "importance": importance, "sample_rows": len(indices),
                "_base": base}

    def export_adapter(self, model, opts, out_dir) -> None:
        model = getattr(model, "module", model)
        out_dir = Path(out_dir)
        model.save_pretrained(str(out_dir))
        selection = self._selections.get(model) or selection_from_ties(model)
        payload = {"kept": selection["kept"], "shared": selection["shared"],
                   "importance": selection.get("importance", {})}
        (out_dir / SIDECAR).write_text(json.dumps(payload, indent=2), encoding="utf-8")


def selection_from_ties(peft_model) -> dict:
    """Recover kept/shared from which modules share a pair (no importance)."""
    layers = lora_modules(peft_model)
    by_pair: dict[int, list[str]] = {}
    for name, layer in layers.items():
        by_pair.setdefault(id(layer.lora_A[ADAPTER]), []).append(name)
    kept = [names[0] for names in by_pair.values() if len(names) == 1]
    shared = {}
    for names in by_pair.values():
        if len(names) > 1:
            shared[module_type(names[0]) if module_type(names[0]) not in shared else names[0]] = names
    return {"kept": kept, "shared": shared, "importance": {}}


register(LoraDrop())
