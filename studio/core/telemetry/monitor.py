"""Live telemetry of a training run: what the adapters are doing, every `telemetry.every` steps.

Runs on the training thread between optimizer steps (a Trainer callback's on_step_end, after the
optimizer has stepped and the gradients are cleared), so it never races the optimizer. Everything
is computed from the low-rank factors of each layer (updates.py), in float64, and sent to the sink
as plain lists:

    spectra        σ of every layer's effective update ΔW (spectra.py) with stable rank,
                   effective rank, k90 and k99. DoRA's ΔW is full rank: the live spectrum is that
                   of its low-rank directional part s·BA (kind "direction"), and the exact dense
                   spectrum (kind "exact") runs at a lower cadence: every `dense_every` steps, or
                   by default whenever it fits in the telemetry budget.
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

from ..errors import one_line
from .spectra import dense_svdvals, gram_root, gram_svdvals, rounded, summarize, summarize_batch
from .updates import LayerUpdate

RELATIVE_UPDATE = "relative update ‖ΔW‖F / ‖W0‖F"
# W0·V is cached for frozen V (LoRA-FA's A, VeRA's A_s) up to this much memory; VeRA's r = 256
# would otherwise hold d_out × 256 numbers per layer (a second copy of a fair part of the model).
G_CACHE_BYTES = 256 * 2**20


class Telemetry:
    """Measures a peft model every `every` optimizer steps and emits events.

    every        cadence in optimizer steps (0: only the final measurement)
    budget       the largest share of training time telemetry may take (0.01 = 1%; 0: no limit).
                 While the last measurement cost more than that share of the training time since
                 it, scheduled ones are postponed (the next `spectra` event says how many), so an
                 expensive case (VeRA's r = 256 on a CPU) thins out instead of slowing training.
    dense_every  DoRA's exact dense spectrum every N steps and in the final measurement; 0 =
                 automatic, whenever it fits in the budget (the final measurement, which is never
                 postponed, includes it only then too)
    """

    def __init__(self, model, variant, opts, emit: Callable[[dict], None], *, every: int = 10,
                 dense_every: int = 0, budget: float = 0.01, clock: Callable[[], float] = time.perf_counter):
        self.model = model
        self.variant = variant
        self.opts = opts
        self.emit = emit
        self.every = int(every)
        self.dense_every = int(dense_every)
        self.budget = float(budget)
        self.clock = clock
        self.spent = 0.0                 # seconds of telemetry so far (computing and emitting)
        self.dense_spent = 0.0
        self._dense_estimate: float | None = None
        self._last_cost: float | None = None   # cheapest measurement so far, without a dense pass
        self.postponed = 0                      # scheduled measurements skipped for the budget
        self._postponed_since = 0
        self._last_dense_step: int | None = None
        self._last_step: int | None = None
        self._began: float | None = None
        self._trained_at_last = 0.0            # training time at the end of the last measurement
        self._idle = 0.0                       # paused seconds, not training time
        self._vtv_cache: dict = {}             # VᵀV of a frozen V, by v_key
        self._row_norms: dict[str, Any] = {}   # ‖w0_n‖² per layer, float64 (W0 never changes)
        self._root_cache: dict = {}            # L (L·Lᵀ = VᵀV) of a frozen V, by v_key
        self._g_cache: dict = {}               # W0·V for a frozen V and W0, by (layer, v_key)
        self._g_bytes = 0
        self.failures = 0
        self._reported: set[str] = set()
        self._dense_cost = 0.0

    # -- scheduling ---------------------------------------------------------------------------

    def begin(self) -> None:
        """Training starts: start the clock, and read ‖w0_n‖ of every layer now (one pass over
        the weights, counted as telemetry time) so that no later measurement pays for it."""
        if self._began is not None:
            return
        self._began = self.clock()
        try:
            import torch

            with torch.no_grad():
                for u in self.variant.update_factors(self.model, self.opts):
                    if u.name not in self._row_norms:
                        self._w0_products(u, _compute_device(u.U.device), need_g=False)
        except Exception:  # the first measurement will say what is wrong
            pass
        self.spent += self.clock() - self._began

    def training_time(self) -> float:
        """Seconds of training since begin(): without telemetry's own time and pauses."""
        return 0.0 if self._began is None else max(self.clock() - self._began - self.spent - self._idle, 0.0)

    def idle(self, seconds: float) -> None:
        """The run was paused for `seconds`: not training time, so no budget accrues."""
        self._idle += max(float(seconds), 0.0)

    def on_step(self, step: int) -> None:
        if self.every > 0 and step > 0 and step % self.every == 0:
            if self._in_budget():
                self.measure(step)
            else:
                self.postponed += 1
                self._postponed_since += 1

    def _in_budget(self) -> bool:
        """May a scheduled measurement run? When a measurement's cost (the cheapest so far) is at
        most `budget` of the training time since the last one: a rate, so one-off costs do not
        pile up into postponements. The first always runs: there is nothing to estimate from."""
        if self.budget <= 0 or self._last_cost is None:
            return True
        return self._last_cost <= self.budget * (self.training_time() - self._trained_at_last)


    def _fits(self, cost: float) -> bool:
        """Would `cost` more seconds keep all telemetry so far within the budget? (For the dense
        DoRA pass, paid from what the regular measurements leave over.)"""
        return self.budget <= 0 or self.spent + cost <= self.budget * self.training_time()

    def finish(self, step: int) -> None:
        """The final measurement, after training (never postponed; `final` in its spectra event),
        unless the last step was measured already and a dense DoRA pass would add nothing."""
        try:
            if self._last_step == step:
                dora = sum(u.is_dora for u in self.variant.update_factors(self.model, self.opts))
                if self._last_dense_step == step or not self._want_dense(step, True, dora):
                    return
            self.measure(step, final=True)
        finally:
            self.release()

    def release(self) -> None:
        """Drop the caches (W0·V can be hundreds of MB, on the GPU): the run is over."""
        self._g_cache.clear()
        self._root_cache.clear()
        self._vtv_cache.clear()
        self._row_norms.clear()
        self._g_bytes = 0

    def _want_dense(self, step: int, final: bool, n_dora: int) -> bool:
        if n_dora == 0:
            return False
        if self.dense_every > 0:
            return final or self._last_dense_step is None or step - self._last_dense_step >= self.dense_every
        if self.budget <= 0:
            return final   # no limit, no cadence either: the exact pass in the final measurement
        # automatic: when it fits in the budget (the final measurement too: on a CPU, the exact
        # spectra of a whole model can take longer than a short run's training)
        return self._fits((self._last_cost or 0.0) + (self._dense_estimate or 0.0))

    # -- one measurement ----------------------------------------------------------------------

    def measure(self, step: int, final: bool = False) -> None:
        started = self.clock()
        ok = False
        try:
            events = self._compute(step, final)
            ok = True
        except Exception as e:  # telemetry must never end a run; say so, once per kind of failure
            self.failures += 1
            reason = one_line(e)
            events = [] if reason in self._reported else [
                {"type": "progress", "message": f"telemetry skipped at step {step}: {reason}"}]
            self._reported.add(reason)
        cost = self.clock() - started
        try:
            for event in events:
                if event["type"] == "spectra":
                    event["cost_s"] = cost
                    if self._postponed_since:
                        event["postponed"] = self._postponed_since
                self.emit(event)
        except Exception:  # a sink that cannot take an event must not end the run either
            self.failures += 1
            ok = False
        self._postponed_since = 0
        if ok:
            # the cheapest measurement so far is the estimate: the first fills caches, and a busy
            # machine only ever adds time, so the minimum is the measurement's own cost
            regular = cost - self._dense_cost
            self._last_cost = regular if self._last_cost is None else min(self._last_cost, regular)
            self._last_step = step
        self.spent += self.clock() - started
        self._trained_at_last = self.training_time()

    def _compute(self, step: int, final: bool) -> list[dict]:
        import torch

        self._dense_cost = 0.0
        with torch.no_grad():
            updates = self.variant.update_factors(self.model, self.opts)
            dora = [u for u in updates if u.is_dora]
            if dora and self._dense_estimate is None and self.dense_every == 0 and self.budget > 0:
                # time one layer; an SVD of m×n costs ∝ m·n·min(m, n), so scale by that
                t = self.clock()
                dense_svdvals(dora[0].dense_delta())
                work = [u.U.shape[0] * u.V.shape[0] * min(u.U.shape[0], u.V.shape[0]) for u in dora]
                self._dense_cost = self.clock() - t    # not a regular measurement's cost
                self._dense_estimate = self._dense_cost * sum(work) / work[0]
            dense = self._want_dense(step, final, len(dora))
            groups = _group(updates, self._vtv_cache)
            layers = self._spectra(updates, groups)
            if dense:
                t = self.clock()
                for u in dora:
                    layers[u.name] = self._layer_entry(dense_svdvals(u.dense_delta()), "exact")
                cost = self.clock() - t
                self.dense_spent += cost
                self._dense_cost += cost
                self._dense_estimate = cost
                self._last_dense_step = step
            relative, decomposition, magnitudes = self._rows(updates, groups)
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
    def _layer_entry(sv, kind: str, summary: dict | None = None) -> dict:
        import torch

        sv = sv.detach().cpu()
        if summary is None and not bool(torch.isfinite(sv).all()):   # a group's rows are checked there
            return {"sv": [], "stable_rank": None, "effective_rank": None, "k90": None, "k99": None,
                    "kind": kind, "fro_norm": None}
        entry = dict(summary) if summary is not None else summarize(sv)
        entry["sv"] = rounded(sv.tolist())
        entry["kind"] = kind
        return entry

    def _spectra(self, updates: list[LayerUpdate], groups: list["_Group"]) -> dict[str, dict]:
        """Batched over layers with the same shapes; tied layers (same share_key) computed once.
        σ from the factors' Gram matrices (spectra.gram_svdvals), VᵀV shared with _rows."""
        import torch

        entries: dict[str, dict] = {}
        for g in groups:
            first: dict = {}
            for i, u in enumerate(g.items):
                first.setdefault(u.share_key if u.share_key is not None else ("layer", u.name), i)
            picked = sorted(set(first.values()))
            index = torch.tensor(picked, device=g.device)
            items = [g.items[i] for i in picked]
            U, K = g.U.index_select(0, index), g.K.index_select(0, index)
            d_out, p = U.shape[-2:]
            d_in, q = g.d_in, g.q
            if p and q:
                L = self._roots(items, g.VtV.index_select(0, index))
                sv = gram_svdvals(U.transpose(-1, -2) @ U, K, L, rank=min(d_out, p, d_in, q))
            else:   # AdaLoRA with every triplet pruned: no update at all
                sv = torch.zeros(len(items), 0, dtype=torch.float64)
            sv = sv.cpu()
            summaries = summarize_batch(sv)
            row_of = {i: j for j, i in enumerate(picked)}
            for i, u in enumerate(g.items):
                j = row_of[first[u.share_key if u.share_key is not None else ("layer", u.name)]]
                kind = "direction" if u.is_dora else "exact"
                entries[u.name] = (self._layer_entry(sv[j], kind, summaries[j]) if g.finite[i]
                                   else self._layer_entry(torch.tensor([float("nan")]), kind))
        return {u.name: entries[u.name] for u in updates}

    def _roots(self, items: list[LayerUpdate], VtV):
        """L with L·Lᵀ = VᵀV for each item, stacked. A frozen V's root is computed once (VeRA's A_s
        is shared by every layer with the same d_in; LoRA-FA's A never moves)."""
        import torch

        missing = [i for i, u in enumerate(items) if u.v_key is None or u.v_key not in self._root_cache]
        computed = {}
        if missing:
            roots = gram_root(VtV if len(missing) == len(items)
                              else VtV.index_select(0, torch.tensor(missing, device=VtV.device)))
            for i, root in zip(missing, roots):
                computed[i] = root
                if items[i].v_key is not None:
                    self._root_cache[items[i].v_key] = root
            if len(missing) == len(items):
                return roots
        return torch.stack([computed[i] if i in computed else self._root_cache[u.v_key].to(VtV.device)
                            for i, u in enumerate(items)])

    def _w0_products(self, u: LayerUpdate, device, need_g: bool = True):
        """(G = W0·V, ‖w0_n‖²) for one layer, float64 on `device`. G is the one O(d·k·q) product
        (in W's own precision, on W's device); it is cached while V and W0 are frozen, and the row
        norms always are (W0 never changes)."""
        import torch

        g_key = (u.name, u.v_key) if (u.v_key is not None and u.offset_K is None) else None
        G = self._g_cache.get(g_key) if g_key is not None else None
        n0 = self._row_norms.get(u.name)
        if G is not None and n0 is not None:
            return _to64(G, device), n0
        W = u.weight().detach()
        if not need_g and u.offset_K is None:
            if n0 is None:
                n0 = self._row_norms[u.name] = _row_norms2(W, device)
            return None, n0
        # in float32 at least (a bf16 W·V would cost ΔM/ΔD three digits); caching it loses nothing
        V = u.V.detach()
        if W.dtype not in (torch.float32, torch.float64):
            W = W.float()
        if V.dtype != W.dtype or V.device != W.device:
            V = V.to(W.device, W.dtype)
        G_w = W @ V
        G_now = G_w.to(torch.float64) if G_w.device == device else _to64(G_w, device)
        UO = VtV = None
        if u.offset_K is not None:   # W moved (Delta-LoRA): W0·V = W_now·V − U·o·(VᵀV)
            V64 = _to64(u.V.detach(), device)
            VtV = V64.T @ V64
            UO = _to64(u.U.detach(), device) * _to64(torch.as_tensor(u.offset_K), device)
            G = G_now - UO @ VtV
        else:
            G = G_now
        size = G_w.numel() * G_w.element_size()
        if g_key is not None and self._g_bytes + size <= G_CACHE_BYTES:
            self._g_cache[g_key] = G_w
            self._g_bytes += size
        if n0 is None:
            n0 = _row_norms2(W, device)
            if UO is not None:   # ‖w_now_n − o_n‖², o = U·o·Vᵀ
                n0 = n0 - 2 * (UO * G_now).sum(1) + ((UO @ VtV) * UO).sum(1)
            self._row_norms[u.name] = n0
        return G, n0

    def _rows(self, updates: list[LayerUpdate], groups: list["_Group"]):
        """Per layer: relative update size, ΔM and ΔD, and DoRA's magnitude ratios. Batched over
        layers of the same shapes; only W0·V is a per-layer product."""
        import torch

        relative, decomposition, magnitudes = {}, {}, {}
        for g in groups:
            items, device, diag, is_dora = g.items, g.device, g.diag, g.is_dora
            products = [self._w0_products(u, device) for u in items]
            G = torch.stack([p for p, _ in products])                     # (n, d_out, q)
            n0 = torch.stack([r for _, r in products])                    # (n, d_out)
            U, K, VtV = g.U, g.K, g.VtV
            UK = U * K.unsqueeze(-2) if diag else U @ K
            dot = (UK * G).sum(-1)                                        # δ_n · w0_n
            dd = ((UK @ VtV) * UK).sum(-1).clamp_min(0)                   # ‖δ_n‖²
            n0 = n0.clamp_min(0)
            m0 = n0.sqrt()
            nv2 = (n0 + 2 * dot + dd).clamp_min(0)                        # ‖w0_n + δ_n‖²
            nv = nv2.sqrt()
            sin2 = ((dd - dot * dot / _nonzero(n0)) / _nonzero(nv2)).clamp(0, 1)
            cos = (n0 + dot) / _nonzero(m0 * nv)
            if is_dora:
                m = _to64(torch.stack([u.magnitude.detach() for u in items]), device)
                c = m / _nonzero(nv)
                m_t = m.abs()
                cos = torch.sign(m) * cos
                diff2 = (c - 1) ** 2 * n0 + 2 * (c - 1) * c * dot + c * c * dd   # ‖c·v_n − w0_n‖²
                ratio = m_t / _nonzero(m0)
                dm = (m_t - m0).abs()
                for u, r, finite in zip(items, ratio, g.finite):
                    magnitudes[u.name] = ({"mean": float(r.mean()), "min": float(r.min()), "max": float(r.max())}
                                          if finite else {"mean": None, "min": None, "max": None})
            else:
                diff2 = dd
                dm = (2 * dot + dd).abs() / _nonzero(nv + m0)             # |‖w_t‖ − ‖w0‖|
            one_minus_cos = torch.where(cos > 0, sin2 / (1 + cos), 1 - cos)
            w0_norm = n0.sum(-1).sqrt()
            rel = diff2.clamp_min(0).sum(-1).sqrt() / _nonzero(w0_norm)
            stats = torch.stack([rel, dm.mean(-1), one_minus_cos.mean(-1)], dim=1).cpu().tolist()
            for u, (r, m_, d_), finite in zip(items, stats, g.finite):
                if not finite:   # a diverged layer (its factors were zeroed in the group)
                    r = m_ = d_ = None
                relative[u.name] = r
                decomposition[u.name] = {"dM": m_, "dD": d_}
        order = [u.name for u in updates]   # events list layers in model order
        return ({n: relative[n] for n in order}, {n: decomposition[n] for n in order},
                {n: magnitudes[n] for n in order if n in magnitudes})


class _Group:
    """Layers whose factors have the same shapes, stacked once in float64 for every pass.
    VᵀV of a frozen V (a v_key) comes from `vtv_cache` and V itself is then never stacked."""

    def __init__(self, items: list[LayerUpdate], vtv_cache: dict):
        import torch

        u0 = items[0]
        self.items = items
        self.device = _compute_device(u0.U.device)
        self.diag = torch.as_tensor(u0.K).dim() <= 1
        self.is_dora = u0.is_dora
        self.d_in, self.q = u0.V.shape
        # stack in the factors' own dtype, move, then convert once (mps has no float64)
        self.U = _to64(torch.stack([u.U.detach() for u in items]), self.device)
        self.K = _to64(torch.stack([torch.as_tensor(u.K).detach() for u in items]), self.device)
        missing = [u for u in items if u.v_key is None or u.v_key not in vtv_cache]
        fresh = {}
        if missing:
            V = _to64(torch.stack([u.V.detach() for u in missing]), self.device)
            for u, vtv in zip(missing, V.transpose(-1, -2) @ V):
                fresh[id(u)] = vtv
                if u.v_key is not None:
                    vtv_cache[u.v_key] = vtv
        self.VtV = torch.stack([fresh[id(u)] if id(u) in fresh else vtv_cache[u.v_key] for u in items])
        finite = torch.isfinite(self.U).flatten(1).all(1) & torch.isfinite(self.K).flatten(1).all(1) \
            & torch.isfinite(self.VtV).flatten(1).all(1)
        self.finite = finite.tolist()
        if not all(self.finite):   # a diverged layer: zeros here, reported as null, others unharmed
            bad = ~finite
            self.U[bad], self.K[bad], self.VtV[bad] = 0.0, 0.0, 0.0


def _row_norms2(W, device):
    """‖w_n‖² of every row, float64 on `device`. The norm is accumulated in float32 (a float64
    pass over every weight costs twice as much; ‖w0_n‖ to 1e-7 is all ΔM and ΔD need)."""
    import torch

    return _to64(torch.linalg.vector_norm(W, dim=1, dtype=torch.float32), device).pow(2)


def _to64(t, device):
    import torch

    return t.to(device).to(torch.float64)


def _group(updates: list[LayerUpdate], vtv_cache: dict) -> list[_Group]:
    import torch

    by_key: dict = {}
    for u in updates:
        key = (str(u.U.device), tuple(u.U.shape), tuple(u.V.shape), torch.as_tensor(u.K).dim() <= 1, u.is_dora)
        by_key.setdefault(key, []).append(u)
    return [_Group(items, vtv_cache) for items in by_key.values()]


def _nonzero(t):
    """t with zeros replaced by ones: for divisions whose numerator is zero there too."""
    import torch

    return torch.where(t != 0, t, torch.ones_like(t))


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
