"""Training speed with the base held in bf16 against fp32, on this CPU (issue 18), side by side.

    .venv/bin/python tests/bench/bench_storage_speed.py              # ~20 min on 2 cores
    .venv/bin/python tests/bench/bench_storage_speed.py --steps 4    # quicker, noisier

Set-up: the bundled SmolLM2-135M-Instruct, LoRA r16 all-linear, resources/datasets/
chat_long_sample.jsonl at max_seq_len 1024, batch 4, lr 2e-4 constant, the same seed. Four arms:
    studio auto     the defaults: model.dtype and train.precision auto (bf16 on a CPU with AMX)
    studio fp32     model.dtype = fp32, train.precision = fp32
    stock fp32      tests/bench/stock_train.py: Trainer + PEFT, the base in fp32
    stock bf16      the same with TrainingArguments(bf16=True): autocast over the fp32 base
Useful tokens/s counts the real (non-padding) tokens of each step, over the steps after the first
(the first pays for warm-up). The studio arms also report the eval loss after the same steps (the
goal: auto within 2% of fp32). Achieved FLOP/s is 4 x the frozen base's matmul parameters x
tokens/s (forward 2N, backward through frozen weights 2N; the adapter's own share is ~2%),
against a bf16 and an fp32 matmul's measured rate on this machine (2048^3, the same threads).
Goal (issue 18): studio auto >= 2x studio fp32 useful tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
DATA = ROOT / "resources" / "datasets" / "chat_long_sample.jsonl"


def matmul_rate(dtype_name: str, n: int = 2048, repeats: int = 5) -> float:
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - started)


def studio_arm(sets: list[str], steps: int, out: Path, batch: int = 4, seed: int = 0) -> dict:
    base = [f"data.path={DATA}", "data.max_seq_len=1024", f"train.batch_size={batch}", f"train.max_steps={steps}",
            "train.learning_rate=2e-4", "train.save_every=0", f"train.eval_every={steps}", "data.eval_fraction=0.1",
            "train.gallery=false", f"train.output_dir={out}", "telemetry.every=0", f"train.seed={seed}"]
    cmd = [sys.executable, "-m", "studio", "train", str(ROOT / "resources/configs/default.toml"), "--json"]
    cmd += [a for s in base + sets for a in ("--set", s)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"studio arm failed: {proc.stderr.strip().splitlines()[-1:]}")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    started = next(e for e in events if e["type"] == "run_started")
    rates = [e["tokens_per_s"] for e in events if e["type"] == "step" and e.get("tokens_per_s")][1:]
    evals = [e for e in events if e["type"] == "eval"]
    return {"tokens_per_s": sum(rates) / len(rates) if rates else None,
            "eval_loss": evals[-1].get("eval_loss") if evals else None,
            "held": f"{started.get('precision')}, base {started.get('base_dtype')}"}


def stock_arm(model_dir: str, steps: int, bf16: bool, batch: int = 4) -> dict:
    from transformers import TrainerCallback

    import stock_train

    counted: list[int] = []
    times: list[float] = []

    def wrap(collator):
        def collate(rows):
            batch = collator(rows)
            counted.append(int(batch["attention_mask"].sum()))
            return batch
        return collate

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    trainer = stock_train.build_trainer(model_dir, str(DATA), max_seq_len=1024, batch_size=batch, max_steps=steps,
                                        lr_scheduler="constant", collator_wrapper=wrap, callbacks=[Clock()],
                                        device="cpu", verbose=False, bf16=bf16)
    started = time.perf_counter()
    trainer.train()
    spans = [b - a for a, b in zip([started] + times[:-1], times)]
    tokens = counted[1:len(spans)]
    return {"tokens_per_s": sum(tokens) / sum(spans[1:]) if len(spans) > 1 else None,
            "held": "bf16 autocast, base fp32" if bf16 else "fp32"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--arms", default="studio-auto,studio-fp32,stock-fp32,stock-bf16")
    parser.add_argument("--seed", type=int, default=0, help="the studio arms' train.seed")
    parser.add_argument("--batch", type=int, default=4, help="examples a step (the issue's set-up: 4)")
    args = parser.parse_args(argv)
    import torch

    from studio.core.models import resolve_source

    model_dir = resolve_source("bundled:smollm2-135m-instruct").path
    tmp = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    results = {}
    for arm in args.arms.split(","):
        print(f"{arm} ...", file=sys.stderr)
        if arm == "studio-auto":
            results[arm] = studio_arm([], args.steps, tmp / arm, args.batch, args.seed)
        elif arm == "studio-fp32":
            results[arm] = studio_arm(["model.dtype=fp32", "train.precision=fp32"], args.steps, tmp / arm, args.batch, args.seed)
        elif arm == "stock-fp32":
            results[arm] = stock_arm(model_dir, args.steps, bf16=False, batch=args.batch)
        elif arm == "stock-bf16":
            results[arm] = stock_arm(model_dir, args.steps, bf16=True, batch=args.batch)
        print(f"{arm}: {results[arm]}", file=sys.stderr)
    from safetensors import safe_open

    matmul_params = 0
    for f in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(f), "pt") as h:
            for k in h.keys():
                shape = h.get_slice(k).get_shape()
                if len(shape) == 2 and "embed" not in k:
                    matmul_params += shape[0] * shape[1]
    config = json.loads((Path(model_dir) / "config.json").read_text())
    if config.get("tie_word_embeddings", False):
        matmul_params += config["vocab_size"] * config["hidden_size"]   # the output layer reuses the embedding
    peaks = {d: matmul_rate(d) for d in ("bf16", "fp32")}
    print(f"\nSmolLM2-135M, LoRA r16 all-linear, chat_long_sample, max_seq_len 1024, batch {args.batch}, {args.steps} steps, "
          f"{torch.get_num_threads()} threads; matmul 2048^3: bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s, "
          f"fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s\n")
    base = results.get("studio-fp32", {}).get("tokens_per_s")
    print("| arm | computes | useful tokens/s | vs studio fp32 | achieved GFLOP/s | of bf16 peak | eval loss |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for arm, r in results.items():
        tps = r.get("tokens_per_s") or 0
        flops = 4 * matmul_params * tps
        ratio = f"{tps / base:.2f}" if base else "-"
        loss = f"{r['eval_loss']:.4f}" if r.get("eval_loss") is not None else "-"
        print(f"| {arm} | {r['held']} | {tps:.0f} | {ratio} | {flops / 1e9:.0f} | {flops / peaks['bf16']:.0%} | {loss} |")
    fp32_loss = results.get("studio-fp32", {}).get("eval_loss")
    auto_loss = results.get("studio-auto", {}).get("eval_loss")
    if fp32_loss and auto_loss:
        print(f"\nstudio auto's eval loss is {abs(auto_loss - fp32_loss) / fp32_loss:.2%} from studio fp32's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
