"""Benchmark: merge + export of an adapter into a Hugging Face folder, the studio's
`export.export_merged` against stock PEFT's `merge_and_unload()` + `save_pretrained()`, side by
side on the bundled SmolLM2-135M (issue 5 goals: time <= 1.1x stock, peak memory <= 1.2x the
model's size).

Each measurement runs in a fresh subprocess (so peak RSS is that job's alone), alternating
stock / studio, `--rounds` times; medians are printed with the minimum beside them. Peak memory is
the process's peak RSS (ru_maxrss) minus its RSS just before the job (after imports). Time is
wall time from loading the base model to the folder being written (the studio's includes the
fingerprint check, the tokenizer files, generation config and the atomic rename; stock writes
the model only; `--fsync` adds a third column, the studio's export with every file fsynced
before the rename). The adapter: LoRA r=16 on all 210 linear layers with random B (not zero), so
every layer really merges.

    .venv/bin/python tests/bench/bench_export.py              # 3 rounds, ~1 min on 2 CPU cores
    .venv/bin/python tests/bench/bench_export.py --rounds 5

Not a test: pytest does not collect bench_*.py files.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _job(mode: str, base: str, adapter: str, gallery: str, out: str) -> None:
    """Runs in the subprocess: one export, then its figures as a JSON line."""
    import warnings

    warnings.simplefilter("ignore")
    import psutil
    import torch  # noqa: F401  (imported before the baseline RSS, like the rest)
    import transformers
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from studio.core import export
    from studio.core.gallery import Gallery

    transformers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    rss0 = psutil.Process().memory_info().rss
    start = time.perf_counter()
    if mode == "stock":
        model = AutoModelForCausalLM.from_pretrained(base)
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        merged.save_pretrained(out)
    else:
        gallery = Gallery(gallery)
        export.export_merged(gallery.get("bench"), out, gallery=gallery, durable=mode == "studio-fsync")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    print(json.dumps({"seconds": seconds, "peak_bytes": peak}))


def _make_adapter(base: str, folder: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.01)
    model.save_pretrained(str(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fsync", action="store_true",
                        help="also time export_merged(durable=True), which fsyncs every file before the rename")
    parser.add_argument("--job", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        _job(*args.job)
        return

    import warnings

    warnings.simplefilter("ignore")
    import platform

    import torch
    import transformers

    from studio.core.gallery import Gallery
    from studio.core.models import resolve_source

    transformers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    resolved = resolve_source("bundled:smollm2-135m-instruct", progress=lambda m: print(m, file=sys.stderr))
    model_bytes = sum(f.stat().st_size for f in Path(resolved.path).glob("*.safetensors"))
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        _make_adapter(resolved.path, work / "adapter")
        gallery = Gallery(work / "gallery")
        gallery.import_folder(work / "adapter", name="bench", base_model="bundled:smollm2-135m-instruct")
        modes = ("stock", "studio") + (("studio-fsync",) if args.fsync else ())
        figures: dict[str, list[dict]] = {mode: [] for mode in modes}
        for i in range(args.rounds):
            for mode in modes:
                out = work / f"out-{mode}-{i}"
                proc = subprocess.run([sys.executable, __file__, "--job", mode, resolved.path, str(work / "adapter"),
                                       str(work / "gallery"), str(out)], capture_output=True, text=True,
                                      cwd=ROOT, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
                if proc.returncode != 0:
                    sys.exit(f"{mode} export failed:\n{proc.stderr[-2000:]}")
                figures[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                shutil.rmtree(out, ignore_errors=True)
                print(f"round {i + 1} {mode}: {figures[mode][-1]['seconds']:.2f} s, "
                      f"peak {figures[mode][-1]['peak_bytes'] / 2**20:.0f} MiB", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(mode, key):
        values = [f[key] for f in figures[mode]]
        return statistics.median(values), min(values)

    print(f"\nmerge + export of a LoRA r=16 (210 layers) into SmolLM2-135M-Instruct, fp32, "
          f"{model_bytes / 2**20:.0f} MiB of weights")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {args.rounds} rounds each, alternating, fresh processes\n")
    print(f"{'':<26}{'time s (median / min)':>24}{'peak RSS MiB (median / min)':>30}{'peak / model':>14}")
    labels = {"stock": "stock merge_and_unload", "studio": "studio export_merged",
              "studio-fsync": "studio, durable=True"}
    for mode, label in labels.items():
        if mode not in figures:
            continue
        t, tmin = med(mode, "seconds")
        p, pmin = med(mode, "peak_bytes")
        print(f"{label:<26}{t:>15.2f} / {tmin:<8.2f}{p / 2**20:>19.0f} / {pmin / 2**20:<10.0f}"
              f"{p / model_bytes:>12.2f}x")
    ratio = med("studio", "seconds")[0] / med("stock", "seconds")[0]
    print(f"\ntime, studio / stock: {ratio:.2f}x (goal <= 1.10x)")
    print(f"peak memory, studio / model size: {med('studio', 'peak_bytes')[0] / model_bytes:.2f}x (goal <= 1.20x)")


if __name__ == "__main__":
    main()
