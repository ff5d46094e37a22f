"""Peak memory of a run with the base held in fp32, bf16 and 4-bit, against the memory plan.

    .venv/bin/python tests/bench/bench_memory.py                 # the ~1B Llama (issue 18), ~15 min on 2 cores
    .venv/bin/python tests/bench/bench_memory.py --model smollm2 # the bundled SmolLM2-135M, ~3 min
    .venv/bin/python tests/bench/bench_memory.py --checkpointing # every arm with gradient checkpointing

Each arm is a real `lora-studio train` in its own process, 2 optimizer steps on the bundled text
sample packed into full blocks; its peak RSS is the kernel's (os.wait4's ru_maxrss for that process alone). Beside it,
`lora-studio plan`'s estimate for the same config, and their ratio. The ~1B model is a Llama with
TinyLlama-1.1B's shape (22 layers, hidden 2048, MLP 5632, 32 heads, 4 KV heads) and SmolLM2's
tokenizer (vocab 49152), random weights saved as bf16 safetensors in a temporary folder: memory
does not depend on the values.

Goals (issue 18): bf16 <= 0.6x fp32, 4bit <= 0.35x fp32, the plan within +-25% of each peak.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# plain text packed into blocks of exactly max_seq_len: every step computes batch x length tokens,
# the worst case the plan estimates (chat rows shorter than max_seq_len cost less)
DATA = ROOT / "resources" / "datasets" / "text_sample.txt"
ARMS = {   # label -> overrides
    "fp32": ["model.dtype=fp32", "model.quantize=none", "train.precision=fp32"],
    "bf16": ["model.dtype=bf16", "model.quantize=none", "train.precision=bf16"],
    "4bit": ["model.dtype=bf16", "model.quantize=4bit", "train.precision=bf16"],
}


def build_1b(folder: Path) -> str:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from studio.core.models import load_tokenizer, resolve_source

    resolved = resolve_source("bundled:smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(resolved.path)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                         num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    del model, load_tokenizer
    return str(folder)


def run_arm(source: str, overrides: list[str], out: Path, steps: int, batch: int, length: int) -> dict:
    sets = [f"model.source={source}", f"train.max_steps={steps}", f"train.batch_size={batch}",
            f"data.max_seq_len={length}", "data.eval_fraction=0", "train.save_every=0", "train.eval_every=0",
            "train.gallery=false", f"train.output_dir={out}", "telemetry.every=0", f"data.path={DATA}",
            "data.format=text", "data.pack=true", *overrides]
    config = ROOT / "resources" / "configs" / "default.toml"
    from studio.core.plan import plan_for

    plan = plan_for(str(config), sets)
    cmd = [sys.executable, "-m", "studio", "train", str(config)] + [a for s in sets for a in ("--set", s)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # besides the kernel's peak RSS: the peak of anonymous memory (what cannot be dropped) and of
    # file-backed pages (a mapped checkpoint, which the kernel can drop), sampled every 0.1 s
    samples = {"anon": 0, "file": 0, "anon_at": 0.0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                text = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                return
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            anon = int(fields.get("RssAnon", "0 kB").split()[0]) * 1024
            file = int(fields.get("RssFile", "0 kB").split()[0]) * 1024
            if anon > samples["anon"]:
                samples["anon"], samples["anon_at"] = anon, time.perf_counter() - started
            samples["file"] = max(samples["file"], file)
            stop.wait(0.1)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    stop.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"arm failed ({proc.returncode}): {err.strip().splitlines()[-1] if err.strip() else ''}")
    peak = usage.ru_maxrss * 1024   # KiB on Linux
    return {"peak_bytes": peak, "plan_bytes": plan.peak_bytes, "plan": plan.to_dict(),
            "anon_peak_bytes": samples["anon"], "anon_peak_at_s": samples["anon_at"],
            "file_peak_bytes": samples["file"], "seconds": time.perf_counter() - started}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="1b", help="1b (built from a config), smollm2, or a model folder")
    parser.add_argument("--arms", default="fp32,bf16,4bit")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--checkpointing", action="store_true", help="train.gradient_checkpointing = true "
                        "in every arm (as QLoRA runs do)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep-model", metavar="DIR", help="build the ~1B model into DIR once and reuse it")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        if args.model == "1b":
            folder = Path(args.keep_model) if args.keep_model else tmp / "llama-1b"
            if not (folder / "config.json").is_file():
                print("building the ~1B Llama (random bf16 weights) ...", file=sys.stderr)
                build_1b(folder)
            source = str(folder)
        elif args.model == "smollm2":
            source = "bundled:smollm2-135m-instruct"
        else:
            source = args.model
        results = {}
        for arm in args.arms.split(","):
            print(f"{arm} ...", file=sys.stderr)
            sets = ARMS[arm] + (["train.gradient_checkpointing=true"] if args.checkpointing else [])
            results[arm] = run_arm(source, sets, tmp / "runs", args.steps, args.batch, args.length)
            r = results[arm]
            print(f"{arm}: peak RSS {r['peak_bytes'] / 2**30:.2f} GiB (anonymous {r['anon_peak_bytes'] / 2**30:.2f} "
                  f"at {r['anon_peak_at_s']:.0f} s, file-backed {r['file_peak_bytes'] / 2**30:.2f}), plan "
                  f"{r['plan_bytes'] / 2**30:.2f} GiB ({r['plan_bytes'] / r['peak_bytes']:.2f}x), {r['seconds']:.0f} s",
                  file=sys.stderr)
        if args.json:
            print(json.dumps(results, indent=1))
        base = results.get("fp32", {}).get("peak_bytes")
        print(f"\nmodel {args.model}, batch {args.batch} x {args.length} tokens, {args.steps} steps, CPU, gradient "
              f"checkpointing {'on' if args.checkpointing else 'off'}\n")
        print("| storage | peak RSS | vs fp32 | peak anonymous | plan | plan / measured |")
        print("| --- | --- | --- | --- | --- | --- |")
        for arm, r in results.items():
            ratio = f"{r['peak_bytes'] / base:.2f}" if base else "-"
            print(f"| {arm} | {r['peak_bytes'] / 2**30:.2f} GiB | {ratio} | {r['anon_peak_bytes'] / 2**30:.2f} GiB | "
                  f"{r['plan_bytes'] / 2**30:.2f} GiB | "
                  f"{r['plan_bytes'] / r['peak_bytes']:.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
