"""Benchmark of the live adapter telemetry (studio/core/telemetry): speed and accuracy.

What it measures (plain-text tables, no timed asserts; numbers are medians of repeats, with the
minimum beside them, because a small shared VM's timings are noisy):

  Part 1  synthetic d = k = 2048: the fast singular values of ΔW = U·diag(K)·Vᵀ from its factors
          (spectra.lowrank_svdvals: thin QRs + SVD of a small core, float64; and
          spectra.gram_svdvals, the Gram route the live monitor uses) against dense
          torch.linalg.svdvals of the formed ΔW in float64 (the reference) and float32, for
          r = 16 (LoRA), r = 64 and r = 256 (VeRA-like), each with and without a cached R of V
          (R_V=). K is a diagonal log-spaced from 1 to 1e-2. Errors are |σ_fast − σ_ref| over the
          top r, relative to σ_max and elementwise (relative to each σ_i).
  Part 2  the bundled SmolLM2-135M (210 adapted linear layers): one Telemetry.measure per
          variant (lora, vera r=256, lora-fa, adalora, dora, delta-lora), first call (fills the
          caches) and steady state, on adapters filled with small random values (B is zero at
          init). For LoRA also fast vs dense over all 210 layers; for DoRA the dense exact pass
          (measure(final=True)). LoRA-drop is skipped: its build trains a preliminary stage, and
          its telemetry path is LoRA's (with tied layers computed once).
  Part 3  the telemetry share of a real training run (Session on resources/configs/default.toml,
          CPU, no checkpoints, no evaluation, telemetry every 10 steps): train_s, telemetry_s and
          final_telemetry_s from the run_finished event, cost_s of each spectra event. LoRA, then
          DoRA for fewer steps if the time allows (--dora-steps).

Run from the repository root (offline; the first run converts the bundled GGUF, ~45 s, and caches
it under $LORA_STUDIO_HOME/cache, by default the studio's own data folder, so later runs skip it):

    .venv/bin/python tests/bench/bench_telemetry.py            # full, ~10-15 min on 2 CPU cores
    .venv/bin/python tests/bench/bench_telemetry.py --quick    # fewer repeats and steps, ~5 min
    .venv/bin/python tests/bench/bench_telemetry.py --steps 50 --dora-steps 0 --parts 1,3
    .venv/bin/python tests/bench/bench_telemetry.py --parts 3 --steps 60 --dora-steps 0 --also vera:60

Not a test: pytest does not collect bench_*.py files.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _key, _value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                     ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_key, _value)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if not os.environ.get("LORA_STUDIO_HOME"):
    # the studio's default home, named explicitly: the converted model is cached there once
    from studio.core.paths import studio_home

    os.environ["LORA_STUDIO_HOME"] = str(studio_home())

import warnings  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()   # "Loading weights" bars

from studio.core.telemetry.monitor import Telemetry  # noqa: E402
from tables import table as _table  # noqa: E402  (tests/bench/tables.py)
from studio.core.telemetry.spectra import (dense_svdvals, gram_root, gram_svdvals, lowrank_svdvals,  # noqa: E402
                                           qr_r)

BUNDLED = "bundled:smollm2-135m-instruct"
VARIANTS = ("lora", "vera", "lora-fa", "adalora", "dora", "delta-lora")


# -- helpers ----------------------------------------------------------------------------------------

def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) < 1e-3 or abs(v) >= 1e6:
            return f"{v:.1e}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.3g}"
    return str(v)



def table(title: str, headers: list[str], rows: list[list], note: str = "") -> None:
    _table(title, headers, rows, note, cell=_cell)

def times(fn, repeats: int, warmup: int = 0) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def med(ts: list[float]) -> float:
    return statistics.median(ts)


def errors(sv, ref, k: int | None = None) -> tuple[float, float]:
    """(max |Δσ| / σ_max, max |Δσ_i| / σ_i) over the top k values (default: as many as the
    shorter of the two has), float64."""
    k = min(sv.numel(), ref.numel()) if k is None else k
    fast = sv.to(torch.float64).flatten()[:k]
    ref = ref.to(torch.float64).flatten()[:k]
    diff = (fast - ref).abs()
    smax = float(ref[0]) if ref.numel() else 0.0
    rel_max = float(diff.max()) / smax if smax > 0 else 0.0
    positive = ref > 0
    rel_each = float((diff[positive] / ref[positive]).max()) if bool(positive.any()) else 0.0
    return rel_max, rel_each


def section(title: str) -> None:
    print("\n" + "=" * 100 + f"\n{title}\n" + "=" * 100)
    sys.stdout.flush()


# -- part 1: synthetic ----------------------------------------------------------------------------

def part1(quick: bool) -> None:
    section("Part 1: synthetic d = k = 2048, fp32 factors; fast (QR + small SVD, or Gram + eigvalsh, fp64) "
            "vs dense svdvals")
    d = 2048
    fast_reps, dense_reps = (10, 3) if quick else (30, 5)
    g = torch.Generator().manual_seed(0)
    rows = []
    for r, label in ((16, "r=16 (LoRA)"), (64, "r=64"), (256, "r=256 (VeRA-like)")):
        U = torch.randn(d, r, generator=g) / d ** 0.5
        V = torch.randn(d, r, generator=g) / d ** 0.5
        K = torch.logspace(0, -2, r, dtype=torch.float32)
        R_V = qr_r(V)   # what the telemetry caches for a frozen V (VeRA's A_s, LoRA-FA's A)

        def form64():
            return (U.double() * K.double()) @ V.double().T

        ref = torch.linalg.svdvals(form64())
        sv_fast = lowrank_svdvals(U, K, V)
        sv_cached = lowrank_svdvals(U, K, None, R_V=R_V)
        sv32 = torch.linalg.svdvals((U * K) @ V.T)
        t_fast = times(lambda: lowrank_svdvals(U, K, V), fast_reps, warmup=2)
        t_cached = times(lambda: lowrank_svdvals(U, K, None, R_V=R_V), fast_reps, warmup=2)
        def gram():   # the route the monitor takes: Grams of the factors, eigvalsh of a q×q core
            U64, V64 = U.double(), V.double()
            return gram_svdvals(U64.T @ U64, K, gram_root(V64.T @ V64))

        L_V = gram_root(V.double().T @ V.double())   # cached for a frozen V
        sv_gram = gram()
        t_gram = times(gram, fast_reps, warmup=2)
        t_gram_cached = times(lambda: gram_svdvals(U.double().T @ U.double(), K, L_V), fast_reps, warmup=2)
        t_d64 = times(lambda: torch.linalg.svdvals(form64()), dense_reps)
        t_d32 = times(lambda: torch.linalg.svdvals((U * K) @ V.T), dense_reps)
        base = med(t_d64)
        for name, ts, sv in (("fast", t_fast, sv_fast), ("fast, cached R_V", t_cached, sv_cached),
                             ("Gram (monitor)", t_gram, sv_gram), ("Gram, cached L_V", t_gram_cached, sv_gram),
                             ("dense fp32", t_d32, sv32), ("dense fp64 (ref)", t_d64, ref)):
            e_max, e_each = errors(sv, ref, r)
            rows.append([label, name, med(ts) * 1e3, min(ts) * 1e3, base / med(ts), e_max, e_each])
    table("Singular values of U·diag(K)·Vᵀ (2048×2048); times in ms (dense includes forming ΔW)",
          ["case", "method", "median ms", "min ms", "dense64/this", "max|Δσ|/σmax", "max|Δσi|/σi"], rows,
          f"repeats: fast {fast_reps} (after 2 warm-up calls), dense {dense_reps}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")


# -- part 2: the bundled model ----------------------------------------------------------------------

def load_base():
    from studio.core.models import load_model, resolve_source

    t = time.perf_counter()
    resolved = resolve_source(BUNDLED, False, progress=lambda m: print(f"  [model] {m}", flush=True))
    took = time.perf_counter() - t
    if took > 5:
        print(f"  [model] resolve_source took {took:.0f} s (conversion)")

    def fresh():
        return load_model(resolved, "causal-lm", dtype=torch.float32)

    return fresh


def fill_adapters(model, seed: int) -> None:
    """Small random values in every trainable tensor (B starts at zero); DoRA's magnitude keeps
    its value times (1 + 0.01·noise)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32).to(p)
            if "lora_magnitude_vector" in name:
                p.mul_(1 + 0.01 * noise)
            else:
                p.copy_(0.01 * noise)


def build(variant_name: str, fresh_base):
    from studio.core.variants import BuildContext, get_variant

    variant = get_variant(variant_name)
    opts = variant.options_cls()
    ctx = BuildContext(task="causal-lm", total_steps=100, seed=0, device=torch.device("cpu"))
    torch.manual_seed(0)
    model = variant.build(fresh_base(), opts, ctx)
    fill_adapters(model, seed=1)
    note = ""
    if variant_name == "delta-lora":
        # move W as a run past step K would: anchor = the adapter now, then the adapter moves and
        # W follows by λ·s·(BA − B_aA_a); telemetry then sees the rank-2r total change
        tracker = variant.tracker(model, opts, ctx)
        t = tracker.start_step + 1
        tracker.before_step(t)
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for _, p in model.named_parameters():
                if p.requires_grad:
                    p.add_(0.005 * torch.randn(p.shape, generator=g).to(p))
        tracker.after_step(t)
        note = f"K={tracker.start_step}, anchored"
    return variant, opts, model, note


def measure_variant(name: str, fresh_base, quick: bool) -> tuple[list, dict]:
    variant, opts, model, note = build(name, fresh_base)
    events: list[dict] = []
    tel = Telemetry(model, variant, opts, emit=events.append, every=10)
    updates = variant.update_factors(model, opts)
    ranks = sorted({int(u.U.shape[1]) for u in updates})
    step = 10
    t = time.perf_counter()
    tel.measure(step)
    first = time.perf_counter() - t
    steady = []
    for _ in range(3 if quick else 6):
        step += 10
        t = time.perf_counter()
        tel.measure(step)
        steady.append(time.perf_counter() - t)
    spectra = [e for e in events if e["type"] == "spectra"]
    failures = [e["message"] for e in events if e["type"] == "progress"]
    kinds = sorted({layer["kind"] for e in spectra for layer in e["layers"].values()})
    extra = {"variant": variant, "opts": opts, "model": model, "tel": tel, "updates": updates,
             "failures": failures, "step": step}
    row = [name, len(updates), "/".join(map(str, ranks)), ",".join(kinds), first * 1e3, med(steady) * 1e3,
           min(steady) * 1e3, len(events) // (1 + len(steady)), tel.failures, note]
    return row, extra


def lora_fast_vs_dense(extra: dict, quick: bool) -> list:
    """All LoRA layers: fast per layer, fast batched by shape, dense fp64 of get_delta_weight."""
    from peft.tuners.lora import LoraLayer

    model, updates = extra["model"], extra["updates"]
    layers = {n.removeprefix("base_model.model."): m for n, m in model.named_modules()
              if isinstance(m, LoraLayer) and "default" in m.lora_A}
    with torch.no_grad():
        def per_layer():
            return [lowrank_svdvals(u.U, u.K, u.V) for u in updates]

        groups: dict = {}
        for u in updates:
            groups.setdefault((tuple(u.U.shape), tuple(u.V.shape)), []).append(u)

        def batched():
            out = []
            for items in groups.values():
                out.append(lowrank_svdvals(torch.stack([u.U for u in items]), torch.stack([u.K for u in items]),
                                           torch.stack([u.V for u in items])))
            return out

        def dense():
            return [dense_svdvals(layers[u.name].get_delta_weight("default")) for u in updates]

        fast_sv = per_layer()
        t_fast = times(per_layer, 3 if quick else 5, warmup=1)
        t_batch = times(batched, 3 if quick else 5, warmup=1)
        t_dense = []
        for _ in range(1 if quick else 2):
            t = time.perf_counter()
            dense_sv = dense()
            t_dense.append(time.perf_counter() - t)
        exact_sv = [dense_svdvals(u.lowrank()) for u in updates]   # ΔW formed in fp64 (untimed)
    e32 = [errors(f, ref) for f, ref in zip(fast_sv, dense_sv)]
    e64 = [errors(f, ref) for f, ref in zip(fast_sv, exact_sv)]
    base = med(t_dense)
    return [
        ["fast, per layer", med(t_fast), min(t_fast), base / med(t_fast),
         max(e[0] for e in e32), max(e[1] for e in e32), max(e[0] for e in e64), max(e[1] for e in e64)],
        [f"fast, batched ({len(groups)} shapes)", med(t_batch), min(t_batch), base / med(t_batch),
         None, None, None, None],
        ["dense fp64 of get_delta_weight", med(t_dense), min(t_dense), 1.0, None, None, None, None],
    ]


def part2(quick: bool) -> None:
    section("Part 2: SmolLM2-135M, every linear layer adapted; one Telemetry.measure per variant")
    t0 = time.perf_counter()
    fresh_base = load_base()
    rows, lora_rows, dora_rows, failures = [], None, None, {}
    for name in VARIANTS:
        t = time.perf_counter()
        row, extra = measure_variant(name, fresh_base, quick)
        print(f"  {name}: built and measured in {time.perf_counter() - t:.0f} s", flush=True)
        rows.append(row)
        if extra["failures"]:
            failures[name] = extra["failures"]
        if name == "lora":
            lora_rows = lora_fast_vs_dense(extra, quick)
        if name == "dora":
            tel = extra["tel"]
            ts = []
            tel.budget = 0   # no budget: the final measurement includes the exact dense pass
            for _ in range(1 if quick else 2):
                extra["step"] += 10
                t = time.perf_counter()
                tel.measure(extra["step"], final=True)
                ts.append(time.perf_counter() - t)
            dora_rows = [["measure(final=True): live + exact dense pass", med(ts), min(ts), len(ts)],
                         ["  of which dense exact spectra (tel.dense_spent / passes)", tel.dense_spent / len(ts),
                          None, len(ts)],
                         ["measure(): steady state, no dense pass", row[5] / 1e3, row[6] / 1e3, 3 if quick else 6]]
        del extra
    table("Telemetry.measure (spectra + importance + decomposition + variant events); times in ms",
          ["variant", "layers", "rank p", "kind", "first ms", "steady med ms", "steady min ms", "events",
           "fails", "note"], rows,
          "first: the first call (fills the R-of-V, W0·V and ‖w0‖ caches; DoRA also times one dense layer); "
          "steady: later calls")
    if lora_rows:
        table("LoRA r=16, all layers: total seconds for the spectra of every layer",
              ["method", "median s", "min s", "dense/this", "max|Δσ|/σmax vs fp32 ΔW", "max|Δσi|/σi vs fp32 ΔW",
               "max|Δσ|/σmax vs fp64 ΔW", "max|Δσi|/σi vs fp64 ΔW"], lora_rows,
              "fp32 ΔW: peft's get_delta_weight (formed in fp32), then svdvals in fp64; "
              "fp64 ΔW: U·K·Vᵀ formed in fp64 (exact reference)")
    if dora_rows:
        table("DoRA r=16: the exact (full-rank) spectra of all layers; seconds",
              ["measurement", "median s", "min s", "repeats"], dora_rows)
    for name, msgs in failures.items():
        print(f"  !! {name}: telemetry reported failures: {msgs[:2]}")
    print(f"\n(part 2 took {time.perf_counter() - t0:.0f} s)")


# -- part 3: real runs ------------------------------------------------------------------------------

def run_session(variant: str, steps: int, out_dir: Path) -> dict:
    from studio.core.config import RunConfig
    from studio.core.training import Session

    sets = [f"train.max_steps={steps}", 'train.device="cpu"', "train.save_every=0", "train.eval_every=0",
            "telemetry.every=10", f'train.output_dir="{out_dir.as_posix()}"']
    if variant != "lora":
        sets.append(f'variant.name="{variant}"')
    cfg = RunConfig.from_toml(ROOT / "resources/configs/default.toml").with_overrides(sets)
    events: list[dict] = []
    t = time.perf_counter()
    result = Session(cfg).run(sink=events.append)
    wall = time.perf_counter() - t
    finished = [e for e in events if e["type"] == "run_finished"][-1]
    steps_done = len([e for e in events if e["type"] == "step"])
    spectra = [e for e in events if e["type"] == "spectra"]
    live = [e for e in spectra if not e.get("final")]
    final = [e for e in spectra if e.get("final")]
    exact_live = sum(1 for e in spectra if any(layer.get("kind") == "exact" for layer in e["layers"].values())) \
        if variant == "dora" else None
    train_s = finished.get("train_s") or 0.0
    tel_s = finished.get("telemetry_s") or 0.0
    return {"variant": variant, "status": result.status, "error": result.error, "wall": wall,
            "steps": steps_done, "train_s": train_s, "tel_s": tel_s, "final_s": finished.get("final_telemetry_s"),
            "live": [e.get("cost_s") for e in live], "final": [e.get("cost_s") for e in final],
            "exact_live": exact_live, "postponed": finished.get("telemetry_postponed", 0),
            "skipped": [e["message"] for e in events if e["type"] == "progress" and "telemetry skipped" in e["message"]]}


def part3(steps: int, dora_steps: int, budget_s: float, also: tuple = ()) -> None:
    section("Part 3: telemetry share of real runs (default.toml, CPU, telemetry.every = 10)")
    t0 = time.perf_counter()
    out_dir = Path(tempfile.mkdtemp(prefix="bench-telemetry-runs-"))
    results = []
    try:
        results.append(run_session("lora", steps, out_dir))
        lora = results[0]
        print(f"  lora: {lora['steps']} steps, run took {lora['wall']:.0f} s", flush=True)
        if dora_steps > 0 and lora["steps"]:
            per_step = lora["train_s"] / lora["steps"]
            # DoRA's step costs about twice LoRA's on CPU; its final exact pass ~ 10-20 s; loading ~ 10 s
            guess = 2.5 * per_step * dora_steps + 30 + (lora["wall"] - lora["train_s"])
            spent = time.perf_counter() - t0
            if spent + guess <= budget_s:
                results.append(run_session("dora", dora_steps, out_dir))
                print(f"  dora: {results[-1]['steps']} steps, run took {results[-1]['wall']:.0f} s", flush=True)
            else:
                print(f"  dora skipped: about {guess:.0f} s more would exceed this part's {budget_s:.0f} s")
        for spec in also:   # --also vera:30 and the like
            name, _, n = spec.partition(":")
            results.append(run_session(name, int(n or steps), out_dir))
            print(f"  {name}: {results[-1]['steps']} steps, run took {results[-1]['wall']:.0f} s", flush=True)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    rows = []
    for r in results:
        live = [c for c in r["live"] if c is not None]
        rows.append([r["variant"], r["status"], r["steps"], r["train_s"] / max(r["steps"], 1), r["train_s"],
                     len(live), med(live) if live else None, r["tel_s"],
                     100.0 * r["tel_s"] / r["train_s"] if r["train_s"] else None,
                     r["final_s"], r["postponed"], r["exact_live"] if r["exact_live"] is not None else "-"])
    table("Real runs: times in seconds (train_s includes the telemetry during training)",
          ["variant", "status", "steps", "s/step", "train_s", "measures", "median cost_s", "telemetry_s",
           "share %", "final_s", "postponed", "exact passes"], rows,
          "share = telemetry_s / train_s; final_s = the final measurement after training: 0 when the "
          "last step was measured already;\npostponed: scheduled measurements skipped to keep within "
          "telemetry.budget (1%); exact passes: DoRA spectra events with the exact dense spectrum\n"
          "(automatic: only when it fits in the budget, the final one included)")
    for r in results:
        if r["error"]:
            print(f"  !! {r['variant']}: {r['error']}")
        if r["skipped"]:
            print(f"  !! {r['variant']}: {r['skipped'][:2]}")
    print(f"\n(part 3 took {time.perf_counter() - t0:.0f} s)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps (~5 min)")
    parser.add_argument("--steps", type=int, default=None, help="steps of the LoRA run in part 3 (30; --quick 10)")
    parser.add_argument("--dora-steps", type=int, default=None,
                        help="steps of the DoRA run in part 3 (20; --quick 10; 0: skip)")
    parser.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. 1,3")
    parser.add_argument("--also", action="append", default=[], metavar="VARIANT:STEPS",
                        help="one more real run in part 3, e.g. --also vera:30 (repeatable)")
    args = parser.parse_args(argv)
    steps = args.steps if args.steps is not None else (10 if args.quick else 30)
    dora_steps = args.dora_steps if args.dora_steps is not None else (10 if args.quick else 20)
    parts = {p.strip() for p in args.parts.split(",")}

    started = time.perf_counter()
    print(f"bench_telemetry {'(quick)' if args.quick else '(full)'}: torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.machine()}, "
          f"python {platform.python_version()}")
    print(f"LORA_STUDIO_HOME={os.environ['LORA_STUDIO_HOME']}")
    if "1" in parts:
        part1(args.quick)
    if "2" in parts:
        part2(args.quick)
    if "3" in parts:
        part3(steps, dora_steps, budget_s=240 if args.quick else 360, also=tuple(args.also))
    print(f"\ntotal: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
