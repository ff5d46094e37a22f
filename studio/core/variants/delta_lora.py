"""Delta-LoRA (Zi et al. 2023): LoRA whose frozen weight W also moves, by λ times the change of
the low-rank product at every step after a warm-up of K steps.

After optimizer step t (0-based), if t > K:   W ← W + λ·s·(B_{t+1}A_{t+1} − B_tA_t)
which telescopes to W_T − W_0 = λ·s·(B_TA_T − B_aA_a), the anchor (A_a, B_a) being the adapter
just before the first update step t = K+1. Dropout on the LoRA branch must be 0 (the paper removes
it so that dL/dW = dL/d(BA)).

How the pieces share state. A run works with its own `DeltaLora` instance (`Variant.for_run`), and
the state lives in a `DeltaLoraTracker` kept in a WeakKeyDictionary on that instance, keyed by
the PEFT model object that `build` returned (no id() reuse, freed with the model). `callbacks`,
`checkpoint_state`, `restore_state` and `export_adapter` all fetch (or create) that same tracker,
so the order in which the Session calls them does not matter. The tracker holds the anchor
(A_a, B_a) per LoRA layer; the Trainer callback is a thin shell around it.

Resume. `checkpoint_state` returns the anchor tensors (empty before step K+1). On resume the model
is rebuilt from the ORIGINAL base, so W = W_0; `restore_state` puts the anchor back and adds
λ·s·(B_cA_c − B_aA_a) to W using whatever adapter weights the model holds at that moment. If the
Trainer loads the checkpoint's adapter only later (inside `train(resume_from_checkpoint=...)`),
the callback's `on_train_begin` adds the difference between the adapter it now sees and the one
restore used, so W ends right in either order.

Export. W changed, so the adapter alone no longer reproduces the model, but the total change is
low rank: W_T + s·B_TA_T − W_0 = s·[(1+λ)B_T, −λB_a]·[A_T; A_a]. `export_adapter` writes exactly
that as a standard rank-2r PEFT LoRA adapter for the original base.
Not for 4/8-bit base weights; under ZeRO-3/FSDP the weights would have to be gathered first.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass
from pathlib import Path

from ..names import PEFT_PREFIX
from ..options import option
from .base import Variant, register
from .lora import LoraOptions, lora_init_kwargs

ADAPTER = "default"


@dataclass
class DeltaLoraOptions(LoraOptions):
    update_ratio: float = option(2.0, "λ: W moves by λ times the change of s·BA at each step after K", min=0.0)
    # K = 500 is quoted from the paper by a third-party reimplementation (unconfirmed). A run of
    # total_steps <= K uses K = total_steps // 10 instead, so short runs still get updates.
    start_step: int = option(500, "K: steps of plain LoRA before W starts moving (runs shorter "
                                  "than K use a tenth of their length)", min=0)

    def check(self) -> None:
        super().check()
        if self.dropout != 0:
            raise ValueError("dropout: expected 0 for delta-lora (the paper removes dropout so that "
                             f"dL/dW = dL/d(BA)), got {self.dropout}")


def effective_start_step(opts, ctx) -> int:
    """K for this run: a resumed run keeps the K it started with; else opts.start_step, or
    total_steps // 10 when the run is not longer than that (total_steps 0 means unknown)."""
    saved = (getattr(ctx, "saved_state", None) or {}).get("delta_lora") or {}
    if "start_step" in saved:
        return int(saved["start_step"])
    k = int(opts.start_step)
    total = int(getattr(ctx, "total_steps", 0) or 0)
    if 0 < total <= k:
        k = total // 10
    return k


def lora_layers(model) -> dict:
    """{module path inside the base model: LoraLayer} for every layer holding the adapter."""
    from peft.tuners.lora import LoraLayer

    model = getattr(model, "module", model)
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in getattr(module, "lora_A", {}):
            out[name.removeprefix(PEFT_PREFIX)] = module
    return out


def _product(layer, a, b):
    """s·B·A in the base weight's layout (transposed for fan_in_fan_out layers), float32."""
    from peft.utils.other import transpose

    delta = layer.scaling[ADAPTER] * (b.float() @ a.float())
    return transpose(delta, getattr(layer, "fan_in_fan_out", False))


class DeltaLoraTracker:
    """Per-run state: the anchor (A_a, B_a) per layer and the pre-step snapshot."""

    def __init__(self, model, update_ratio: float, start_step: int):
        self.layers = lora_layers(model)
        self.update_ratio = float(update_ratio)
        self.start_step = int(start_step)
        self.anchor: dict[str, tuple] = {}      # empty until the first update step
        self._before: dict[str, tuple] = {}     # (A, B) just before the current optimizer step
        self._restored_from: dict[str, tuple] | None = None

    @staticmethod
    def _pair(layer):
        return (layer.lora_A[ADAPTER].weight.detach().clone(), layer.lora_B[ADAPTER].weight.detach().clone())

    def before_step(self, t: int) -> None:
        if t <= self.start_step:
            return   # no update follows this step: skip the copy (memory and time)
        self._before = {name: self._pair(layer) for name, layer in self.layers.items()}
        if not self.anchor:
            # Normally t == K+1. A resumed run that lost its anchor would start a new one here.
            self.anchor = {name: (a.clone(), b.clone()) for name, (a, b) in self._before.items()}

    def after_step(self, t: int) -> None:
        import torch

        if t <= self.start_step or not self._before:
            return
        with torch.no_grad():
            for name, layer in self.layers.items():
                a0, b0 = self._before[name]
                a1, b1 = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
                # B1A1 - B0A0 = [B1, -B0][A1; A0]: one fused rank-2r GEMM into W, no d_out x d_in
                # temporaries (this runs every optimizer step on every adapted layer)
                weight = layer.get_base_layer().weight
                left = torch.cat([b1, -b0], dim=1).to(weight.dtype)
                right = torch.cat([a1, a0], dim=0).to(weight.dtype)
                alpha = self.update_ratio * layer.scaling[ADAPTER]
                if getattr(layer, "fan_in_fan_out", False):
                    weight.data.addmm_(right.T, left.T, alpha=alpha)
                else:
                    weight.data.addmm_(left, right, alpha=alpha)
        self._before = {}

    def _add_to_base(self, layer, delta) -> None:
        weight = layer.get_base_layer().weight
        weight.data.add_(delta.to(weight.dtype), alpha=self.update_ratio)

    def restore(self, tensors: dict) -> None:
        """W_0 → W_0 + λ·s·(B_cA_c − B_aA_a) with the adapter now in the model, anchor from tensors."""
        import torch

        self.anchor = {}
        for name, layer in self.layers.items():
            a_key, b_key = f"{name}.anchor_A", f"{name}.anchor_B"
            if a_key in tensors:
                device = layer.lora_A[ADAPTER].weight.device
                self.anchor[name] = (tensors[a_key].to(device), tensors[b_key].to(device))
        if not self.anchor:
            return
        with torch.no_grad():
            for name, layer in self.layers.items():
                a_a, b_a = self.anchor[name]
                a_c, b_c = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
                self._add_to_base(layer, _product(layer, a_c, b_c) - _product(layer, a_a, b_a))
        self._restored_from = {name: self._pair(layer) for name, layer in self.layers.items()}

    def reconcile(self) -> None:
        """Called when training begins: if the adapter changed since restore() (the Trainer loaded
        the checkpoint's adapter after it), move W by the difference."""
        import torch

        if self._restored_from is None:
            return
        with torch.no_grad():
            for name, layer in self.layers.items():
                a_r, b_r = self._restored_from[name]
                a_n, b_n = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
                if torch.equal(a_r, a_n) and torch.equal(b_r, b_n):
                    continue
                self._add_to_base(layer, _product(layer, a_n, b_n) - _product(layer, a_r, b_r))
        self._restored_from = None

    def state_tensors(self) -> dict:
        out = {}
        for name, (a, b) in self.anchor.items():
            out[f"{name}.anchor_A"] = a.detach().cpu().contiguous()
            out[f"{name}.anchor_B"] = b.detach().cpu().contiguous()
        return out


def make_callback(tracker: DeltaLoraTracker):
    from transformers import TrainerCallback

    class DeltaLoraCallback(TrainerCallback):
        """Snapshot (A, B) before each optimizer step past K; move W after it.
        state.global_step is the 0-based index t of the step being taken in both hooks."""

        def __init__(self):
            self.tracker = tracker

        def on_train_begin(self, args, state, control, **kwargs):
            self.tracker.reconcile()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.tracker.before_step(state.global_step)

        def on_optimizer_step(self, args, state, control, **kwargs):
            self.tracker.after_step(state.global_step)

    return DeltaLoraCallback()


class DeltaLora(Variant):
    name = "delta-lora"
    description = "LoRA that also moves the frozen weight by λ times each step's change of BA, after K steps."
    paper = "Zi et al. 2023, Delta-LoRA: Fine-Tuning High-Rank Parameters with the Delta of Low-Rank Matrices (arXiv:2309.02411)"
    options_cls = DeltaLoraOptions
    title = "Delta-LoRA"
    order = 80
    needs_whole_weights = "updates the frozen weight W by the change of AB after every step"
    moves_base_weights = True

    def adapter_numbers(self, opts, targets):
        """LoRA's A and B, their copies from the last step (the anchor), and W in fp32."""
        lora, _, _ = super().adapter_numbers(opts, targets)
        return lora, lora, sum(d_out * d_in for d_out, d_in in targets)

    def __init__(self):
        # one tracker per built model, on the run's own instance (for_run)
        self._trackers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def build(self, model, opts, ctx):
        import torch
        from peft import get_peft_model
        from torch import nn

        opts.check()
        peft_model = get_peft_model(model, self.lora_config(opts, ctx, lora_dropout=0.0, **lora_init_kwargs(opts)))
        for name, layer in lora_layers(peft_model).items():
            if not isinstance(layer.lora_dropout[ADAPTER], nn.Identity):
                raise AssertionError(f"delta-lora: {name} has dropout on its LoRA branch")
            # W moves by λ·Δ(BA) each step, updates ~1e-3 of W's entries: in a bf16/fp16 W (a
            # base held in half, storage.py) most would round away. The adapted layers' W are
            # held in fp32 (bf16 values widen exactly); the rest of the base stays half.
            weight = layer.get_base_layer().weight
            if weight.dtype in (torch.bfloat16, torch.float16):
                weight.data = weight.data.float()
        k = effective_start_step(opts, ctx)
        ctx.state["delta_lora"] = {"start_step": k, "update_ratio": opts.update_ratio}
        self._trackers[peft_model] = DeltaLoraTracker(peft_model, opts.update_ratio, k)
        return peft_model

    def tracker(self, model, opts, ctx=None) -> DeltaLoraTracker:
        """The run's tracker for this model, made on first use (see the module docstring)."""
        model = getattr(model, "module", model)
        tracker = self._trackers.get(model)
        if tracker is None:
            k = effective_start_step(opts, ctx) if ctx is not None else int(opts.start_step)
            tracker = self._trackers[model] = DeltaLoraTracker(model, opts.update_ratio, k)
        return tracker

    def callbacks(self, model, opts, ctx):
        return [make_callback(self.tracker(model, opts, ctx))]

    def checkpoint_state(self, model, opts) -> dict:
        return self.tracker(model, opts).state_tensors()

    def restore_state(self, model, opts, tensors, ctx) -> None:
        self.tracker(model, opts, ctx).restore(tensors)

    def update_factors(self, model, opts) -> list:
        """The total change against the ORIGINAL W0, which is what the exported adapter holds:
        W_now + s·B_TA_T − W0 = U·diag(s(1+λ), −sλ)·Vᵀ with U = [B_T, B_a], V = [A_Tᵀ, A_aᵀ]
        (rank ≤ 2r), and W_now = W0 + U·diag(λs, −λs)·Vᵀ tells telemetry where W0 is."""
        import dataclasses

        import torch

        from ..telemetry.updates import peft_updates

        updates = peft_updates(model)
        tracker = self.tracker(model, opts)
        if not tracker.anchor:
            return updates   # before step K+1 W has not moved: plain LoRA
        lam = tracker.update_ratio
        out = []
        for u in updates:
            a_a, b_a = tracker.anchor[u.name]
            s = float(tracker.layers[u.name].scaling[ADAPTER])
            r, r_a = u.U.shape[1], b_a.shape[1]
            ones = torch.ones(r, dtype=torch.float64)
            ones_a = torch.ones(r_a, dtype=torch.float64)
            out.append(dataclasses.replace(
                u, U=torch.cat([u.U, b_a.to(u.U)], dim=1), V=torch.cat([u.V, a_a.to(u.V).T], dim=1),
                K=torch.cat([s * (1 + lam) * ones, -s * lam * ones_a]),
                offset_K=torch.cat([s * lam * ones, -s * lam * ones_a]), share_key=None, v_key=None))
        return out

    def export_adapter(self, model, opts, out_dir) -> None:
        export_rank_doubled(getattr(model, "module", model), self.tracker(model, opts), out_dir)


def export_rank_doubled(peft_model, tracker: DeltaLoraTracker, out_dir) -> None:
    """Write a stock PEFT LoRA adapter that reproduces the trained model on the original base.

    Before any update (no anchor) the plain adapter is exact. Otherwise each layer gets rank 2r:
    B' = [(1+λ)B_T, −λB_a], A' = [A_T; A_a], with lora_alpha chosen so that the scaling stays s.
    The live model is not modified. modules_to_save (e.g. a classifier head) ride along in the
    state dict that peft's get_peft_model_state_dict returns.
    """
    import math

    import torch
    from peft.utils import SAFETENSORS_WEIGHTS_NAME, get_peft_model_state_dict
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    if not tracker.anchor:
        peft_model.save_pretrained(str(out_dir))
        return
    config = copy.deepcopy(peft_model.peft_config[ADAPTER])
    if config.rank_pattern or config.alpha_pattern:
        raise ValueError("delta-lora export: rank_pattern/alpha_pattern are not supported")
    r = int(config.r)
    scale = config.lora_alpha / (math.sqrt(r) if config.use_rslora else r)
    lam = tracker.update_ratio

    state = get_peft_model_state_dict(peft_model, adapter_name=ADAPTER)
    prefix = PEFT_PREFIX
    for name, layer in tracker.layers.items():
        a_key, b_key = f"{prefix}{name}.lora_A.weight", f"{prefix}{name}.lora_B.weight"
        if a_key not in state or b_key not in state:
            raise KeyError(f"delta-lora export: {a_key} not in peft's state dict")
        a_t, b_t = state[a_key], state[b_key]
        a_a, b_a = (x.to(a_t.device, a_t.dtype) for x in tracker.anchor[name])
        state[a_key] = torch.cat([a_t, a_a], dim=0).contiguous()
        state[b_key] = torch.cat([(1 + lam) * b_t, -lam * b_a], dim=1).contiguous()
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}

    config.r = 2 * r
    config.lora_alpha = scale * (math.sqrt(2 * r) if config.use_rslora else 2 * r)
    config.inference_mode = True
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out_dir))
    save_file(state, str(out_dir / SAFETENSORS_WEIGHTS_NAME), metadata={"format": "pt"})


register(DeltaLora())
