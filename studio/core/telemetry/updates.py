"""Each adapted layer's update as low-rank factors, read from the live peft layers.

A `LayerUpdate` says: the layer's effective weight is W0 + U·K·Vᵀ (in torch's (out, in) layout),
or, for DoRA, diag(m / ‖W0 + U·K·Vᵀ‖_row)·(W0 + U·K·Vᵀ). Spectra, importance and the
magnitude/direction decomposition are all computed from these factors and never from a dense ΔW.

    LoRA, LoRA+, LoRA-FA, LoRA-drop   U = B, K = s, V = Aᵀ
    DoRA                              the same, plus the magnitude m
    VeRA                              U = diag(λ_b)·B_s, K = λ_d, V = A_sᵀ (shared, frozen, sliced)
    AdaLoRA                           U = P[:, M], K = s/(r+1e-5)·λ_M, V = Q[M, :]ᵀ, M = nonzero λ
Delta-LoRA replaces these with the total change against the original W0 (its variant module).

The dispatch is on peft's layer classes, the one place that knows their attribute names.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Hashable

ADAPTER = "default"
from ..names import PEFT_PREFIX as PREFIX  # noqa: E402


@dataclass
class LayerUpdate:
    name: str                       # module path in the base model ("model.layers.0.self_attn.q_proj")
    U: Any                          # (d_out, p)
    K: Any                          # (p,) diagonal, or (p, q)
    V: Any                          # (d_in, q)
    base_layer: Any                 # the wrapped nn.Linear (or Conv1D) whose weight is W
    fan_in_fan_out: bool = False    # W is stored (in, out), as in GPT-2's Conv1D
    share_key: Hashable = None      # layers with the same key share U, K, V (LoRA-drop's ties)
    v_key: Hashable = None          # set when V never changes: its QR and W0·V are cached
    offset_K: Any = None            # W moved: W_now = W0 + U·offset_K·Vᵀ (Delta-LoRA)
    magnitude: Any = None           # DoRA's m (d_out,)

    @property
    def is_dora(self) -> bool:
        return self.magnitude is not None

    def weight(self):
        """W_now in (out, in) layout: a view of a plain layer's weight (no copy); a 4- or 8-bit
        layer's weight de-quantized, this layer only (the caller drops it before the next)."""
        from ..storage import dense_weight

        w = dense_weight(self.base_layer)
        return w.T if self.fan_in_fan_out else w

    def lowrank(self):
        """U·K·Vᵀ as a dense float64 matrix (tests, references and DoRA's exact pass)."""
        U, V, K = f64(self.U), f64(self.V), f64(self.K)
        K = K.to(U.device)
        return (U * K) @ V.T if K.dim() == 1 else U @ K @ V.T

    def w0(self):
        """The pre-trained weight in (out, in) layout, float64 (dense: references only)."""
        w = f64(self.weight())
        if self.offset_K is not None:
            U, V = f64(self.U), f64(self.V)
            w = w - (U * f64(self.offset_K).to(U.device)) @ V.T
        return w

    def dense_delta(self):
        """The effective update W_eff − W0 as a dense float64 matrix: the reference for tests, and
        DoRA's exact (full-rank) spectrum at a low cadence."""
        import torch

        lowrank = self.lowrank()
        if self.magnitude is None:
            return lowrank
        w0 = self.w0()
        v = w0 + lowrank
        c = f64(self.magnitude).to(v.device) / torch.linalg.norm(v, dim=1)
        return c[:, None] * v - w0


_LAYERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # model -> its adapted layers


def adapter_layers(model) -> list[tuple[str, Any, Any]]:
    """(name, module, reader) of every adapter layer, in model order; found once per model (a
    walk over every module costs more than reading the factors)."""
    from peft.tuners.adalora import AdaLoraLayer
    from peft.tuners.lora import LoraLayer
    from peft.tuners.vera import VeraLayer

    model = getattr(model, "module", model)
    found = _LAYERS.get(model)
    if found is None:
        found = []
        for name, module in model.named_modules():
            if isinstance(module, AdaLoraLayer):   # before LoraLayer: AdaLoraLayer subclasses it
                reader = _adalora
            elif isinstance(module, LoraLayer):
                reader = _lora
            elif isinstance(module, VeraLayer):
                reader = _vera
            else:
                continue
            found.append((name.removeprefix(PREFIX), module, reader))
        _LAYERS[model] = found
    return found


def peft_updates(model, adapter: str = ADAPTER) -> list[LayerUpdate]:
    """The LayerUpdate of every adapted linear layer of a peft model (in model order)."""
    out: list[LayerUpdate] = []
    for name, module, reader in adapter_layers(model):
        update = reader(name, module, adapter)
        if update is not None:
            out.append(update)
    return out


def f64(t):
    """A float64 copy of a tensor where float64 exists: Apple GPUs (mps) have none, so those
    tensors come to the CPU first."""
    import torch

    t = torch.as_tensor(t).detach()
    if t.device.type == "mps":
        t = t.cpu()
    return t.to(torch.float64)


def _linear_weight_ok(module) -> bool:
    weight = getattr(module.get_base_layer(), "weight", None)
    return weight is not None and weight.dim() == 2


def _lora(name, layer, adapter):
    import torch
    from torch import nn

    if adapter not in layer.lora_A or not isinstance(layer.lora_A[adapter], nn.Linear):
        return None   # embeddings and convolutions: not drawn
    if not _linear_weight_ok(layer):
        return None
    A, B = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    s = float(layer.scaling[adapter])
    magnitude = None
    mags = getattr(layer, "lora_magnitude_vector", None)
    if mags is not None and adapter in mags:
        magnitude = mags[adapter].weight.detach()
    return LayerUpdate(
        name=name, U=B.detach(), K=torch.full((A.shape[0],), s, dtype=torch.float64), V=A.detach().T,
        base_layer=layer.get_base_layer(), fan_in_fan_out=bool(getattr(layer, "fan_in_fan_out", False)),
        share_key=(id(layer.lora_A[adapter]), id(layer.lora_B[adapter])),
        v_key=("frozen", id(A)) if not A.requires_grad else None, magnitude=magnitude)


def _vera(name, layer, adapter):
    if adapter not in layer.vera_lambda_d or not _linear_weight_ok(layer):
        return None
    vera_A, vera_B = layer.vera_A[adapter], layer.vera_B[adapter]
    lam_b = layer.vera_lambda_b[adapter].detach()
    lam_d = layer.vera_lambda_d[adapter].detach()
    A_s = vera_A[:, : layer.in_features].detach()
    B_s = vera_B[: layer.out_features, :].detach()
    return LayerUpdate(
        name=name, U=lam_b.to(B_s.dtype).unsqueeze(-1) * B_s.to(lam_b.device), K=lam_d,
        V=A_s.T.to(lam_b.device), base_layer=layer.get_base_layer(),
        fan_in_fan_out=bool(getattr(layer, "fan_in_fan_out", False)),
        v_key=("vera", vera_A.data_ptr(), layer.in_features))


def _adalora(name, layer, adapter):
    if adapter not in layer.lora_E or not _linear_weight_ok(layer):
        return None
    E = layer.lora_E[adapter].detach().flatten()
    keep = (E != 0).nonzero().flatten()
    s = float(layer.scaling[adapter]) / (float(layer.ranknum[adapter]) + 1e-5)
    A, B = layer.lora_A[adapter].detach(), layer.lora_B[adapter].detach()
    return LayerUpdate(
        name=name, U=B[:, keep], K=E[keep] * s, V=A[keep, :].T,
        base_layer=layer.get_base_layer(), fan_in_fan_out=bool(getattr(layer, "fan_in_fan_out", False)))
