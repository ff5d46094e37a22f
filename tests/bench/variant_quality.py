"""Does every variant learn with the defaults a person gets? Each variant is trained from the CLI
(`lora-studio train`, a fresh process) on the invented-knowledge task (knowledge_task.py) with
only the task's settings given (data, epochs, batch size, learning rate) and every variant option
at its default; the adapter is then loaded with stock PEFT (`PeftModel.from_pretrained`) and
scored on the held-out paraphrased questions. Beside it, the same variant in a plain PEFT loop
(`--plain`): peft's own config at peft's defaults, AdamW, the same batches, epochs and seed,
constant learning rate, no clipping -- the "plain loop" of issue 17, for the variants peft has.

Score: a held-out question counts as answered when greedy decoding would say exactly the gold
answer and then end the turn (every gold token and the end-of-turn marker is the argmax given the
gold prefix; bench_speed.heldout_accuracy, one forward pass per question).

    .venv/bin/python tests/bench/variant_quality.py                       # every variant, studio only
    .venv/bin/python tests/bench/variant_quality.py --plain               # ... and the plain loops
    .venv/bin/python tests/bench/variant_quality.py --plain --seeds 0,1,2       # the README's table
    .venv/bin/python tests/bench/variant_quality.py --variants vera,adalora --plain --set variant.r=8

The plain loop's learning rate is the task's, times the variant's own ratio where its paper
trains at another rate than LoRA (PLAIN_LR_SCALE: VeRA's vectors ~10x, Kopiczko et al. 2024,
Tables 8-9), so that each plain loop is the variant as its paper runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
for _key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_key, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VARIANTS = ("lora", "lora-plus", "vera", "lora-fa", "lora-drop", "adalora", "dora", "delta-lora")
PLAIN = ("lora", "lora-plus", "vera", "lora-fa", "adalora", "dora")   # the ones peft implements
PLAIN_LR_SCALE = {"vera": 10.0}


def studio_run(variant: str, data: Path, out: Path, args) -> dict:
    """Train one variant through the CLI; returns the run folder and its loss curve."""
    cmd = [sys.executable, "-m", "studio", "train", str(ROOT / "resources/configs/default.toml"),
           "--set", f"variant.name={variant}", "--set", f"data.path={data}", "--set", "data.eval_fraction=0",
           "--set", f"data.max_seq_len={args.max_seq_len}",
           "--set", f"train.epochs={args.epochs}", "--set", f"train.batch_size={args.batch_size}",
           "--set", f"train.learning_rate={args.lr}", "--set", f"train.seed={args.seed}",
           "--set", f"train.output_dir={out}", "--set", "train.gallery=false", "--set", "train.save_every=0",
           "--json"]
    for item in args.set:
        cmd += ["--set", item]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    finished = [e for e in events if e.get("type") == "run_finished"]
    if proc.returncode != 0 or not finished or finished[-1].get("status") != "completed":
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"studio {variant}: exit {proc.returncode}: {' | '.join(tail)}")
    started_ev = next(e for e in events if e.get("type") == "run_started")
    losses = [e["loss"] for e in events if e.get("type") == "step" and e.get("loss") is not None]
    return {"run_dir": Path(started_ev["run_dir"]), "losses": losses, "seconds": seconds,
            "steps": started_ev["total_steps"], "per_epoch": -(-started_ev["train_examples"] // args.batch_size)}


def plain_run(variant: str, model_dir: str, data: Path, out: Path, args) -> dict:
    """The variant in a plain PEFT loop; saves the adapter into `out`."""
    import torch
    from peft import AdaLoraConfig, LoraConfig, VeraConfig, get_peft_model
    from peft.optimizers import create_lorafa_optimizer, create_loraplus_optimizer
    from stock_train import IGNORE, load_chat_dataset, load_tokenizer
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, set_seed

    tok = load_tokenizer(model_dir)
    dataset, _ = load_chat_dataset(str(data), tok, args.max_seq_len, verbose=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    set_seed(args.seed)
    lr = args.lr * PLAIN_LR_SCALE.get(variant, 1.0)
    per_epoch = -(-len(dataset) // args.batch_size)
    total = max(math.ceil(per_epoch * args.epochs), 1)   # the Trainer's count (training.planned_steps)
    common = dict(target_modules="all-linear", task_type="CAUSAL_LM")
    if variant == "vera":
        config = VeraConfig(r=256, d_initial=0.1, save_projection=True, **common)
    elif variant == "adalora":
        config = AdaLoraConfig(init_r=12, target_r=8, lora_alpha=32, total_step=total, **common)
    else:
        config = LoraConfig(r=16, lora_alpha=32, use_dora=variant == "dora", **common)
    model = get_peft_model(model, config)
    if variant == "lora-plus":
        opt = create_loraplus_optimizer(model, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=16.0)
    elif variant == "lora-fa":
        opt = create_lorafa_optimizer(model, r=16, lora_alpha=32, lr=lr)
    else:
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    collate = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=IGNORE)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    losses, step, started = [], 0, time.perf_counter()
    while step < total:   # epochs of a fresh permutation each; a fractional last epoch stops early
        order = torch.randperm(len(dataset), generator=gen).tolist()
        for i in range(0, len(order), args.batch_size):
            if step == total:
                break
            batch = collate([dataset[j] for j in order[i:i + args.batch_size]])
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            if variant == "adalora":
                model.base_model.update_and_allocate(step)
            opt.zero_grad()
            losses.append(float(loss))
            step += 1
    model.save_pretrained(str(out))
    (out / "losses.json").write_text(json.dumps(losses), encoding="utf-8")
    return {"run_dir": out, "losses": losses, "seconds": time.perf_counter() - started, "steps": step,
            "per_epoch": per_epoch}


def score(model_dir: str, adapter_dir: Path, heldout: Path) -> tuple[int, int]:
    """(answered, questions) for an adapter loaded with stock PEFT on the base model."""
    import torch
    from bench_speed import heldout_accuracy, heldout_batch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(adapter_dir) if (adapter_dir / "tokenizer_config.json").is_file()
                                        else model_dir)
    items = [json.loads(line) for line in heldout.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = heldout_batch(tok, items)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    accuracy = heldout_accuracy(model, rows, pad)
    return round(accuracy * len(rows)), len(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--plain", action="store_true", help="also the plain PEFT loop of each variant peft has")
    parser.add_argument("--no-studio", action="store_true", help="only the plain loops")
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--seeds", default="0", help="training seeds, e.g. 0,1,2 (each variant and arm runs once per seed)")
    parser.add_argument("--task-seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="more --set for the studio runs")
    parser.add_argument("--keep", default=None, help="keep run folders here (default: a temporary folder)")
    args = parser.parse_args(argv)

    import transformers
    from knowledge_task import write_task

    from studio.core.models import resolve_source

    transformers.logging.set_verbosity_error()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="variant-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    train, heldout = write_task(work / "task", seed=args.task_seed)
    model_dir = resolve_source("bundled:smollm2-135m-instruct").path
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    print(f"task: {train} ({sum(1 for _ in open(train))} conversations), {heldout}; epochs {args.epochs}, "
          f"batch {args.batch_size}, lr {args.lr}, seeds {args.seeds}; extra: {' '.join(args.set) or '-'}", flush=True)
    results: dict[tuple[str, str], list] = {}   # (variant, arm) -> per seed (answered, total, last-epoch loss)
    for variant in variants:
        arms = [] if args.no_studio else ["studio"]
        if args.plain and variant in PLAIN:
            arms.append("plain")
        for arm in arms:
            for seed in seeds:
                args.seed = seed
                try:
                    if arm == "studio":
                        result = studio_run(variant, train, work / "studio", args)
                        adapter = result["run_dir"] / "adapter"
                    else:
                        adapter = work / "plain" / f"{variant}-seed{seed}"
                        result = plain_run(variant, model_dir, train, adapter, args)
                    answered, total = score(model_dir, adapter, heldout)
                except Exception as e:   # one failure must not hide the other rows
                    print(f"{variant:<11} {arm:<6} seed {seed} FAILED: {e}", flush=True)
                    results.setdefault((variant, arm), []).append(None)
                    continue
                losses = result["losses"]
                last = losses[-min(result["per_epoch"], len(losses)):]   # the last epoch's steps
                mean_last = sum(last) / len(last)
                results.setdefault((variant, arm), []).append((answered, total, mean_last))
                print(f"{variant:<11} {arm:<6} seed {seed}: {answered}/{total}  loss {losses[0]:.3f}, last epoch's "
                      f"mean {mean_last:.4f}  ({result['steps']} steps, {result['seconds']:.0f} s)", flush=True)
    print()
    print(f"| variant | studio: held-out answered (seed {', '.join(map(str, seeds))}) | plain PEFT loop | "
          "studio: last epoch's loss | plain: last epoch's loss |")
    print("| --- | --- | --- | --- | --- |")

    def cell(runs) -> tuple[str, str]:
        if not runs:
            return "", ""
        if any(r is None for r in runs):
            return "failed", ""
        answered = " + ".join(str(r[0]) for r in runs)
        total = sum(r[1] for r in runs)
        summed = f"{answered} = {sum(r[0] for r in runs)}/{total}" if len(runs) > 1 else f"{answered}/{total}"
        return summed, f"{sum(r[2] for r in runs) / len(runs):.3f}"

    for variant in variants:
        studio, studio_loss = cell(results.get((variant, "studio")))
        plain, plain_loss = cell(results.get((variant, "plain")))
        missing = "(not in peft)" if variant not in PLAIN else "(not run: --plain)"
        print(f"| {variant} | {studio} | {plain or missing} | {studio_loss} | {plain_loss} |")
    if not args.keep:
        print(f"(run folders in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
