"""Live telemetry (studio/core/telemetry): every number against a dense computation.

    formulas       σ from factors vs dense svdvals on random factors (diagonal, matrix, scalar cores,
                   p ≠ q, rank-deficient, cached R); the rank summaries by hand
    real layers    for every variant, on real peft layers with non-trivial adapters: the spectra
                   event vs svdvals(merged − W0) where peft does the merge (Delta-LoRA: vs the moved
                   W plus its adapter against the ORIGINAL W0); ΔM/ΔD and ‖ΔW‖/‖W0‖ vs a direct
                   row-wise computation on the dense weights
    runs           AdaLoRA's `ranks` move during a run and end at target_r per layer on average;
                   LoRA-drop's kept set is the one its importance selects; the cadence
Relative errors are taken against the layer's largest σ (or the value's own size) and must be ≤ 1e-5.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import DATASETS
from studio.core.config import RunConfig
from studio.core.telemetry.monitor import RELATIVE_UPDATE, Telemetry
from studio.core.telemetry.events import plain
from studio.core.telemetry.spectra import (dense_svdvals, gram_root, gram_svdvals, lowrank_svdvals, qr_r,
                                           summarize, summarize_batch)
from studio.core.telemetry.updates import peft_updates
from studio.core.training import Session
from studio.core.variants import BuildContext, get_variant
from tiny_models import tiny_llama_config

TOL = 1e-5


def rel_err(fast, dense) -> float:
    """Largest |fast − dense| over the values both have, against σ_max; dense values beyond the
    fast list must be numerically zero."""
    fast = torch.as_tensor(fast, dtype=torch.float64)
    dense = torch.as_tensor(dense, dtype=torch.float64)
    scale = float(dense.max()) if dense.numel() else 1.0
    scale = scale if scale > 0 else 1.0
    n = min(len(fast), len(dense))
    err = float((fast[:n] - dense[:n]).abs().max()) if n else 0.0
    tail = float(dense[n:].abs().max()) if len(dense) > n else 0.0
    return max(err, tail) / scale


# -- the formulas on random factors ----------------------------------------------------------------


@pytest.mark.parametrize("d_out,d_in,p,q,core", [
    (96, 80, 8, 8, "diag"), (64, 128, 6, 10, "matrix"), (40, 40, 5, 5, "scalar"),
    (12, 200, 16, 16, "diag"),      # p > d_out: the update's rank is at most d_out
])
def test_lowrank_svdvals_match_dense_on_random_factors(d_out, d_in, p, q, core):
    g = torch.Generator().manual_seed(d_out + p)
    U = torch.randn(d_out, p, generator=g)
    V = torch.randn(d_in, q, generator=g)
    K = {"diag": torch.rand(p, generator=g, dtype=torch.float64) + 0.1,
         "matrix": torch.randn(p, q, generator=g, dtype=torch.float64),
         "scalar": torch.tensor(2.5, dtype=torch.float64)}[core]
    Kmat = torch.diag(K) if core == "diag" else (K * torch.eye(p, dtype=torch.float64) if core == "scalar" else K)
    dense = dense_svdvals(U.double() @ Kmat @ V.double().T)
    fast = lowrank_svdvals(U, K, V)
    assert rel_err(fast, dense) <= 1e-12
    assert torch.all(fast[:-1] >= fast[1:])   # descending


def test_lowrank_batched_and_cached_r_agree_with_single():
    g = torch.Generator().manual_seed(3)
    U = torch.randn(4, 50, 6, generator=g)
    V = torch.randn(4, 70, 6, generator=g)
    K = torch.rand(4, 6, generator=g, dtype=torch.float64)
    batched = lowrank_svdvals(U, K, V)
    cached = lowrank_svdvals(U, K, None, R_V=qr_r(V))
    for i in range(4):
        dense = dense_svdvals(U[i].double() @ torch.diag(K[i]) @ V[i].double().T)
        assert rel_err(batched[i], dense) <= 1e-12
        assert rel_err(cached[i], dense) <= 1e-12


def test_rank_deficient_update_has_zero_tail():
    g = torch.Generator().manual_seed(4)
    u = torch.randn(30, 1, generator=g)
    U = torch.cat([u, 2 * u, torch.randn(30, 2, generator=g)], dim=1)   # rank 3 of 4
    V = torch.randn(40, 4, generator=g)
    sv = lowrank_svdvals(U, torch.ones(4, dtype=torch.float64), V)
    assert float(sv[-1]) <= 1e-12 * float(sv[0])
    assert summarize(sv)["k99"] <= 3


@pytest.mark.parametrize("case", ["random", "matrix-core", "rank-deficient", "zero-B", "wide"])
def test_gram_svdvals_match_dense(case):
    """The route the monitor takes: σ² = eig(Lᵀ Kᵀ UᵀU K L), L·Lᵀ = VᵀV. Squaring the condition
    number costs precision only below ~1e-8 of σ_max, far under the 1e-5 asked."""
    g = torch.Generator().manual_seed(11)
    d_out, d_in, p, q = (30, 8, 16, 16) if case == "wide" else (70, 90, 8, 8)
    U = torch.randn(d_out, p, generator=g, dtype=torch.float64)
    V = torch.randn(d_in, q, generator=g, dtype=torch.float64)
    K = torch.rand(p, generator=g, dtype=torch.float64) + 0.05
    if case == "matrix-core":
        q = 5
        V = V[:, :q]
        K = torch.randn(p, q, generator=g, dtype=torch.float64)
    if case == "rank-deficient":
        U[:, 3] = U[:, 0] * 2
        V[:, 5] = V[:, 1]
    if case == "zero-B":
        U.zero_()
    Kmat = K if K.dim() == 2 else torch.diag(K)
    dense = dense_svdvals(U @ Kmat @ V.T)
    sv = gram_svdvals(U.T @ U, K, gram_root(V.T @ V), rank=min(d_out, p, d_in, q))
    assert len(sv) == min(d_out, p, d_in, q)
    if case == "zero-B":
        assert float(sv.abs().max()) == 0.0
    else:
        assert rel_err(sv, dense) <= 1e-7


def test_summarize_batch_equals_summarize():
    sv = torch.tensor([[4.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [3.0, 1e-9, 0.0, 0.0]],
                      dtype=torch.float64)
    for got, row in zip(summarize_batch(sv), sv):
        want = summarize(row)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-15), key


def test_rank_summaries_by_hand():
    s = summarize([4.0, 2.0, 1.0, 0.0])
    assert s["stable_rank"] == pytest.approx(21 / 16)
    p = torch.tensor([4, 2, 1], dtype=torch.float64) / 7
    assert s["effective_rank"] == pytest.approx(math.exp(float(-(p * p.log()).sum())))
    assert (s["k90"], s["k99"]) == (2, 3)        # 16/21 = 0.76, 20/21 = 0.95, 21/21
    assert s["fro_norm"] == pytest.approx(math.sqrt(21))
    flat = summarize([1.0] * 10)
    assert (flat["k90"], flat["k99"], flat["effective_rank"]) == (9, 10, pytest.approx(10))
    assert summarize([0.0, 0.0])["k90"] == 0     # no update yet (B = 0 at init)


# -- real peft layers, every variant ---------------------------------------------------------------


CASES = {
    "lora": dict(r=4, alpha=8),
    "lora-plus": dict(r=4, alpha=8),
    "vera": dict(r=16),
    "lora-fa": dict(r=4, alpha=8),
    "adalora": dict(init_r=6, target_r=2, alpha=8, tinit=1, tfinal=1),
    "dora": dict(r=4, alpha=8),
    "delta-lora": dict(r=4, alpha=8, start_step=0, update_ratio=2.0),
}


def _base(layers: int = 2):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(layers=layers)).eval()


def _randomize(model, seed: int) -> None:
    """Give every trainable tensor a non-trivial value (B starts at zero); AdaLoRA gets some
    pruned triplets (λ = 0), DoRA a magnitude off ‖W0‖."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if "lora_magnitude_vector" in name:
                p.mul_(1 + 0.2 * torch.rand(p.shape, generator=g))
            elif "lora_E" in name:
                p.copy_(torch.randn(p.shape, generator=g))
                p[::3] = 0.0
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def _reference_deltas(name, variant, opts, model, w0s) -> dict[str, torch.Tensor]:
    """W_eff − W0 per layer, dense, float64, computed with peft's own merge (not our factors)."""
    if name == "delta-lora":
        # W moved; the model's effective weight is W_now + s·BA (peft's delta of the current adapter)
        out = {}
        for layer_name, layer in variant.tracker(model, opts).layers.items():
            w_eff = (layer.get_base_layer().weight + layer.get_delta_weight("default")).detach().double()
            out[layer_name] = w_eff - w0s[layer_name]
        return out
    merged = copy.deepcopy(model).merge_and_unload()
    weights = dict(merged.named_parameters())
    return {n: weights[f"{n}.weight"].double() - w0 for n, w0 in w0s.items() if f"{n}.weight" in weights}


def _build(name):
    variant = get_variant(name)
    opts = variant.options_cls(**CASES[name])
    opts.check()
    base = _base()
    w0s = {n.removesuffix(".weight"): p.detach().double().clone() for n, p in base.named_parameters()
           if n.endswith("proj.weight")}
    ctx = BuildContext(task="causal-lm", total_steps=10, learning_rate=1e-2, device=torch.device("cpu"))
    model = variant.build(base, opts, ctx)
    variant.make_optimizer(model, opts, ctx)   # LoRA-FA freezes A here, as in a run
    _randomize(model, seed=7)
    if name == "delta-lora":   # two real Delta-LoRA steps: the anchor, then W moves twice
        tracker = variant.tracker(model, opts)
        for t in (1, 2):
            tracker.before_step(t)
            _randomize(model, seed=10 + t)
            tracker.after_step(t)
    return variant, opts, model, w0s


def _measure(variant, opts, model) -> dict[str, dict]:
    events: list[dict] = []
    Telemetry(model, variant, opts, emit=events.append, every=1, budget=0).measure(step=1, final=True)
    return {e["type"] if e["type"] != "importance" else e["method"]: e for e in events}


@pytest.mark.parametrize("name", list(CASES))
def test_spectra_importance_decomposition_match_dense_on_real_layers(name):
    variant, opts, model, w0s = _build(name)
    events = _measure(variant, opts, model)
    reference = _reference_deltas(name, variant, opts, model, w0s)
    spectra = events["spectra"]["layers"]
    assert set(spectra) == set(reference) and len(reference) == 14

    worst = {"sv": 0.0, "dM": 0.0, "dD": 0.0, "imp": 0.0}
    for layer, delta in reference.items():
        entry = spectra[layer]
        assert entry["kind"] == "exact"
        dense = dense_svdvals(delta)
        worst["sv"] = max(worst["sv"], rel_err(entry["sv"], dense))
        assert entry["k90"] == summarize(dense[:len(entry["sv"])])["k90"]

        w0 = w0s[layer]
        w_eff = w0 + delta
        m0, mt = w0.norm(dim=1), w_eff.norm(dim=1)
        cos = (w_eff * w0).sum(1) / (m0 * mt)
        dM, dD = float((mt - m0).abs().mean()), float((1 - cos).mean())
        got = events["decomposition"]["layers"][layer]
        worst["dM"] = max(worst["dM"], abs(got["dM"] - dM) / dM)
        worst["dD"] = max(worst["dD"], abs(got["dD"] - dD) / dD)
        imp = float(delta.norm() / w0.norm())
        worst["imp"] = max(worst["imp"], abs(events[RELATIVE_UPDATE]["layers"][layer] - imp) / imp)
    print(f"\n{name}: worst relative errors {worst}")
    assert max(worst.values()) <= TOL, worst


def test_lora_drop_shared_layers_are_computed_once_and_match():
    from tiny_models import random_token_dataset, pad_collator

    variant = get_variant("lora-drop")
    opts = variant.options_cls(r=4, alpha=8, threshold=0.3)
    data = random_token_dataset(32, seed=1)
    ctx = BuildContext(task="causal-lm", total_steps=4, learning_rate=1e-2, device=torch.device("cpu"),
                       train_dataset=data, collator=pad_collator, batch_size=4)
    base = _base(layers=4)   # 4 layers: a type keeps 1-2 and the rest (2-3) share one pair
    w0s = {n.removesuffix(".weight"): p.detach().double().clone() for n, p in base.named_parameters()
           if n.endswith("proj.weight")}
    model = variant.build(base, opts, ctx)
    _randomize(model, seed=3)
    updates = peft_updates(model)
    keys = {u.share_key for u in updates}
    assert len(keys) < len(updates)   # some layers share one pair
    events = _measure(variant, opts, model)
    reference = _reference_deltas("lora-drop", variant, opts, model, w0s)
    for layer, delta in reference.items():
        assert rel_err(events["spectra"]["layers"][layer]["sv"], dense_svdvals(delta)) <= TOL


def test_dora_live_spectrum_is_the_directional_part_and_exact_is_full_rank():
    variant, opts, model, w0s = _build("dora")
    events: list[dict] = []
    clock = [0.0]

    def tick():                    # a fake clock: every reading is 1 ms later
        clock[0] += 1e-3
        return clock[0]

    telemetry = Telemetry(model, variant, opts, emit=events.append, every=1, clock=tick)
    telemetry.begin()
    telemetry.measure(step=1)      # live: no dense pass (the budget has not accrued yet)
    live = next(e for e in events if e["type"] == "spectra")["layers"]
    for u in peft_updates(model):
        entry = live[u.name]
        assert entry["kind"] == "direction"
        assert rel_err(entry["sv"], dense_svdvals(u.lowrank())) <= TOL   # σ(s·BA)
        ratio = u.magnitude.double().abs() / u.w0().norm(dim=1)             # m / ‖w0‖, row by row
        got = entry["magnitude"]
        assert (got["mean"], got["min"], got["max"]) == pytest.approx(
            (float(ratio.mean()), float(ratio.min()), float(ratio.max())), rel=1e-6)
        assert got["max"] > got["min"] + 0.01 and got["max"] > 1.001   # _randomize scaled m by 1..1.2
    events.clear()
    telemetry.finish(step=1)       # step 1 was measured and the exact pass does not fit: nothing new
    assert events == []
    telemetry.finish(step=2)       # a final measurement, still live kind (the budget does not allow it)
    assert events[0]["final"] and all(v["kind"] == "direction" for v in events[0]["layers"].values())
    events.clear()
    clock[0] += 1e6                # a long run later, the exact pass fits the 1% budget
    telemetry.finish(step=3)
    final = next(e for e in events if e["type"] == "spectra")
    assert final["final"] and all(v["kind"] == "exact" for v in final["layers"].values())
    assert max(len(v["sv"]) for v in final["layers"].values()) > opts.r   # full rank, not r


def test_dense_every_sets_the_exact_cadence():
    variant, opts, model, _ = _build("dora")
    events: list[dict] = []
    telemetry = Telemetry(model, variant, opts, emit=events.append, every=1, dense_every=2, budget=0)
    for step in range(1, 6):
        telemetry.on_step(step)
    kinds = [next(iter(e["layers"].values()))["kind"] for e in events if e["type"] == "spectra"]
    assert kinds == ["exact", "direction", "exact", "direction", "exact"]   # steps 1..5


def test_budget_postpones_measurements_to_keep_the_share():
    """Each measurement costs 1 s and each step 1 s (a fake clock): with a 1% budget, scheduled
    measurements are postponed until they fit, and the events say how many were."""
    variant, opts, model, _ = _build("lora")
    clock = [0.0]
    events: list[dict] = []
    telemetry = Telemetry(model, variant, opts, emit=events.append, every=1, budget=0.01, clock=lambda: clock[0])
    compute = telemetry._compute

    def one_second(step, final):
        clock[0] += 1.0
        return compute(step, final)

    telemetry._compute = one_second
    telemetry.begin()
    for step in range(1, 601):
        clock[0] += 1.0
        telemetry.on_step(step)
    spectra = [e for e in events if e["type"] == "spectra"]
    assert 3 <= len(spectra) <= 7
    assert telemetry.spent <= 0.01 * telemetry.training_time() + 1.0   # at most one over, the first
    assert sum(e.get("postponed", 0) for e in spectra) + telemetry._postponed_since == 600 - len(spectra)
    assert telemetry.postponed == 600 - len(spectra)
    unlimited = Telemetry(model, variant, opts, emit=lambda e: None, every=1, budget=0, clock=lambda: 0.0)
    for step in range(1, 4):
        unlimited.on_step(step)
    assert unlimited.postponed == 0 and unlimited._last_step == 3


def test_a_failing_measurement_is_reported_not_raised():
    variant, opts, model, _ = _build("lora")

    class Broken:
        def update_factors(self, model, opts):
            raise RuntimeError("boom")

    events: list[dict] = []
    telemetry = Telemetry(model, Broken(), opts, emit=events.append)
    telemetry.measure(step=3)
    telemetry.measure(step=6)      # the same failure again: not repeated
    assert events == [{"type": "progress", "message": "telemetry skipped at step 3: RuntimeError: boom"}]
    assert telemetry.failures == 2


# -- in a run --------------------------------------------------------------------------------------


def _run(tiny_llama, tmp_path, variant: dict, every: int = 1, max_steps: int = 8):
    raw = {
        "model": {"source": tiny_llama},
        "data": {"path": str(DATASETS / "chat_sample.jsonl"), "eval_fraction": 0.0, "max_seq_len": 64},
        "variant": variant,
        "train": {"output_dir": str(tmp_path), "max_steps": max_steps, "batch_size": 4, "learning_rate": 5e-3,
                  "save_every": 0, "eval_every": 0, "device": "cpu", "precision": "fp32"},
        "telemetry": {"every": every, "budget": 0},   # tiny steps: no budget, exact cadence
    }
    events: list[dict] = []
    result = Session(RunConfig.from_dict(raw, "test")).run(sink=events.append)
    assert result.status == "completed", result.error
    return events


def test_cadence_and_final_measurement_in_a_run(tiny_llama, tmp_path):
    events = _run(tiny_llama, tmp_path, {"name": "lora", "r": 4}, every=3, max_steps=7)
    assert [e["step"] for e in events if e["type"] == "spectra"] == [3, 6, 7]
    assert [e["final"] for e in events if e["type"] == "spectra"] == [False, False, True]
    for kind in ("importance", "decomposition"):
        assert [e["step"] for e in events if e["type"] == kind] == [3, 6, 7]
    finished = events[-1]
    assert finished["type"] == "run_finished"
    assert finished["telemetry_s"] > 0 and finished["train_s"] > finished["telemetry_s"]
    spectra = [e for e in events if e["type"] == "spectra"]
    assert all(isinstance(v, float) for e in spectra for layer in e["layers"].values() for v in layer["sv"])


def test_adalora_ranks_move_during_a_run_and_end_at_target(tiny_llama, tmp_path):
    opts = {"name": "adalora", "init_r": 6, "target_r": 2, "alpha": 8, "tinit": 1, "tfinal": 2}
    events = _run(tiny_llama, tmp_path, opts, every=1, max_steps=10)
    ranks = [e for e in events if e["type"] == "ranks"]
    assert [e["step"] for e in ranks] == list(range(1, 11))
    n_layers = len(ranks[0]["layers"])
    assert n_layers == 14 and all(v == 6 for v in ranks[0]["layers"].values())   # before pruning
    patterns = {tuple(sorted(e["layers"].items())) for e in ranks}
    assert len(patterns) >= 3, "the rank budget never moved"
    budgets = [e["budget"] for e in ranks]
    assert budgets == sorted(budgets, reverse=True)          # the budget only shrinks
    final = ranks[-1]["layers"]
    assert sum(final.values()) == 2 * n_layers               # target_r per layer, on average
    assert ranks[-1]["target_budget"] == 2 * n_layers
    sens = [e for e in events if e["type"] == "importance" and e["method"].startswith("adalora")]
    assert sens and set(sens[0]["layers"]) == set(final)
    assert all(v >= 0 for v in sens[0]["layers"].values())
    # in the final-budget phase λ is masked by the rank pattern every step, so the spectrum of
    # the live triplets has exactly the layer's rank
    last = [e for e in events if e["type"] == "spectra"][-1]["layers"]
    assert {n: len(last[n]["sv"]) for n in final} == final


def test_lora_drop_kept_set_is_what_its_importance_selects(tiny_llama, tmp_path):
    events = _run(tiny_llama, tmp_path, {"name": "lora-drop", "r": 4, "threshold": 0.6, "sample_fraction": 0.1},
                  every=4, max_steps=4)
    imp = next(e for e in events if e["type"] == "importance" and e["method"].startswith("lora-drop"))
    ranks = next(e for e in events if e["type"] == "ranks")
    by_type: dict[str, list[str]] = {}
    for name in imp["layers"]:
        by_type.setdefault(name.rsplit(".", 1)[-1], []).append(name)
    expected = []
    for names in by_type.values():
        assert sum(imp["layers"][n] for n in names) == pytest.approx(1.0)
        total = 0.0
        for n in sorted(names, key=lambda n: imp["layers"][n], reverse=True):
            expected.append(n)
            total += imp["layers"][n]
            if total >= 0.6 - 1e-12:
                break
    assert sorted(imp["kept"]) == sorted(expected) == sorted(ranks["kept"])
    assert {n for n, r in ranks["layers"].items() if r > 0} == set(expected)


def test_lora_fa_frozen_a_is_cached_and_stays_right_over_measurements():
    variant, opts, model, w0s = _build("lora-fa")
    assert all(u.v_key is not None for u in peft_updates(model))   # A frozen by the optimizer
    telemetry = Telemetry(model, variant, opts, emit=lambda e: None, every=1, budget=0)
    telemetry.measure(step=1)
    assert telemetry._g_cache and telemetry._vtv_cache and telemetry._root_cache
    with torch.no_grad():   # B moves (it is what trains); A stays
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.03 * torch.randn_like(p))
    events: list[dict] = []
    telemetry.emit = events.append
    telemetry.measure(step=2)
    spectra = next(e for e in events if e["type"] == "spectra")["layers"]
    decomposition = next(e for e in events if e["type"] == "decomposition")["layers"]
    for layer, delta in _reference_deltas("lora-fa", variant, opts, model, w0s).items():
        assert rel_err(spectra[layer]["sv"], dense_svdvals(delta)) <= TOL
        w0 = w0s[layer]
        dM = float(((w0 + delta).norm(dim=1) - w0.norm(dim=1)).abs().mean())
        assert decomposition[layer]["dM"] == pytest.approx(dM, rel=TOL)
    telemetry.release()
    assert not telemetry._g_cache and not telemetry._vtv_cache


@pytest.mark.parametrize("name", ["lora", "dora"])
def test_fan_in_fan_out_layers(name):
    """GPT-2's Conv1D stores W as (in, out): the factors stay in (out, in) terms, the weight is
    transposed, and everything still matches peft's merge."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)).eval()
    w0s = {n.removesuffix(".weight"): p.detach().double().T.clone() for n, p in base.named_parameters()
           if n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))}
    variant = get_variant(name)
    opts = variant.options_cls(r=4, alpha=8, target_modules="c_attn,c_proj,c_fc")
    ctx = BuildContext(task="causal-lm", total_steps=10, device=torch.device("cpu"))
    model = variant.build(base, opts, ctx)
    _randomize(model, seed=5)
    updates = peft_updates(model)
    assert updates and all(u.fan_in_fan_out for u in updates)
    events = _measure(variant, opts, model)
    merged = dict(copy.deepcopy(model).merge_and_unload().named_parameters())
    for layer, w0 in w0s.items():
        delta = merged[f"{layer}.weight"].detach().double().T - w0
        assert rel_err(events["spectra"]["layers"][layer]["sv"], dense_svdvals(delta)) <= TOL
        w_eff = w0 + delta
        cos = (w_eff * w0).sum(1) / (w_eff.norm(dim=1) * w0.norm(dim=1))
        assert events["decomposition"]["layers"][layer]["dD"] == pytest.approx(float((1 - cos).mean()), rel=TOL)


def test_a_diverged_layer_is_null_and_the_others_are_measured():
    import json

    variant, opts, model, w0s = _build("lora")
    bad = "model.layers.1.mlp.up_proj"
    with torch.no_grad():
        model.get_submodule(f"base_model.model.{bad}").lora_B["default"].weight[0, 0] = float("nan")
    events: list[dict] = []
    Telemetry(model, variant, opts, emit=events.append, every=1, budget=0).measure(step=1)
    assert [e["type"] for e in events] == ["spectra", "importance", "decomposition"]
    spectra = events[0]["layers"]
    assert spectra[bad]["sv"] == [] and spectra[bad]["stable_rank"] is None
    good = [n for n in spectra if n != bad]
    assert all(spectra[n]["sv"] and spectra[n]["k90"] >= 1 for n in good)
    for event in events:   # what reaches the log is strict JSON: NaN becomes null
        json.dumps(plain(event), allow_nan=False)
    assert plain(events[1])["layers"][bad] is None


def test_adalora_layer_with_every_triplet_pruned():
    variant, opts, model, w0s = _build("adalora")
    layer = "model.layers.0.self_attn.k_proj"
    with torch.no_grad():
        model.get_submodule(f"base_model.model.{layer}").lora_E["default"].zero_()
    events = _measure(variant, opts, model)
    entry = events["spectra"]["layers"][layer]
    assert entry["sv"] == [] and entry["k90"] == 0 and entry["stable_rank"] == 0.0
    assert events["decomposition"]["layers"][layer] == {"dM": 0.0, "dD": 0.0}
    assert events[RELATIVE_UPDATE]["layers"][layer] == 0.0
    other = events["spectra"]["layers"]["model.layers.0.self_attn.q_proj"]
    assert len(other["sv"]) == 4   # 6 triplets, every third pruned by _randomize
