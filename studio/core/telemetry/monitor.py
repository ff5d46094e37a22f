"""Live telemetry of a training run: what the adapters are doing, every `telemetry.every` steps.

Runs on the training thread between optimizer steps (a Trainer callback's on_step_end, after the
optimizer has stepped and the gradients are cleared), so it never races the optimizer. Everything
is computed from the low-rank factors of each layer (updates.py), in float64, and sent to the sink
as plain lists:

    spectra        σ of every layer's effective update ΔW (spectra.py) with stable rank,
                   effective rank, k90 and k99. DoRA's ΔW is full rank: the live spectrum is that
                   of its low-rank directional part s·BA (kind "direction"), and the exact dense
                   spectrum (kind "exact") runs at a lower cadence — by default as often as fits
                   in half a percent of training time — and always at the end of the run.
    importance     ‖ΔW‖_F / ‖W0‖_F per layer (method named in the event), plus any variant's own
                   (AdaLoRA's sensitivity; LoRA-drop's data-driven score is sent once, at build).
    decomposition  the DoRA paper's ΔM and ΔD (Eqs. 3–4) per layer against W0, for every variant.
    (variant)      whatever the variant adds (AdaLoRA's live `ranks`).

Row-wise algebra behind the decomposition, with δ_n = (U·K·Vᵀ)_n and G = W0·V (d_out × q, the one
O(d·k·r) product, cached when V and W0 are frozen):
    δ_n·w0_n = (UK)_n · G_n,   ‖δ_n‖² = (UK)_n (VᵀV) (UK)_nᵀ
and 1 − cos is taken as sin²/(1 + cos), with sin² from the part of δ orthogonal to w0, so small
angles keep their precision. None of this exists in a library, so it is written here.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .spectra import dense_svdvals, lowrank_svdvals, qr_r, rounded, summarize
from .updates import LayerUpdate

RELATIVE_UPDATE = "relative update ‖ΔW‖F / ‖W0‖F"


class Telemetry:
    """Measures a peft model every `every` optimizer steps and emits events.

    every        cadence in optimizer steps (0: only the final measurement)
    dense_every  DoRA's exact dense spectrum every N steps; 0 = automatic, as often as fits in
                 `dense_share` of the training time so far, and always in the final measurement
    """

    def __init__(self, model, variant, opts, emit: Callable[[dict], None], *, every: int = 10,
                 dense_every: int = 0, dense_share: float = 0.005, clock: Callable[[], float] = time.perf_counter):
        self.model = model
        self.variant = variant
        self.opts = opts
        self.emit = emit
        self.every = int(every)
        self.dense_every = int(dense_every)
        self.dense_share = float(dense_share)
        self.clock = clock
        self.spent = 0.0                 # seconds of telemetry so far (computing and emitting)
        self.dense_spent = 0.0
        self._dense_estimate: float | None = None
        self._last_dense_step: int | None = None
        self._last_step: int | None = None
        self._began: float | None = None
        self._row_norms: dict[str, Any] = {}   # ‖w0_n‖² per layer, float64 (W0 never changes)
        self._r_cache: dict = {}               # R of a frozen V's QR, by v_key
        self._g_cache: dict = {}               # W0·V for a frozen V and W0, by (layer, v_key)
        self.failures = 0

    # -- scheduling ---------------------------------------------------------------------------

    def begin(self) -> None:
        if self._began is None:
            self._began = self.clock()

    def training_time(self) -> float:
        return 0.0 if self._began is None else max(self.clock() - self._began - self.spent, 0.0)

    def on_step(self, step: int) -> None:
        if self.every > 0 and step > 0 and step % self.every == 0:
            self.measure(step)

    def finish(self, step: int) -> None:
        """The final measurement (exact DoRA spectrum included), unless this step was measured
        completely already."""
        if self._last_step == step and (self._last_dense_step == step or not self._has_dora()):
            return
        self.measure(step, final=True)

    def _has_dora(self) -> bool:
        return any(u.is_dora for u in self.variant.update_factors(self.model, self.opts))

    def _want_dense(self, step: int, final: bool, n_dora: int) -> bool:
        if n_dora == 0:
            return False
        if final:
            return True
        if self.dense_every > 0:
            return self._last_dense_step is None or step - self._last_dense_step >= self.dense_every
        if self._dense_estimate is None:
            return False   # estimated by timing one layer in the first measurement
        return self.dense_spent + self._dense_estimate <= self.dense_share * self.training_time()

    # -- one measurement ----------------------------------------------------------------------

    def measure(self, step: int, final: bool = False) -> None:
        started = self.clock()
        try:
            events = self._compute(step, final)
        except Exception as e:  # telemetry must never end a run; say once per kind of failure
            self.failures += 1
            events = [{"type": "progress",
                       "message": f"telemetry skipped at step {step}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}]
        cost = self.clock() - started
        for event in events:
            if event["type"] == "spectra":
                event["cost_s"] = cost
            self.emit(event)
        self.spent += self.clock() - started
        self._last_step = step

    def _compute(self, step: int, final: bool) -> list[dict]:
        import torch

        with torch.no_grad():
            updates = self.variant.update_factors(self.model, self.opts)
            dora = [u for u in updates if u.is_dora]
            dense = self._want_dense(step, final, len(dora))
            layers = self._spectra(updates)
            if dora and self._dense_estimate is None and not dense:
                t = self.clock()
                dense_svdvals(dora[0].dense_delta())
                self._dense_estimate = (self.clock() - t) * len(dora)
            if dense:
                t = self.clock()
                for u in dora:
                    layers[u.name] = self._layer_entry(dense_svdvals(u.dense_delta()), "exact")
                cost = self.clock() - t
                self.dense_spent += cost
                self._dense_estimate = cost
                self._last_dense_step = step
            relative, decomposition, magnitudes = self._rows(updates)
            for name, stats in magnitudes.items():
                layers[name]["magnitude"] = stats
            events = [
                {"type": "spectra", "layers": layers, "final": bool(final)},
                {"type": "importance", "method": RELATIVE_UPDATE, "layers": relative},
                {"type": "decomposition", "layers": decomposition},
            ]
            for extra in self.variant.telemetry_events(self.model, self.opts):
                events.append(dict(extra))
        return events

    @staticmethod
    def _layer_entry(sv, kind: str) -> dict:
        sv = sv.detach().cpu()
        if not bool(torch_isfinite(sv)):
            return {"sv": [], "stable_rank": None, "effective_rank": None, "k90": None, "k99": None,
                    "kind": kind, "fro_norm": None}
        entry = summarize(sv)
        entry["sv"] = rounded(sv.tolist())
        entry["kind"] = kind
        return entry

    def _spectra(self, updates: list[LayerUpdate]) -> dict[str, dict]:
        """Batched over layers with the same shapes; tied layers (same share_key) computed once."""
        import torch

        unique: dict = {}
        for u in updates:
            unique.setdefault(u.share_key if u.share_key is not None else ("layer", u.name), u)
        groups: dict = {}
        for key, u in unique.items():
            diag = torch.as_tensor(u.K).dim() <= 1
            groups.setdefault((str(u.U.device), tuple(u.U.shape), tuple(u.V.shape), diag), []).append(key)
        by_key: dict = {}
        for (_, _, _, diag), keys in groups.items():
            items = [unique[k] for k in keys]
            device = _compute_device(items[0].U.device)
            U = torch.stack([u.U.to(device, torch.float64) for u in items])
            K = torch.stack([torch.as_tensor(u.K, dtype=torch.float64).to(device) for u in items])
            R_V = self._r_factors(items, device)
            sv = lowrank_svdvals(U, K, None, R_V=R_V) if U.shape[-1] and R_V.shape[-1] else \
                torch.zeros(len(items), 0, dtype=torch.float64)
            for k, row in zip(keys, sv):
                by_key[k] = row
        layers = {}
        for u in updates:
            key = u.share_key if u.share_key is not None else ("layer", u.name)
            layers[u.name] = self._layer_entry(by_key[key], "direction" if u.is_dora else "exact")
        return layers

    def _r_factors(self, items: list[LayerUpdate], device):
        """R of each V's thin QR, stacked; a frozen V's R is computed once (VeRA's A_s is shared by
        every layer with the same d_in, LoRA-FA's A never moves)."""
        import torch

        missing = [i for i, u in enumerate(items) if u.v_key is None or u.v_key not in self._r_cache]
        computed = {}
        if missing:
            R = qr_r(torch.stack([items[i].V.to(device, torch.float64) for i in missing]))
            for i, r in zip(missing, R):
                computed[i] = r
                if items[i].v_key is not None:
                    self._r_cache[items[i].v_key] = r
        return torch.stack([computed[i] if i in computed else self._r_cache[u.v_key].to(device)
                            for i, u in enumerate(items)])

    def _rows(self, updates: list[LayerUpdate]):
        """Per layer: relative update size, ΔM and ΔD, and DoRA's magnitude ratios."""
        import torch

        relative, decomposition, magnitudes = {}, {}, {}
        for u in updates:
            device = _compute_device(u.U.device)
            W = u.weight().detach()
            V64 = u.V.detach().to(device, torch.float64)
            U64 = u.U.detach().to(device, torch.float64)
            K = torch.as_tensor(u.K, dtype=torch.float64).to(device)
            UK = U64 * K if K.dim() <= 1 else U64 @ K
            VtV = V64.T @ V64
            g_key = (u.name, u.v_key) if (u.v_key is not None and u.offset_K is None) else None
            G = self._g_cache.get(g_key) if g_key is not None else None
            if G is None:
                # W0·V in W's own precision on W's device (the one big product), the rest in fp64
                G_now = (W @ u.V.detach().to(W.device, W.dtype)).to(device, torch.float64)
                if u.offset_K is not None:   # W moved (Delta-LoRA): W0·V = W_now·V − U·o·(VᵀV)
                    UO = U64 * torch.as_tensor(u.offset_K, dtype=torch.float64).to(device)
                    G = G_now - UO @ VtV
                else:
                    G = G_now
                if g_key is not None:
                    self._g_cache[g_key] = G
            n0 = self._row_norms.get(u.name)
            if n0 is None:
                n0 = torch.linalg.vector_norm(W.to(torch.float64), dim=1).pow(2).to(device)
                if u.offset_K is not None:   # ‖w_now − o_n‖² with o = U·o·Vᵀ
                    UO = U64 * torch.as_tensor(u.offset_K, dtype=torch.float64).to(device)
                    n0 = n0 - 2 * (UO * (G + UO @ VtV)).sum(1) + ((UO @ VtV) * UO).sum(1)
                self._row_norms[u.name] = n0
            dot = (UK * G).sum(1)                     # δ_n · w0_n
            dd = ((UK @ VtV) * UK).sum(1).clamp_min(0)  # ‖δ_n‖²
            m0 = n0.clamp_min(0).sqrt()
            nv2 = (n0 + 2 * dot + dd).clamp_min(0)    # ‖w0_n + δ_n‖²
            nv = nv2.sqrt()
            safe_n0 = torch.where(n0 > 0, n0, torch.ones_like(n0))
            sin2 = ((dd - dot * dot / safe_n0) / torch.where(nv2 > 0, nv2, torch.ones_like(nv2))).clamp(0, 1)
            cos = (n0 + dot) / torch.where(m0 * nv > 0, m0 * nv, torch.ones_like(nv))
            if u.is_dora:
                m = u.magnitude.detach().to(device, torch.float64)
                c = m / torch.where(nv > 0, nv, torch.ones_like(nv))
                m_t = m.abs()
                cos = torch.sign(m) * cos
                diff2 = (c - 1) ** 2 * n0 + 2 * (c - 1) * c * dot + c * c * dd   # ‖c·v_n − w0_n‖²
                ratio = m_t / torch.where(m0 > 0, m0, torch.ones_like(m0))
                magnitudes[u.name] = {"mean": float(ratio.mean()), "min": float(ratio.min()),
                                      "max": float(ratio.max())}
                dm = (m_t - m0).abs()
            else:
                diff2 = dd
                dm = (2 * dot + dd).abs() / torch.where(nv + m0 > 0, nv + m0, torch.ones_like(m0))
            one_minus_cos = torch.where(cos > 0, sin2 / (1 + cos), 1 - cos)
            w0_norm = float(n0.clamp_min(0).sum().sqrt())
            delta_norm = float(diff2.clamp_min(0).sum().sqrt())
            relative[u.name] = delta_norm / w0_norm if w0_norm > 0 else 0.0
            decomposition[u.name] = {"dM": float(dm.mean()), "dD": float(one_minus_cos.mean())}
        return relative, decomposition, magnitudes


def torch_isfinite(t) -> bool:
    import torch

    return bool(torch.isfinite(t).all())


def _compute_device(device):
    """Float64 linear algebra runs where the factors live, except on Apple GPUs (no float64)."""
    import torch

    device = torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device


def make_callback(telemetry: Telemetry):
    """The Trainer callback that drives a Telemetry: begin with training, measure after steps."""
    from transformers import TrainerCallback

    class TelemetryCallback(TrainerCallback):
        def __init__(self):
            self.telemetry = telemetry

        def on_train_begin(self, args, state, control, **kwargs):
            self.telemetry.begin()

        def on_step_end(self, args, state, control, **kwargs):
            self.telemetry.on_step(state.global_step)

    return TelemetryCallback()
