"""Speed benchmark: the studio's training engine (studio.core.training.Session) against a stock
transformers Trainer + PEFT script (tests/bench/stock_train.py), side by side in one invocation.

Every run is a fresh child process (`bench_speed.py --child SPEC`, one JSON result line), and the
arms alternate studio/stock/studio/stock, so drift of a shared machine hits both alike. Both arms
get the same model, data, LoRA options (r 16, alpha 32, all-linear, no dropout), batch size,
sequence length, learning rate, seed, steps and torch threads; the studio keeps its telemetry on
at its defaults (every 10 steps, 1 % budget), as a person's run has it.

Measured identically in both arms, by the same code:
  time     one TrainerCallback (passed by Session(callbacks=...) and Trainer(callbacks=...)) reads
           time.perf_counter() at every on_step_end; the first --warmup steps are skipped and
           steps/s = measured steps / (end of the last step - end of the last warm-up step). The
           window therefore holds everything a step costs: fetching and collating the batch, the
           forward/backward/optimizer step, and the other callbacks (the studio's logging and
           telemetry). On CUDA the clock synchronizes at the window's two ends only.
  tokens   the collator is wrapped (stock: build_trainer(collator_wrapper=...); studio: in the
           child only, studio.core.data.prepare_data is wrapped so that PreparedData.collator is)
           and counts per batch: tokens = input_ids.numel() (what the model computes on, padding
           included: a padded batch's pads, a padding-free batch's row tails), useful = the
           examples' own tokens (sum of their lengths before collation),
           label = tokens that carry loss (a label, after each example's first position). Batch i
           is step i+1's (the dataloader fetches a batch ahead, so batches are matched by index).
  memory   a thread samples the child's RSS every 10 ms from on_train_begin to on_train_end: peak
           MiB, and Δ MiB = peak - RSS at train begin (activations, gradients, optimizer state).
           On CUDA: torch.cuda.max_memory_allocated after a reset at train begin.

Scenarios (--scenarios a,b,c,e,f by default; d with --ablation):
  a  padded       studio with data.padding_free=false (the stock padding: right-pad to the longest
                  of the batch), train.label_logits_only at its default (true); chat_sample.jsonl,
                  max_seq_len 256, batch 4
  b  chat sample  studio defaults (padding-free) vs stock pad-to-longest, same data
  c  long chat    resources/datasets/chat_long_sample.jsonl (or --long-data; without either, a
                  seeded stand-in of multi-turn chats of 60-900 tokens is written to a temp dir),
                  max_seq_len 1024, --long-steps steps
  d  ablation     the four studio combinations of padding_free x label_logits_only, and stock
  e  time to      the invented-knowledge task (tests/bench/knowledge_task.py): every --ttq-every
     quality      steps the clock pauses and the held-out paraphrased questions are scored (eval
                  mode, no_grad, one forward pass each; answered = every gold answer token and the
                  end-of-turn marker is the argmax given the gold prefix). Reported: training time
                  (evaluation excluded) and step at which accuracy first reaches --ttq-threshold;
                  a run stops there (the schedule is constant, so stopping changes nothing before).
                  Calibration (stock, CPU, lr 1e-3, r 16, batch 4): accuracy 0.17 / 0.25 / 0.36 /
                  0.61 at steps 20 / 30 / 40 / 50, so the default threshold 0.5 falls near step 50
  f  startup      `lora-studio --help` (studio.cli.main(["--help"])) in fresh interpreters, and
                  whether torch was imported; then tests/bench/bench_window.py --parts launch

Columns: steps/s (optimizer steps per second over the timed window), tokens/s (tensor tokens the
model computed on, pads included), useful tok/s (the examples' own tokens), label tok/s (tokens
with loss), tokens/step (tensor tokens per batch: compare with stock to see the padding saved),
peak MiB and Δ MiB (memory above). Tables give, per arm, the median over repeats and (min-max);
the ratio tables pair repeat i of the studio with repeat i of stock and give the median and
(min-max) of the ratios. Each scenario ends with the data both arms saw (examples, tokens, label
tokens, the studio's batch layout as its run_started event reports it) and whether their first 12
batches held the same examples. The summary checks the goals: a's steps/s ratio >= 1.00, b's
useful-tokens/s ratio >= 2, peak memory ratio <= 1.0 (the worse of b and c), e's time-to-quality
ratio <= 0.5, and f's --help without torch.

Run from the repository root (offline; the bundled model is converted once and cached under
$LORA_STUDIO_HOME, by default the studio's own data folder):

    .venv/bin/python tests/bench/bench_speed.py                        # a,b,c,e,f: ~40 min on 2 idle cores
    .venv/bin/python tests/bench/bench_speed.py --quick                # 1 repeat, fewer steps: ~12 min
    .venv/bin/python tests/bench/bench_speed.py --quick --steps 5 --repeats 1 --scenarios a
    .venv/bin/python tests/bench/bench_speed.py --scenarios b,d --ablation --device cuda --steps 60

Not a test: pytest does not collect bench_*.py files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tables import table as _table   # tests/bench/tables.py (the script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
for _key, _value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                     ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_key, _value)
for _path in (ROOT, HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

BUNDLED = "bundled:smollm2-135m-instruct"
CHAT = ROOT / "resources/datasets/chat_sample.jsonl"
LONG_CHAT = ROOT / "resources/datasets/chat_long_sample.jsonl"
IGNORE = -100
RESULT = "BENCH-RESULT "   # prefix of the child's one result line on stdout


# == child side: one training run, measured ==========================================================

class CountingCollator:
    """Wraps a collator; records per batch: tokens computed, the examples' own tokens, label tokens,
    and the examples' lengths (to check that both arms saw the same batches).

    Attributes read or set on the wrapper go to the wrapped collator: the studio configures its
    collator after prepare_data (collator.padding_free = ..., and only if it has that attribute),
    and a wrapper that hid them would silently turn the studio's fast batches off."""

    def __init__(self, inner, log: list):
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "log", log)

    def __getattr__(self, name):   # only for names the wrapper itself lacks
        return getattr(object.__getattribute__(self, "inner"), name)

    def __setattr__(self, name, value):
        setattr(self.inner, name, value)

    def __call__(self, features):
        lengths = [len(f["input_ids"]) for f in features]
        labels = sum(sum(1 for t in list(f["labels"])[1:] if t != IGNORE) for f in features)
        batch = self.inner(features)
        self.log.append({"tokens": int(batch["input_ids"].numel()), "useful": sum(lengths), "labels": labels,
                         "lengths": lengths})
        return batch


class MemorySampler:
    """Peak RSS of this process, sampled every 10 ms on a thread (reading /proc is cheap)."""

    def __init__(self, interval: float = 0.01):
        self.interval, self.peak, self.start = interval, 0, 0
        self._stop = threading.Event()
        self._thread = None
        try:
            self._statm = open("/proc/self/statm", "rb")
            self._page = os.sysconf("SC_PAGE_SIZE")
        except OSError:   # not Linux
            import psutil

            self._statm, self._proc = None, psutil.Process()

    def rss(self) -> int:
        if self._statm is not None:
            self._statm.seek(0)
            return int(self._statm.read().split()[1]) * self._page
        return self._proc.memory_info().rss

    def begin(self) -> None:
        self.start = self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def end(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.rss())


def heldout_batch(tokenizer, items: list[dict]):
    """Prompt + gold answer token ids per held-out question, and where the answer is: the tokens
    the assistant turn is trained on (its content and the end-of-turn marker)."""
    rows = []
    for item in items:
        user = [{"role": "user", "content": item["question"]}]
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": item["answer"]}],
                                             tokenize=False).rstrip()
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        if ids[:len(p_ids)] != p_ids or len(ids) <= len(p_ids):
            raise RuntimeError(f"the chat template renders the prompt of {item['question']!r} differently "
                               "with and without the answer")
        rows.append((ids, len(p_ids)))
    return rows


def heldout_accuracy(model, rows, pad_id: int, chunk: int = 8) -> float:
    """Share of questions whose whole answer is the model's argmax given the gold prefix."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.no_grad():
            for i in range(0, len(rows), chunk):
                part = rows[i:i + chunk]
                width = max(len(ids) for ids, _ in part)
                input_ids = torch.full((len(part), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(part), width), dtype=torch.long)
                for j, (ids, _) in enumerate(part):
                    input_ids[j, :len(ids)] = torch.tensor(ids)
                    mask[j, :len(ids)] = 1
                logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
                predicted = logits.argmax(-1).cpu()
                for j, (ids, start) in enumerate(part):
                    # the token at position t is predicted by the logits at t - 1
                    correct += bool((predicted[j, start - 1:len(ids) - 1] == torch.tensor(ids[start:])).all())
    finally:
        if was_training:
            model.train()
    return correct / max(len(rows), 1)


def make_callbacks(spec: dict, batches: list):
    """(StepClock, QualityProbe or None): the same classes for both arms."""
    import torch
    from transformers import TrainerCallback

    cuda = torch.cuda.is_available() and spec["device"] != "cpu"
    warmup = int(spec["warmup"])
    ttq_every = int(spec["ttq"]["every"]) if spec.get("ttq") else 0

    class StepClock(TrainerCallback):
        def __init__(self):
            self.begins: list[float] = []
            self.ends: list[float] = []
            self.memory = MemorySampler()
            self.cuda_start = self.cuda_peak = None
            self.collator_wrapped = None

        def on_train_begin(self, args, state, control, **kwargs):
            loader = kwargs.get("train_dataloader")
            if loader is not None:
                self.collator_wrapped = isinstance(getattr(loader, "collate_fn", None), CountingCollator)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                self.cuda_start = torch.cuda.memory_allocated()
            self.memory.begin()
            self.begin = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            self.begins.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            # the window's two ends (and, for time to quality, the steps that may end it)
            if cuda and (step in (warmup, state.max_steps) or (ttq_every and step % ttq_every == 0)):
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
                self.cuda_peak = torch.cuda.max_memory_allocated()
            self.memory.end()
            self.end = time.perf_counter()

        def result(self) -> dict:
            n = len(self.ends)
            w = warmup if n > warmup else 0
            t0 = self.ends[w - 1] if w else self.begin
            elapsed = self.ends[-1] - t0 if n else 0.0
            measured = batches[w:n]   # batch i is step i+1's
            # time between a step's end and the next one's begin: logging (_maybe_log_save_evaluate),
            # then fetching and collating the next batch (the Trainer fetches before on_step_begin).
            # The callbacks listed before ours (the studio's events and telemetry) run inside the step.
            between = sum(b - a for a, b in zip(self.ends[w:n - 1], self.begins[w + 1:n]))
            out = {"steps_done": n, "measured_steps": n - w, "elapsed_s": elapsed,
                   "train_begin": getattr(self, "begin", None), "train_end": getattr(self, "end", None),
                   "steps_per_s": (n - w) / elapsed if elapsed > 0 else None,
                   "collator_wrapped": self.collator_wrapped, "batches_counted": len(batches),
                   "step_s": [b - a for a, b in zip([self.begin] + self.ends, self.ends)],
                   "between_share": between / elapsed if elapsed > 0 else None,
                   "rss_peak_mib": self.memory.peak / 2**20,
                   "rss_delta_mib": (self.memory.peak - self.memory.start) / 2**20}
            if len(measured) == n - w and measured and elapsed > 0:
                for key in ("tokens", "useful", "labels"):
                    total = sum(b[key] for b in measured)
                    out[f"{key}_per_step"] = total / len(measured)
                    out[f"{key}_per_s"] = total / elapsed
            if self.cuda_peak is not None:
                out["cuda_peak_mib"] = self.cuda_peak / 2**20
                out["cuda_delta_mib"] = (self.cuda_peak - self.cuda_start) / 2**20
            return out

    probe = None
    if spec.get("ttq"):
        ttq = spec["ttq"]

        class QualityProbe(TrainerCallback):
            """Every `every` steps: pause the clock, score the held-out questions, resume."""

            def __init__(self):
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(spec["model_dir"])
                if not getattr(tok, "chat_template", None):
                    from stock_train import CHATML

                    tok.chat_template = CHATML
                items = [json.loads(line) for line in Path(ttq["heldout"]).read_text().splitlines() if line.strip()]
                self.rows = heldout_batch(tok, items)
                self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
                self.curve: list[tuple[int, float, float]] = []   # (step, training s, accuracy)
                self.eval_s = 0.0
                self.reached = None

            def _score(self, model) -> float:
                if cuda:
                    torch.cuda.synchronize()
                return heldout_accuracy(model, self.rows, self.pad_id)

            def on_train_begin(self, args, state, control, model=None, **kwargs):
                t = time.perf_counter()
                self.base_accuracy = self._score(model)
                self.begin = time.perf_counter()
                self.base_eval_s = self.begin - t

            def on_step_end(self, args, state, control, model=None, **kwargs):
                step = state.global_step
                if step % ttq["every"] and step != state.max_steps:
                    return
                if cuda:
                    torch.cuda.synchronize()
                paused = time.perf_counter()
                accuracy = self._score(model)
                train_s = paused - self.begin - self.eval_s
                self.eval_s += time.perf_counter() - paused
                self.curve.append((step, train_s, accuracy))
                print(f"step {step}: held-out accuracy {accuracy:.2f} after {train_s:.1f} s of training "
                      f"(scored in {time.perf_counter() - paused:.1f} s)",
                      file=sys.stderr, flush=True)   # progress for whoever watches the child
                if self.reached is None and accuracy >= ttq["threshold"]:
                    self.reached = (step, train_s, accuracy)
                    if ttq.get("stop", True):
                        control.should_training_stop = True

            def result(self) -> dict:
                return {"base_accuracy": self.base_accuracy, "curve": self.curve, "eval_s": self.eval_s,
                        "base_eval_s": self.base_eval_s,
                        "reached_step": self.reached[0] if self.reached else None,
                        "reached_s": self.reached[1] if self.reached else None,
                        "final_accuracy": self.curve[-1][2] if self.curve else None}

        probe = QualityProbe()
    return StepClock(), probe


def data_totals(examples) -> dict:
    return {"examples": len(examples), "tokens": sum(len(ids) for ids in examples["input_ids"]),
            "label_tokens": sum(sum(t != IGNORE for t in labels[1:]) for labels in examples["labels"])}


def run_studio(spec: dict, callbacks: list, batches: list) -> dict:
    import studio.core.data as studio_data
    from studio.core.config import RunConfig
    from studio.core.training import Session

    stats: dict = {}
    original = studio_data.prepare_data

    def counting_prepare_data(*args, **kwargs):   # this child only: the engine's code is untouched
        prepared = original(*args, **kwargs)
        stats.update(data_totals(prepared.train), dropped=prepared.dropped)
        prepared.collator = CountingCollator(prepared.collator, batches)
        return prepared

    studio_data.prepare_data = counting_prepare_data
    cfg = RunConfig.from_toml(ROOT / "resources/configs/default.toml")
    cfg.model.source = spec["model_source"]
    cfg.data.path = spec["data"]
    cfg.data.eval_fraction = 0.0
    cfg.data.max_seq_len = spec["max_seq_len"]
    for key, value in spec.get("studio", {}).items():   # padding_free, label_logits_only
        section = cfg.data if key == "padding_free" else cfg.train
        setattr(section, key, value)
    cfg.variant = {"name": "lora", "r": spec["r"], "alpha": spec["alpha"], "dropout": 0.0,
                   "target_modules": "all-linear"}
    train = {"max_steps": spec["steps"], "batch_size": spec["batch_size"], "learning_rate": spec["lr"],
             "lr_scheduler": spec["lr_scheduler"], "warmup_steps": 0, "weight_decay": 0.0, "max_grad_norm": 1.0,
             "grad_accum": 1, "save_every": 0, "eval_every": 0, "gallery": False, "seed": spec["seed"],
             "device": spec["device"], "output_dir": spec["output_dir"]}
    for key, value in train.items():
        setattr(cfg.train, key, value)
    result = Session(cfg, callbacks=callbacks).run(sink=None)
    events = []
    if result.run_dir is not None and (result.run_dir / "events.jsonl").is_file():
        events = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()
                  if line.strip()]
    started = next((e for e in events if e.get("type") == "run_started"), {})
    layout = {k: started.get(k) for k in ("padding_free", "label_logits_only")}
    return {"status": result.status, "error": result.error, "data": stats, "layout": layout,
            "telemetry_measures": sum(1 for e in events if e.get("type") == "spectra" and not e.get("final")),
            "step_events": sum(1 for e in events if e.get("type") == "step")}


def run_stock(spec: dict, callbacks: list, batches: list) -> dict:
    from stock_train import build_trainer

    trainer = build_trainer(spec["model_dir"], spec["data"], r=spec["r"], alpha=spec["alpha"],
                            max_seq_len=spec["max_seq_len"], batch_size=spec["batch_size"], lr=spec["lr"],
                            lr_scheduler=spec["lr_scheduler"], max_steps=spec["steps"], seed=spec["seed"],
                            device=spec["device"], callbacks=callbacks, verbose=False,
                            collator_wrapper=lambda c: CountingCollator(c, batches),
                            output_dir=spec["output_dir"])
    trainer.train()
    return {"status": "completed", "error": None, "data": {**data_totals(trainer.train_dataset),
                                                           "dropped": trainer.data_stats["dropped"]}}


def child_main(spec: dict) -> dict:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    if spec["kind"] == "probe":
        cuda = torch.cuda.is_available()
        from studio.core.models import resolve_source

        resolved = resolve_source(spec["model_source"], False)
        return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cuda": cuda,
                "gpu": torch.cuda.get_device_name(0) if cuda else None, "model_dir": str(resolved.path)}

    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    import warnings

    warnings.filterwarnings("ignore")
    batches: list = []
    clock, probe = make_callbacks(spec, batches)
    callbacks = [clock] + ([probe] if probe else [])
    started = time.perf_counter()
    run = run_studio if spec["engine"] == "studio" else run_stock
    spec["output_dir"] = tempfile.mkdtemp(prefix=f"bench-speed-{spec['engine']}-")
    try:
        out = run(spec, callbacks, batches)
    finally:   # the run folder (the studio saves its adapter, ~20 MB for SmolLM2): not needed
        shutil.rmtree(spec["output_dir"], ignore_errors=True)
    ended = time.perf_counter()
    out.update(clock.result())
    # where the child's time went: before training (model, data), training, after (saving, final telemetry)
    begin, end = out.pop("train_begin"), out.pop("train_end")
    if begin is not None and end is not None:
        out.update(setup_s=begin - started, train_s=end - begin, after_s=ended - end)
    out.update(engine=spec["engine"], arm=spec["arm"], threads=torch.get_num_threads(),
               batch_lengths=[b["lengths"] for b in batches[:12]])
    if probe is not None:
        out["ttq"] = probe.result()
    return out


# == parent side: scenarios, tables ====================================================================

@dataclass
class Arm:
    name: str
    engine: str                    # studio or stock
    studio: dict = field(default_factory=dict)   # studio options: padding_free, label_logits_only


@dataclass
class Scenario:
    key: str
    title: str
    data: str
    max_seq_len: int
    steps: int
    arms: list[Arm]
    repeats: int
    lr: float = 2e-4
    lr_scheduler: str = "linear"
    ttq: dict | None = None
    runs: dict = field(default_factory=dict)   # arm name -> list of results (one per repeat)


STOCK = Arm("stock Trainer+PEFT", "stock")


def run_child(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"child timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
    return {"status": "failed", "error": f"child exited {done.returncode}: " + " | ".join(tail)[-1500:]}


def run_scenario(sc: Scenario, common: dict) -> None:
    section(f"Scenario {sc.key}: {sc.title}")
    print(f"data {sc.data}, max_seq_len {sc.max_seq_len}, batch {common['batch_size']}, lr {sc.lr:g} "
          f"({sc.lr_scheduler}), {sc.steps} steps (first {common['warmup']} not timed), {sc.repeats} repeat(s), "
          f"arms: {', '.join(a.name for a in sc.arms)}", flush=True)
    for repeat in range(sc.repeats):
        for arm in sc.arms:   # alternating: A B A B ...
            spec = {**common, "kind": "train", "engine": arm.engine, "arm": arm.name, "studio": arm.studio,
                    "data": sc.data, "max_seq_len": sc.max_seq_len, "steps": sc.steps, "lr": sc.lr,
                    "lr_scheduler": sc.lr_scheduler, "ttq": sc.ttq}
            t = time.perf_counter()
            result = run_child(spec, timeout=common["child_timeout"])
            sc.runs.setdefault(arm.name, []).append(result)
            if result.get("status") != "completed":
                print(f"  !! {arm.name}, repeat {repeat + 1}: {result.get('status')}: {result.get('error')}",
                      flush=True)
                continue
            extra = ""
            if result.get("ttq"):
                q = result["ttq"]
                extra = (f", accuracy {q['base_accuracy']:.2f} -> {q['final_accuracy']:.2f}, threshold at step "
                         f"{q['reached_step']}" if q["reached_step"] else f", threshold not reached "
                         f"(accuracy {q['final_accuracy']:.2f} at the end)")
            sps = result.get("steps_per_s")
            timed = result.get("step_s", [])[common["warmup"]:]
            print(f"  repeat {repeat + 1} {arm.name}: {result['steps_done']} steps, "
                  + (f"{sps:.3f} steps/s, step s median {statistics.median(timed):.2f} max {max(timed):.2f}, "
                     f"{100 * (result.get('between_share') or 0):.0f}% between steps "
                     if sps and timed else ""),
                  f"(child {time.perf_counter() - t:.0f} s: setup {result.get('setup_s', 0):.0f}, training "
                  f"{result.get('train_s', 0):.0f}, after {result.get('after_s', 0):.0f}){extra}", flush=True)
    report_scenario(sc, common)


def ok_runs(sc: Scenario, arm: Arm) -> list[dict]:
    return [r for r in sc.runs.get(arm.name, []) if r.get("status") == "completed"]


def spread(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m = statistics.median(values)
    if len(values) == 1:
        return _num(m)
    return f"{_num(m)} ({_num(min(values))}-{_num(max(values))})"


def _num(v: float) -> str:
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"


def paired(sc: Scenario, arm: Arm, key: str) -> list[float]:
    """studio/stock ratios of `key`, repeat i with repeat i (both completed)."""
    out = []
    for a, b in zip(sc.runs.get(arm.name, []), sc.runs.get(STOCK.name, [])):
        x, y = a.get(key), b.get(key)
        if a.get("status") == b.get("status") == "completed" and x is not None and y:
            out.append(x / y)
    return out


def memory_keys(common: dict) -> tuple[str, str, str]:
    if common.get("cuda"):
        return "cuda_peak_mib", "cuda_delta_mib", "CUDA"
    return "rss_peak_mib", "rss_delta_mib", "RSS"


def report_scenario(sc: Scenario, common: dict) -> None:
    peak_key, delta_key, mem = memory_keys(common)
    rows = []
    for arm in sc.arms:
        runs = ok_runs(sc, arm)
        rows.append([arm.name, f"{len(runs)}/{len(sc.runs.get(arm.name, []))}",
                     spread([r.get("steps_per_s") for r in runs]), spread([r.get("tokens_per_s") for r in runs]),
                     spread([r.get("useful_per_s") for r in runs]), spread([r.get("labels_per_s") for r in runs]),
                     spread([r.get("tokens_per_step") for r in runs]), spread([r.get(peak_key) for r in runs]),
                     spread([r.get(delta_key) for r in runs])])
    table(f"{sc.key}: throughput and memory, median (min-max) over repeats",
          ["arm", "runs", "steps/s", "tokens/s", "useful tok/s", "label tok/s", "tokens/step", f"peak {mem} MiB",
           f"Δ {mem} MiB"], rows)
    ratio_rows = []
    for arm in sc.arms:
        if arm.engine != "studio":
            continue
        ratio_rows.append([arm.name, spread(paired(sc, arm, "steps_per_s")), spread(paired(sc, arm, "tokens_per_s")),
                           spread(paired(sc, arm, "useful_per_s")), spread(paired(sc, arm, peak_key)),
                           spread(paired(sc, arm, delta_key))])
    if ratio_rows:
        table(f"{sc.key}: studio / stock, median (min-max) over paired repeats",
              ["studio arm", "steps/s", "tokens/s", "useful tok/s", f"peak {mem}", f"Δ {mem}"], ratio_rows)
    if sc.ttq:
        report_ttq(sc)
    check_same_input(sc)


def report_ttq(sc: Scenario) -> None:
    rows = []
    for arm in sc.arms:
        runs = ok_runs(sc, arm)
        q = [r["ttq"] for r in runs]
        reached = [x for x in q if x["reached_step"] is not None]
        rows.append([arm.name, f"{len(reached)}/{len(q)}", spread([x["reached_step"] for x in reached]),
                     spread([x["reached_s"] for x in reached]), spread([x["base_accuracy"] for x in q]),
                     spread([x["final_accuracy"] for x in q]), spread([r.get("steps_per_s") for r in runs]),
                     spread([x["eval_s"] for x in q])])
    table(f"{sc.key}: time to {sc.ttq['threshold']:.0%} held-out accuracy (training seconds, evaluation excluded)",
          ["arm", "reached", "at step", "train s", "acc at 0", "acc at end", "steps/s", "eval s"], rows)
    for arm in sc.arms:
        if arm.engine == "studio":
            ratios = ttq_ratios(sc, arm)
            shown = spread(ratios) if ratios else "n/a (not reached by both)"
            print(f"time-to-quality ratio {arm.name} / stock: {shown}   (goal ≤ 0.5)")
    for arm in sc.arms:
        for r in ok_runs(sc, arm)[:1]:
            curve = " ".join(f"{step}:{acc:.2f}" for step, _, acc in r["ttq"]["curve"])
            print(f"  accuracy by step, {arm.name} repeat 1: {curve}")


def ttq_ratios(sc: Scenario, arm: Arm) -> list[float]:
    out = []
    for a, b in zip(sc.runs.get(arm.name, []), sc.runs.get(STOCK.name, [])):
        x, y = (a.get("ttq") or {}).get("reached_s"), (b.get("ttq") or {}).get("reached_s")
        if x is not None and y:
            out.append(x / y)
    return out


def check_same_input(sc: Scenario) -> None:
    """Both arms must train on the same examples, in the same batches: print the totals."""
    lines, first = [], {}
    for arm in sc.arms:
        runs = ok_runs(sc, arm)
        if not runs:
            continue
        r = runs[0]
        d = r.get("data", {})
        line = (f"  {arm.name}: {d.get('examples')} examples ({d.get('dropped')} dropped), {d.get('tokens')} tokens, "
                f"{d.get('label_tokens')} label tokens; collator counted: {r.get('collator_wrapped')}")
        if arm.engine == "studio":
            line += f"; telemetry measures {r.get('telemetry_measures')}; layout used {r.get('layout')}"
        lines.append(line)
        first[arm.name] = (d.get("examples"), d.get("tokens"), d.get("label_tokens"), runs[0].get("batch_lengths"))
    print("data seen (first completed run of each arm):")
    print("\n".join(lines))
    if STOCK.name in first:
        ref = first[STOCK.name]
        for name, got in first.items():
            if name == STOCK.name:
                continue
            same_totals, same_batches = got[:3] == ref[:3], got[3] == ref[3]
            if not (same_totals and same_batches):
                print(f"  !! {name} differs from stock: totals {'match' if same_totals else 'DIFFER'}, "
                      f"first batches {'match' if same_batches else 'DIFFER'}")
        if all(got[:3] == ref[:3] and got[3] == ref[3] for got in first.values()):
            print("  same examples, same token and label totals, same first 12 batches in every arm")
    sys.stdout.flush()


# -- startup --------------------------------------------------------------------------------------

STARTUP_SNIPPET = r"""
import time; t0 = time.perf_counter()
import contextlib, io, sys
from studio.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
print(f"STARTUP {time.perf_counter() - t0:.4f} {'torch' in sys.modules} {'transformers' in sys.modules}")
"""


def bench_startup(repeats: int, window: bool) -> dict:
    section("Scenario f: start-up")
    inner, outer, flags = [], [], None
    for _ in range(repeats):
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", STARTUP_SNIPPET], capture_output=True, text=True, cwd=ROOT)
        outer.append(time.perf_counter() - t)
        line = [x for x in done.stdout.splitlines() if x.startswith("STARTUP ")]
        if done.returncode != 0 or not line:
            print(f"  !! lora-studio --help failed: {(done.stderr or done.stdout)[-800:]}")
            return {}
        _, seconds, torch_loaded, tf_loaded = line[-1].split()
        inner.append(float(seconds))
        flags = (torch_loaded, tf_loaded)
    table("lora-studio --help in a fresh interpreter (studio.cli.main), seconds",
          ["measure", "median", "min", "max"],
          [["import + --help (from the first line of the script)", statistics.median(inner), min(inner), max(inner)],
           ["whole process (with Python start-up)", statistics.median(outer), min(outer), max(outer)]],
          f"torch imported: {flags[0]}, transformers imported: {flags[1]} (goal: neither)")
    if window:
        done = subprocess.run([sys.executable, str(HERE / "bench_window.py"), "--parts", "launch", "--repeats",
                               str(repeats)], capture_output=True, text=True, cwd=ROOT)
        print("\nwindow launch (tests/bench/bench_window.py --parts launch):")
        print("\n".join("  " + x for x in (done.stdout.strip() or done.stderr.strip()[-800:]).splitlines()))
    return {"help_s": statistics.median(inner), "torch": flags[0]}


# -- data -----------------------------------------------------------------------------------------

LONG_WORDS = ("the model learns from each example while the river of data keeps flowing through layers of "
              "weights and small changes add up over many steps so that a question about maps tools plants "
              "history or numbers gets a longer careful answer with reasons examples and a short summary at "
              "the end because people ask follow up questions when something is not clear").split()


def make_long_chat(path: Path, n: int = 160, seed: int = 0) -> Path:
    """A stand-in for chat_long_sample.jsonl: n multi-turn chats of about 60-900 tokens (log-uniform),
    long assistant turns, short user turns, a system prompt in a third of them."""
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(rng.choice(LONG_WORDS) for _ in range(max(k, 3))).capitalize() + "."

    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            budget = math.exp(rng.uniform(math.log(60), math.log(900))) - 30   # ~30: template and system prompt
            turns = rng.randint(1, max(1, min(6, int(budget // 60))))
            per_turn = budget / turns   # about a token per word (plus the turn headers)
            messages = [{"role": "system", "content": "You explain things carefully."}] if rng.random() < 0.33 else []
            for _ in range(turns):
                messages.append({"role": "user", "content": words(int(per_turn * 0.2)).rstrip(".") + "?"})
                messages.append({"role": "assistant", "content": words(int(per_turn * 0.8))})
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


# -- output ---------------------------------------------------------------------------------------

def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return _num(v)
    return str(v)



def table(title: str, headers: list[str], rows: list[list], note: str = "") -> None:
    _table(title, headers, rows, note, cell=_cell)

def section(title: str) -> None:
    print("\n" + "=" * 100 + f"\n{title}\n" + "=" * 100)
    sys.stdout.flush()


def goal_line(name: str, values: list[float], goal: str, passed) -> list:
    if not values:
        return [name, "not run", goal, "-"]
    m = statistics.median(values)
    return [name, spread(values), goal, "PASS" if passed(m) else "MISS"]


def summary(scenarios: dict, common: dict, startup: dict | None) -> None:
    section("Summary (studio / stock; median (min-max) over paired repeats)")
    peak_key = memory_keys(common)[0]
    pick = lambda key: scenarios.get(key)   # noqa: E731
    rows = []
    a, b, c, e = pick("a"), pick("b"), pick("c"), pick("e")
    rows.append(goal_line("a padded: steps/s", paired(a, a.arms[0], "steps_per_s") if a else [], "≥ 1.00",
                          lambda m: m >= 1.0))
    rows.append(goal_line("b chat: useful tokens/s", paired(b, b.arms[0], "useful_per_s") if b else [], "≥ 2",
                          lambda m: m >= 2.0))
    if c:
        rows.append(goal_line("c long chat: useful tokens/s (no goal)", paired(c, c.arms[0], "useful_per_s"), "-",
                              lambda m: True))
    # memory: the worst of the studio-default scenarios' medians (chat and long chat)
    mem = [(k, paired(s, s.arms[0], peak_key)) for k, s in (("b", b), ("c", c)) if s]
    mem = [(k, v) for k, v in mem if v]
    if mem:
        k, worst = max(mem, key=lambda kv: statistics.median(kv[1]))
        rows.append(goal_line(f"peak memory ({k}, worst of b/c)", worst, "≤ 1.0", lambda m: m <= 1.0))
    else:
        rows.append(["peak memory (b/c)", "not run", "≤ 1.0", "-"])
    if e:
        ratios = ttq_ratios(e, e.arms[0])
        if ratios or not e.runs:
            rows.append(goal_line("e time to quality", ratios, "≤ 0.5", lambda m: m <= 0.5))
        else:
            rows.append(["e time to quality", "threshold not reached by both arms", "≤ 0.5", "MISS"])
    else:
        rows.append(["e time to quality", "not run", "≤ 0.5", "-"])
    if startup:
        rows.append(["f lora-studio --help", f"{startup['help_s']:.2f} s, torch imported: {startup['torch']}",
                     "no torch", "PASS" if startup["torch"] == "False" else "MISS"])
    table("Goals", ["measure", "studio/stock", "goal", ""], rows)


# -- main -----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--model", default=BUNDLED, help=f"{BUNDLED} (default) or a local HF folder")
    parser.add_argument("--data", default=str(CHAT), help="chat data of scenarios a, b, d (messages jsonl)")
    parser.add_argument("--long-data", default=None, help="long chat data of scenario c (default: "
                        "resources/datasets/chat_long_sample.jsonl, else a generated stand-in)")
    parser.add_argument("--scenarios", default="a,b,c,e,f", help="which of a,b,c,d,e,f (d also with --ablation)")
    parser.add_argument("--ablation", action="store_true", help="add scenario d")
    parser.add_argument("--quick", action="store_true", help="1 repeat, fewer steps")
    parser.add_argument("--steps", type=int, default=None, help="steps per run, warm-up included (25; --quick 10)")
    parser.add_argument("--long-steps", type=int, default=None, help="steps of scenario c (15; --quick 6)")
    parser.add_argument("--warmup", type=int, default=3, help="first steps not timed")
    parser.add_argument("--repeats", type=int, default=None, help="runs per arm (3; --quick 1)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-seq-len", type=int, default=256, help="scenarios a, b, d")
    parser.add_argument("--long-max-seq-len", type=int, default=1024, help="scenario c")
    parser.add_argument("--lr", type=float, default=2e-4, help="scenarios a-d")
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads in every child "
                        "(default: torch's own default in a fresh process, the same for both arms)")
    parser.add_argument("--ttq-lr", type=float, default=1e-3, help="scenario e learning rate (constant schedule)")
    parser.add_argument("--ttq-max-steps", type=int, default=200, help="scenario e: give up after this many steps")
    parser.add_argument("--ttq-every", type=int, default=10, help="scenario e: score the held-out set every N steps")
    parser.add_argument("--ttq-threshold", type=float, default=0.5, help="scenario e: held-out accuracy to reach")
    parser.add_argument("--ttq-repeats", type=int, default=None, help="scenario e runs per arm (2; --quick 1)")
    parser.add_argument("--ttq-full", action="store_true", help="scenario e: train to --ttq-max-steps "
                        "instead of stopping at the threshold (the whole accuracy curve)")
    parser.add_argument("--no-window", action="store_true", help="scenario f: skip bench_window.py's launch time")
    args = parser.parse_args(argv)

    if args.child:
        try:
            out = child_main(json.loads(args.child))
        except Exception as e:  # one line back to the parent, the trace on stderr
            import traceback

            traceback.print_exc()
            out = {"status": "failed", "error": f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"}
        print(RESULT + json.dumps(out), flush=True)
        return 0

    if not os.environ.get("LORA_STUDIO_HOME"):
        # the studio's default home, named explicitly: the converted model is cached there once
        from studio.core.paths import studio_home

        os.environ["LORA_STUDIO_HOME"] = str(studio_home())
    steps = args.steps or (10 if args.quick else 25)
    long_steps = args.long_steps or (6 if args.quick else 15)
    repeats = args.repeats or (1 if args.quick else 3)
    ttq_repeats = args.ttq_repeats or (1 if args.quick else 2)
    keys = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    if args.ablation and "d" not in keys:
        keys.insert(keys.index("e") if "e" in keys else len(keys), "d")
    if steps <= args.warmup:
        parser.error(f"--steps ({steps}) must be more than --warmup ({args.warmup})")

    started = time.perf_counter()
    print(f"bench_speed {'(quick)' if args.quick else '(full)'}: {os.cpu_count()} CPUs, {platform.machine()}, "
          f"{platform.processor() or platform.system()}, python {platform.python_version()}")
    print("command: " + " ".join(shlex.quote(x) for x in [Path(sys.executable).name, *sys.argv]))
    print(f"LORA_STUDIO_HOME={os.environ['LORA_STUDIO_HOME']}", flush=True)

    scenarios: dict[str, Scenario] = {}
    startup = None
    train_keys = [k for k in keys if k in "abcde"]
    if train_keys:
        probe = run_child({"kind": "probe", "model_source": args.model, "threads": args.threads}, timeout=900)
        if "torch" not in probe:
            print(f"probe failed: {probe.get('error')}")
            return 1
        cuda = probe["cuda"] and args.device != "cpu"
        print(f"torch {probe['torch']}, {probe['threads']} torch threads in every child, device: "
              f"{'cuda (' + probe['gpu'] + ')' if cuda else 'cpu'}; model {args.model} -> {probe['model_dir']}")
        common = {"model_source": args.model, "model_dir": probe["model_dir"], "batch_size": args.batch_size,
                  "warmup": args.warmup, "seed": args.seed, "r": args.r, "alpha": args.alpha,
                  "device": args.device, "threads": probe["threads"], "cuda": cuda, "child_timeout": 3600}
        tmp = Path(tempfile.mkdtemp(prefix="bench-speed-"))
        studio_default = Arm("studio (defaults)", "studio")
        if "a" in keys:
            scenarios["a"] = Scenario("a", "padded: studio padding_free=false vs stock (same padding)", args.data,
                                      args.max_seq_len, steps, [Arm("studio padded", "studio", {"padding_free": False}),
                                                                STOCK], repeats, lr=args.lr)
        if "b" in keys:
            scenarios["b"] = Scenario("b", "chat sample: studio defaults vs stock pad-to-longest", args.data,
                                      args.max_seq_len, steps, [studio_default, STOCK], repeats, lr=args.lr)
        if "c" in keys:
            long_data = args.long_data or (str(LONG_CHAT) if LONG_CHAT.is_file() else None)
            if long_data is None:
                long_data = str(make_long_chat(tmp / "chat_long_standin.jsonl", seed=args.seed))
                print(f"(no {LONG_CHAT.relative_to(ROOT)} yet: scenario c uses a generated stand-in, {long_data})")
            scenarios["c"] = Scenario("c", "long chat: studio defaults vs stock pad-to-longest", long_data,
                                      args.long_max_seq_len, long_steps, [studio_default, STOCK], repeats, lr=args.lr)
        if "d" in keys:
            combos = [("studio neither", False, False), ("studio label_logits_only", False, True),
                      ("studio padding_free", True, False), ("studio both (defaults)", True, True)]
            arms = [Arm(name, "studio", {"padding_free": pf, "label_logits_only": ll}) for name, pf, ll in combos]
            scenarios["d"] = Scenario("d", "ablation on the chat sample: what each studio change pays", args.data,
                                      args.max_seq_len, steps, arms + [STOCK], repeats, lr=args.lr)
        if "e" in keys:
            from knowledge_task import write_task

            train_path, heldout_path = write_task(tmp / "knowledge", seed=args.seed)
            scenarios["e"] = Scenario("e", "time to quality on the invented-knowledge task", str(train_path), 256,
                                      args.ttq_max_steps, [studio_default, STOCK], ttq_repeats, lr=args.ttq_lr,
                                      lr_scheduler="constant",
                                      ttq={"heldout": str(heldout_path), "every": args.ttq_every,
                                           "threshold": args.ttq_threshold, "stop": not args.ttq_full})
        try:
            for key in keys:
                if key in scenarios:
                    run_scenario(scenarios[key], common)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)   # generated data (knowledge task, long-chat stand-in)
    else:
        common = {"cuda": False}
    if "f" in keys:
        startup = bench_startup(max(repeats, 3), window=not args.no_window)
    summary(scenarios, common, startup)
    print(f"\ntotal: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
