"""Check the engine's CUDA paths on a machine with an NVIDIA GPU (not a test: pytest skips it).

What it runs, each a real `Session` (studio/core/training.py) with telemetry.every = 1:

  tiny      the 2-layer random Llama of tests/tiny_models.py: train.device "cuda" x precision
            auto/fp32/bf16/fp16 x variants lora, dora, adalora, delta-lora, vera, lora-drop, and
            device "auto" (precision auto for every variant; fp32/bf16/fp16 for lora)
  smol      a random model of SmolLM2-135M's exact shape (30 layers, 210 adapted projections) with
            its real tokenizer and chat template (--smol-dir: config.json + tokenizer files; the
            bundled GGUF, ~98 MB, is too big to carry to a lent GPU machine): every variant at
            auto precision, plus lora/dora in fp16 and lora in fp32
  control   pause at step 2, parked for a second (no step while paused, model still on cuda),
            resume, stop at step 4: status "stopped", a checkpoint and an adapter
  timing    a random 12-layer, hidden-768 Llama (SmolLM2's tokenizer) on packed 512-token text,
            batch 8 (--timing-batch), LoRA r = 16 and DoRA: steps/s in fp32 vs bf16 (telemetry at
            its defaults)
  baseline  the same model in a bare PEFT + AdamW loop (no Trainer, no Session), and a
            torch.profiler table of a 12-step Session run: what the GPU gives vs what a run costs

and checks for each run: run_started reports cuda and the precision expected; every loss is
finite; parameters and buffers of the model are on cuda during training (looked at from the sink
at the first step); spectra / importance / decomposition events arrive with finite values (and
their cost_s); the saved adapter loads with stock PEFT (PeftModel.from_pretrained on a fresh
base) and gives the in-memory model's logits: in fp32 within 1e-4 of max|logit|, and under the
run's autocast (bf16 / fp16) within 5e-2 / 1e-2; the peak torch.cuda.max_memory_allocated.

    PYTHONPATH=. python3 tests/bench/check_cuda.py --smol-dir .whl/smollm2-shape [--json out.json]
    python3 tests/bench/check_cuda.py --parts tiny --quick          # a subset
    python3 tests/bench/check_cuda.py --parts timing --timing-batch 32 --timing-steps 20
    .venv/bin/python tests/bench/check_cuda.py --cpu --parts tiny   # the script's own dry run

Exit status 1 when any check failed (the failures are listed at the end).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _key, _value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                     ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_key, _value)
for _p in (ROOT, ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

from studio.core.config import RunConfig  # noqa: E402
from studio.core.training import RunControl, Session  # noqa: E402

DATASETS = ROOT / "resources" / "datasets"
VARIANTS = ("lora", "dora", "adalora", "delta-lora", "vera", "lora-drop")
TINY_OPTS = {
    "lora": {"r": 4, "alpha": 8},
    "dora": {"r": 4, "alpha": 8},
    "adalora": {"init_r": 6, "target_r": 2, "alpha": 8, "tinit": 1, "tfinal": 1},
    "delta-lora": {"r": 4, "alpha": 8, "start_step": 2, "update_ratio": 2.0},
    "vera": {"r": 32, "d_initial": 0.1},
    "lora-drop": {"r": 4, "alpha": 8, "sample_fraction": 0.1, "threshold": 0.9},
}
SMOL_OPTS = {
    "lora": {"r": 16, "alpha": 32},
    "dora": {"r": 16, "alpha": 32},
    "adalora": {"init_r": 12, "target_r": 8, "alpha": 32, "tinit": 1, "tfinal": 1},
    "delta-lora": {"r": 16, "alpha": 32, "start_step": 1, "update_ratio": 2.0},
    "vera": {"r": 256, "d_initial": 0.1},
    "lora-drop": {"r": 16, "alpha": 32, "sample_fraction": 0.1, "threshold": 0.9},
}
TOL = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 1e-2}   # max|Δlogit| / max|logit|
PROMPTS = ["The capital of France is Paris.", "Convert 3 kilometres to metres, please! 3 km is 3000 m."]

FAILURES: list[str] = []
ROWS: list[dict] = []


def fail(where: str, what: str) -> None:
    FAILURES.append(f"{where}: {what}")


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# -- models ---------------------------------------------------------------------------------------

def random_llama_from(tokenizer_dir: Path, out: Path, *, config_json: Path | None = None, seed: int = 0,
                      **shape) -> str:
    """A random Llama saved as fp32 safetensors with the tokenizer files of `tokenizer_dir`: the
    config of `config_json` when given (SmolLM2's shape), else a LlamaConfig of `shape`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    out.mkdir(parents=True, exist_ok=True)
    for f in tokenizer_dir.iterdir():
        if f.is_file() and f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, out / f.name)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if config_json is not None:
        config = AutoConfig.from_pretrained(str(config_json.parent))
    else:
        config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
                             max_position_embeddings=2048, **shape)
    config.dtype = "float32"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(str(out))
    return str(out)


# -- one checked run ------------------------------------------------------------------------------

class Watch:
    """The sink: keeps events, looks at where the model lives at the first optimizer step."""

    def __init__(self, session: Session):
        self.session = session
        self.events: list[dict] = []
        self.devices: set[str] = set()
        self.trainable_dtypes: set[str] = set()
        self.on_step = None   # optional hook(event)

    def __call__(self, event: dict) -> None:
        self.events.append(event)
        if event["type"] == "step" and not self.devices and self.session.model is not None:
            m = self.session.model
            self.devices = ({p.device.type for p in m.parameters()} | {b.device.type for b in m.buffers()})
            self.trainable_dtypes = {str(p.dtype).removeprefix("torch.") for p in m.parameters() if p.requires_grad}
        if self.on_step is not None and event["type"] == "step":
            self.on_step(event)

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]


def make_config(source: str, variant: str, opts: dict, out: Path, *, device: str, precision: str,
                steps: int, data: str = "chat_sample.jsonl", max_seq_len: int = 64, batch_size: int = 4,
                every: int = 1, budget: float = 0.0, lr: float = 5e-3, save_every: int = 0, **extra) -> RunConfig:
    raw = {
        "model": {"source": source},
        "data": {"path": data if os.path.isabs(data) else str(DATASETS / data), "eval_fraction": 0.0,
                 "max_seq_len": max_seq_len},
        "variant": {"name": variant, **opts},
        "train": {"output_dir": str(out), "max_steps": steps, "batch_size": batch_size, "learning_rate": lr,
                  "save_every": save_every, "eval_every": 0, "seed": 0, "device": device,
                  "precision": precision, **extra},
        "telemetry": {"every": every, "budget": budget},
    }
    return RunConfig.from_dict(raw, "check_cuda")


def expected_precision(requested: str, device_type: str) -> str:
    if requested != "auto":
        return requested
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def telemetry_summary(watch: Watch, where: str) -> dict:
    spectra, importance, decomposition = watch.of("spectra"), watch.of("importance"), watch.of("decomposition")
    bad = []
    for e in spectra:
        for name, entry in e["layers"].items():
            sv = entry.get("sv")   # [] is a layer AdaLoRA pruned to rank 0; a diverged one has no stable_rank
            if sv is None or not all(finite(v) for v in sv) or not finite(entry.get("stable_rank")):
                bad.append(f"spectra@{e['step']} {name}: sv={sv[:3]} stable_rank={entry.get('stable_rank')}")
            mag = entry.get("magnitude")
            if mag is not None and not all(finite(v) for v in mag.values()):
                bad.append(f"spectra@{e['step']} {name}: magnitude {mag}")
    for e in importance:
        for name, v in e["layers"].items():
            if not finite(v):
                bad.append(f"importance@{e['step']} ({e.get('method')}) {name}: {v}")
    for e in decomposition:
        for name, v in e["layers"].items():
            if not (finite(v.get("dM")) and finite(v.get("dD"))):
                bad.append(f"decomposition@{e['step']} {name}: {v}")
    skipped = [e["message"] for e in watch.of("progress") if "telemetry skipped" in e.get("message", "")]
    for msg in skipped:
        fail(where, msg)
    if bad:
        fail(where, f"{len(bad)} non-finite telemetry values, first: {bad[0]}")
    if not spectra or not decomposition or not importance:
        fail(where, f"telemetry events missing: spectra {len(spectra)}, importance {len(importance)}, "
                    f"decomposition {len(decomposition)}")
    costs = [e["cost_s"] for e in spectra if finite(e.get("cost_s"))]
    kinds = sorted({entry.get("kind") for e in spectra for entry in e["layers"].values()})
    return {"n_spectra": len(spectra), "n_ranks": len(watch.of("ranks")),
            "cost_ms_med": 1000 * statistics.median(costs) if costs else None,
            "cost_ms_max": 1000 * max(costs) if costs else None, "kinds": kinds,
            "tel_bad": len(bad) + len(skipped)}


def batch_for(tokenizer, device):
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def reload_check(session: Session, result, precision: str, device, where: str) -> dict:
    """The in-memory model against stock PEFT on a fresh base, in fp32 and under the run's autocast."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    meta = json.loads((result.adapter_path / "studio.json").read_text())
    batch = batch_for(session.tokenizer, device)
    trained = session.model.eval()
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    modes = ["fp32"] + ([precision] if precision != "fp32" else [])

    def logits(model, mode):
        with torch.no_grad(), torch.autocast(device.type, dtype=dtypes[mode] or torch.float32,
                                             enabled=dtypes[mode] is not None):
            return model(**batch).logits.float()

    # accelerate's prepare_model wraps model.forward in autocast for bf16/fp16 (and the Trainer
    # never unwraps it): the in-memory model would keep running in bf16/fp16 after the run. Note
    # it, then undo it, so that "fp32" below means fp32 for both models.
    out = {"fwd_patched": "_original_forward" in trained.__dict__}
    if out["fwd_patched"]:
        from accelerate.utils import extract_model_from_parallel

        extract_model_from_parallel(trained, keep_fp32_wrapper=False)
    expected = {m: logits(trained, m) for m in modes}
    base = AutoModelForCausalLM.from_pretrained(meta["base_path"], dtype=torch.float32).to(device)
    reloaded = PeftModel.from_pretrained(base, str(result.adapter_path)).eval()
    for m in modes:
        got = logits(reloaded, m)
        scale = expected[m].abs().max().item()
        rel = (got - expected[m]).abs().max().item() / (scale or 1.0)
        out[f"reload_{m}"] = rel
        if not math.isfinite(rel) or rel > TOL[m]:
            fail(where, f"reloaded adapter differs from the in-memory model under {m}: "
                        f"max|Δ|/max|logit| = {rel:.2e} > {TOL[m]:.0e}")
    # the adapter changes the output (it trained): compare with the bare base
    with reloaded.disable_adapter():
        bare = logits(reloaded, "fp32")
    out["adapter_effect"] = (bare - expected["fp32"]).abs().max().item()
    del reloaded, base
    return out


def free_cuda() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def checked_run(label: str, model_name: str, source: str, variant: str, opts: dict, work: Path, *,
                device: str, precision: str, steps: int, **cfg_extra) -> dict:
    where = f"{model_name}/{variant}/{device}/{precision}"
    row = {"model": model_name, "variant": variant, "device_req": device, "prec_req": precision}
    free_cuda()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    cfg = make_config(source, variant, opts, work / label, device=device, precision=precision, steps=steps,
                      **cfg_extra)
    session = Session(cfg)
    watch = Watch(session)
    t0 = time.perf_counter()
    try:
        result = session.run(sink=watch)
    except Exception as e:   # run() must never raise
        fail(where, f"Session.run raised {type(e).__name__}: {e}")
        row["status"] = "raised"
        ROWS.append(row)
        return row
    row["wall_s"] = time.perf_counter() - t0
    row["status"] = result.status
    if torch.cuda.is_available():
        row["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if result.status != "completed":
        fail(where, f"status {result.status}: {result.error}")
        if result.run_dir and (result.run_dir / "error.log").is_file():
            print(f"--- {where} error.log ---\n{(result.run_dir / 'error.log').read_text()[-3000:]}", flush=True)
        ROWS.append(row)
        return row
    started = watch.of("run_started")[0]
    row["device"], row["precision"] = started["device"], started.get("precision")
    want_dev = "cuda" if torch.cuda.is_available() and device in ("auto", "cuda") else device
    if not str(started["device"]).startswith(want_dev):
        fail(where, f"run_started device {started['device']!r}, expected {want_dev}")
    want_prec = expected_precision(precision, torch.device(want_dev).type)
    if started.get("precision") != want_prec:
        fail(where, f"run_started precision {started.get('precision')!r}, expected {want_prec}")
    losses = [e["loss"] for e in watch.of("step")]
    row["steps"] = len(losses)
    row["loss"] = (losses[0], losses[-1]) if losses else None
    if len(losses) != steps or not all(finite(x) for x in losses):
        fail(where, f"losses {losses} (expected {steps} finite)")
    mems = [e.get("memory_mb") for e in watch.of("step") if e.get("memory_mb") is not None]
    row["step_mem_mb"] = max(mems) if mems else None
    row["on"] = ",".join(sorted(watch.devices)) or "?"
    row["train_dtype"] = ",".join(sorted(watch.trainable_dtypes))
    if watch.devices != {want_dev}:
        fail(where, f"model parameters/buffers on {watch.devices} during training, expected {{{want_dev}}}")
    row.update(telemetry_summary(watch, where))
    finished = watch.events[-1]
    row["train_s"], row["telemetry_s"] = finished.get("train_s"), finished.get("telemetry_s")
    try:
        row.update(reload_check(session, result, want_prec, torch.device(want_dev), where))
    except Exception as e:
        fail(where, f"reload check raised {type(e).__name__}: {e}")
        traceback.print_exc()
    del session, watch
    free_cuda()
    if torch.cuda.is_available():
        row["leak_mb"] = (torch.cuda.memory_allocated() - before) / 2**20
    ROWS.append(row)
    print(f"  {where}: {row['status']}, {row.get('steps')} steps, loss {row.get('loss')}, "
          f"reload {row.get('reload_fp32')}, {row['wall_s']:.1f}s", flush=True)
    return row


# -- pause / stop ---------------------------------------------------------------------------------

def control_check(source: str, work: Path, device: str, precision: str) -> dict:
    where = f"control/{device}/{precision}"
    control = RunControl()
    cfg = make_config(source, "lora", TINY_OPTS["lora"], work / "control", device=device, precision=precision,
                      steps=40, every=1)
    session = Session(cfg, control=control)
    watch = Watch(session)
    paused, stopped_at = threading.Event(), {}

    def on_step(event):
        if event["step"] == 2:
            control.pause()

    watch.on_step = on_step
    original = watch.__call__

    class Sink:
        def __call__(self, event):
            original(event)
            if event["type"] == "paused":
                paused.set()

    result_box = {}
    worker = threading.Thread(target=lambda: result_box.setdefault("r", session.run(sink=Sink())))
    worker.start()
    row = {"check": "pause/stop", "device_req": device, "prec_req": precision}
    try:
        if not paused.wait(timeout=300):
            fail(where, "the run never paused")
            return row
        steps_at_pause = [e["step"] for e in watch.of("step")]
        time.sleep(1.0)
        steps_later = [e["step"] for e in watch.of("step")]
        row["steps_at_pause"] = steps_at_pause
        if steps_later != steps_at_pause or steps_at_pause != [1, 2]:
            fail(where, f"steps while paused: {steps_at_pause} -> {steps_later} (expected [1, 2] and no more)")
        devs = {p.device.type for p in session.model.parameters()}
        row["paused_on"] = ",".join(sorted(devs))
        if devs != {"cuda"} and torch.cuda.is_available():
            fail(where, f"paused model on {devs}")

        def stop_at_4(event):
            if event["step"] >= 4 and not control.stop_requested:
                stopped_at["step"] = event["step"]
                control.stop()

        watch.on_step = stop_at_4
        control.resume()
    finally:
        if not paused.is_set():
            control.stop()
        control.resume()
        worker.join(timeout=600)
    result = result_box.get("r")
    if result is None:
        fail(where, "the run did not end")
        return row
    steps = [e["step"] for e in watch.of("step")]
    kinds = [e["type"] for e in watch.events]
    row.update(status=result.status, steps=steps, stop_asked_at=stopped_at.get("step"),
               checkpoints=[e["step"] for e in watch.of("checkpoint")],
               adapter=bool(result.adapter_path and (result.adapter_path / "adapter_model.safetensors").is_file()))
    if result.status != "stopped":
        fail(where, f"status {result.status} after stop (error {result.error})")
    if not steps or steps[-1] > 5:
        fail(where, f"steps after stop at 4: {steps}")
    if "paused" not in kinds or "resumed" not in kinds or kinds.index("paused") > kinds.index("resumed"):
        fail(where, "paused/resumed events missing or out of order")
    if not row["checkpoints"] or not row["adapter"]:
        fail(where, f"stop saved checkpoints {row['checkpoints']}, adapter {row['adapter']}")
    finished = watch.events[-1]
    row["paused_s"] = finished.get("paused_s")
    if not finite(finished.get("paused_s")) or finished["paused_s"] < 0.9:
        fail(where, f"run_finished paused_s = {finished.get('paused_s')} (paused ~1 s)")
    ROWS.append(row)
    del session
    free_cuda()
    print(f"  {where}: {row}", flush=True)
    return row


# -- timing ---------------------------------------------------------------------------------------

def timing(source: str, work: Path, device: str, steps: int, variants=("lora", "dora"), batch_size: int = 8,
           seq_len: int = 512) -> list[dict]:
    text = (DATASETS / "text_sample.txt").read_text(encoding="utf-8")
    data = work / "timing_text.txt"
    data.write_text("\n".join([text] * max(16, 2 * batch_size * seq_len // 4000)), encoding="utf-8")
    out = []
    for variant in variants:
        for precision in ("fp32", "bf16"):
            free_cuda()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            cfg = make_config(source, variant, {"r": 16, "alpha": 32}, work / f"timing-{variant}-{precision}",
                              device=device, precision=precision, steps=steps, data=str(data), max_seq_len=seq_len,
                              batch_size=batch_size, every=10, budget=1.0, lr=2e-4)
            session = Session(cfg)
            watch = Watch(session)
            result = session.run(sink=watch)
            where = f"timing/{variant}/{precision}"
            row = {"check": "timing", "variant": variant, "precision": precision, "status": result.status,
                   "batch": f"{batch_size}x{seq_len}"}
            if result.status != "completed":
                fail(where, f"status {result.status}: {result.error}")
                out.append(row)
                continue
            times = [e["time"] for e in watch.of("step")]
            gaps = [b - a for a, b in zip(times, times[1:])][3:]   # skip warm-up
            tps = [e["tokens_per_s"] for e in watch.of("step")[4:] if finite(e.get("tokens_per_s"))]
            fin = watch.events[-1]
            row.update(steps=len(times), median_step_ms=1000 * statistics.median(gaps) if gaps else None,
                       steps_per_s=1 / statistics.median(gaps) if gaps else None,
                       overall_steps_per_s=len(times) / fin["train_s"] if fin.get("train_s") else None,
                       tokens_per_s=statistics.median(tps) if tps else None,
                       telemetry_share=fin.get("telemetry_s", 0) / fin["train_s"] if fin.get("train_s") else None,
                       postponed=fin.get("telemetry_postponed"),
                       peak_mb=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
                       trainable=watch.of("run_started")[0]["trainable_params"],
                       total=watch.of("run_started")[0]["total_params"])
            out.append(row)
            ROWS.append(row)
            print(f"  {where}: {row}", flush=True)
            del session, watch
            free_cuda()
    return out


def baseline(source: str, device: str, steps: int, work: Path) -> list[dict]:
    """The same model, adapters and batch shape in a bare loop (no Trainer, no Session): what the
    GPU itself gives, to tell the Session's own per-step cost from the hardware's. Then a
    torch.profiler look at a short Session run (bf16 LoRA), top kernels and host time."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    rows = []
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49152, (8, 512), generator=g).to(device)
    for variant in ("lora", "dora"):
        for precision in ("fp32", "bf16"):
            free_cuda()
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                     use_dora=variant == "dora", task_type="CAUSAL_LM")).to(device)
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
            times = []
            for i in range(steps):
                torch.cuda.synchronize()
                t = time.perf_counter()
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            med = statistics.median(times[3:])
            row = {"check": "baseline", "variant": variant, "precision": precision, "steps": steps,
                   "median_step_ms": 1000 * med, "steps_per_s": 1 / med, "first_step_ms": 1000 * times[0]}
            rows.append(row)
            print(f"  baseline/{variant}/{precision}: {row}", flush=True)
            del model, opt
    # profile a short Session run
    from torch.profiler import ProfilerActivity, profile

    text = (DATASETS / "text_sample.txt").read_text(encoding="utf-8")
    data = work / "timing_text.txt"
    data.write_text("\n".join([text] * 16), encoding="utf-8")
    for precision in ("fp32", "bf16"):
        cfg = make_config(source, "lora", {"r": 16, "alpha": 32}, work / f"profile-{precision}", device=device,
                          precision=precision, steps=12, data=str(data), max_seq_len=512, batch_size=8, every=0,
                          lr=2e-4)
        session = Session(cfg)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            result = session.run()
        print(f"\n## profile: Session, LoRA {precision}, 12 steps ({result.status}); top by device time", flush=True)
        print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=14, max_name_column_width=60))
        print(f"## profile: LoRA {precision}, top by host (CPU) total time")
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=22, max_name_column_width=70))
        del session, prof
        free_cuda()
    return rows


# -- report ---------------------------------------------------------------------------------------

def fmt(v, spec=""):
    if v is None:
        return "-"
    if isinstance(v, tuple):
        return "→".join(fmt(x, ".3f") for x in v)
    if isinstance(v, float):
        return format(v, spec or ".3g")
    return str(v)


def print_table(rows: list[dict], cols: list[tuple[str, str, str]], title: str) -> None:
    if not rows:
        return
    cells = [[fmt(r.get(k), spec) for _, k, spec in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _, _) in enumerate(cols)]
    print(f"\n## {title}")
    print("  ".join(h.ljust(w) for (h, _, _), w in zip(cols, widths)))
    for c in cells:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths)))


RUN_COLS = [("model", "model", ""), ("variant", "variant", ""), ("dev", "device_req", ""),
            ("prec", "prec_req", ""), ("→dev", "device", ""), ("→prec", "precision", ""),
            ("status", "status", ""), ("steps", "steps", ""), ("loss first→last", "loss", ""),
            ("on", "on", ""), ("spectra", "n_spectra", ""), ("kinds", "kinds", ""),
            ("tel ms med", "cost_ms_med", ".1f"), ("tel ms max", "cost_ms_max", ".1f"),
            ("reload fp32", "reload_fp32", ".1e"), ("reload bf16", "reload_bf16", ".1e"),
            ("reload fp16", "reload_fp16", ".1e"), ("fwd patched", "fwd_patched", ""), ("peak MB", "peak_mb", ".0f"),
            ("leak MB", "leak_mb", ".1f"), ("wall s", "wall_s", ".1f")]
TIME_COLS = [("variant", "variant", ""), ("precision", "precision", ""), ("batch", "batch", ""), ("steps", "steps", ""),
             ("ms/step (median)", "median_step_ms", ".1f"), ("steps/s", "steps_per_s", ".2f"),
             ("steps/s overall", "overall_steps_per_s", ".2f"), ("tokens/s", "tokens_per_s", ".0f"),
             ("telemetry share", "telemetry_share", ".3f"), ("postponed", "postponed", ""),
             ("peak MB", "peak_mb", ".0f")]


def environment() -> dict:
    import importlib.metadata as md

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "bf16_supported": torch.cuda.is_available() and torch.cuda.is_bf16_supported()}
    for name in ("transformers", "peft", "datasets", "accelerate", "safetensors", "gguf", "tomli_w",
                 "tokenizers", "huggingface_hub", "numpy", "pyarrow"):
        try:
            env[name] = md.version(name)
        except md.PackageNotFoundError:
            env[name] = None
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="tiny,smol,control,timing,baseline")
    ap.add_argument("--smol-dir", default=str(ROOT / ".whl" / "smollm2-shape"),
                    help="config.json + tokenizer files of SmolLM2-135M (weights are made up here)")
    ap.add_argument("--quick", action="store_true", help="device cuda only, fewer precisions")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--timing-variants", default="lora,dora")
    ap.add_argument("--timing-batch", type=int, default=8)
    ap.add_argument("--timing-seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--timing-steps", type=int, default=40)
    ap.add_argument("--cpu", action="store_true", help="dry run of this script on a machine without CUDA")
    ap.add_argument("--json", default=os.environ.get("OUT") and str(Path(os.environ["OUT"]) / "check_cuda.json"))
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    variants = [v for v in args.variants.split(",") if v]

    env = environment()
    print("environment:", json.dumps(env), flush=True)
    if not torch.cuda.is_available() and not args.cpu:
        print("no CUDA device: nothing to check (use --cpu for a dry run of the script)")
        return 2
    dev = "cpu" if args.cpu else "cuda"
    precisions = ["fp32"] if args.cpu else (["auto", "bf16"] if args.quick else ["auto", "fp32", "bf16", "fp16"])

    work = Path(tempfile.mkdtemp(prefix="check-cuda-"))
    os.environ.setdefault("LORA_STUDIO_HOME", str(work / "home"))
    started = time.perf_counter()
    from tiny_models import make_tiny_llama

    try:
        if "tiny" in parts:
            print("\n# tiny random Llama", flush=True)
            tiny = make_tiny_llama(work / "tiny-llama")
            for precision in precisions:
                for variant in variants:
                    checked_run(f"tiny-{variant}-{dev}-{precision}", "tiny", tiny, variant, TINY_OPTS[variant],
                                work, device=dev, precision=precision, steps=args.steps)
            if not args.cpu:
                for variant in variants if not args.quick else ("lora",):
                    checked_run(f"tiny-{variant}-auto-auto", "tiny", tiny, variant, TINY_OPTS[variant], work,
                                device="auto", precision="auto", steps=args.steps)
                if not args.quick:
                    for precision in ("fp32", "bf16", "fp16"):
                        checked_run(f"tiny-lora-auto-{precision}", "tiny", tiny, "lora", TINY_OPTS["lora"], work,
                                    device="auto", precision=precision, steps=args.steps)
        smol_dir = Path(args.smol_dir)
        if "smol" in parts and (smol_dir / "config.json").is_file():
            print("\n# SmolLM2-135M shape (random weights, real tokenizer)", flush=True)
            smol = random_llama_from(smol_dir, work / "smol", config_json=smol_dir / "config.json")
            cases = [(v, "auto" if not args.cpu else "fp32") for v in variants]
            if not args.cpu and not args.quick:
                cases += [("lora", "fp16"), ("dora", "fp16"), ("lora", "fp32")]
            for variant, precision in cases:
                checked_run(f"smol-{variant}-{precision}", "smol", smol, variant, SMOL_OPTS[variant], work,
                            device="auto" if not args.cpu else "cpu", precision=precision,
                            steps=min(args.steps, 4), max_seq_len=256, lr=2e-4)
        elif "smol" in parts:
            print(f"(smol skipped: no {smol_dir}/config.json)")
        if "control" in parts:
            print("\n# pause / stop", flush=True)
            tiny = make_tiny_llama(work / "tiny-llama-2")
            control_check(tiny, work, dev, "bf16" if not args.cpu else "fp32")
        timing_rows = []
        if "timing" in parts and (smol_dir / "config.json").is_file():
            print("\n# timing: random Llama, 12 layers, hidden 768", flush=True)
            mid = random_llama_from(smol_dir, work / "mid", hidden_size=768, intermediate_size=2048,
                                    num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4)
            timing_rows = timing(mid, work, dev, args.timing_steps,
                                 variants=[v for v in args.timing_variants.split(",") if v],
                                 batch_size=args.timing_batch, seq_len=args.timing_seq)
        baseline_rows = []
        if "baseline" in parts and (smol_dir / "config.json").is_file() and not args.cpu:
            print("\n# baseline: bare loop on the same model", flush=True)
            mid = (work / "mid") if (work / "mid" / "config.json").is_file() else Path(random_llama_from(
                smol_dir, work / "mid", hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                num_attention_heads=12, num_key_value_heads=4))
            baseline_rows = baseline(str(mid), dev, 20, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    runs = [r for r in ROWS if "model" in r]
    print_table(runs, RUN_COLS, "Sessions (reload = max|Δlogit| / max|logit|, stock PEFT vs in-memory)")
    print_table(timing_rows, TIME_COLS, "Timing: 12-layer hidden-768 random Llama (Session, telemetry every 10)")
    print_table(baseline_rows, [("variant", "variant", ""), ("precision", "precision", ""),
                                ("ms/step (median)", "median_step_ms", ".1f"), ("steps/s", "steps_per_s", ".2f"),
                                ("first step ms", "first_step_ms", ".0f")],
                "Baseline: the same model in a bare PEFT + AdamW loop (no Trainer)")
    patched = [f"{r['model']}/{r['variant']}/{r['prec_req']}" for r in ROWS if r.get("fwd_patched")]
    if patched:
        fail("Session.model after the run", f"forward still wrapped in accelerate's autocast in {len(patched)} "
             f"runs (all bf16/fp16 ones: {', '.join(patched[:3])}, ...): later use of session.model runs in "
             "bf16/fp16 (unwrapped by this script before the reload comparison)")
    for r in ROWS:
        if r.get("check") == "pause/stop":
            print(f"\n## pause/stop: {json.dumps(r)}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s; {len(runs)} sessions; "
          f"{'no failures' if not FAILURES else f'{len(FAILURES)} FAILURES:'}")
    for f in FAILURES:
        print("  FAIL", f)
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "rows": ROWS, "failures": FAILURES}, indent=1,
                                              default=str))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
