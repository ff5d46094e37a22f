"""Data preparation at real size (issue 19): the studio's prepare_data against stock `datasets`, side by side.

    .venv/bin/python tests/bench/bench_data.py                          # 10k and 100k rows
    .venv/bin/python tests/bench/bench_data.py --rows 2000              # a quick check, ~1 min
    .venv/bin/python tests/bench/bench_data.py --rows 10000,100000,1000000 --num-proc 2 --keep /tmp/chat

Data: tests/bench/synth_chat.py's deterministic synthetic chats (messages format, one user and one
assistant turn of 20-400 words, ~435 tokens a row with SmolLM2's chat template), written once per size
into a temporary folder (or into --keep DIR, reused there when the file already exists).

Arms, each in its own subprocess (this script run again with --arm), timed around the preparation only
(the imports and the tokenizer load are not counted):
    studio          studio.core.data.prepare_data on resources/configs/default.toml's [data] with
                    data.path=<file>, data.max_seq_len=1024, the bundled SmolLM2-135M-Instruct tokenizer,
                    task causal-lm, seed 0 (format auto -> messages, 10% eval split). The child gets
                    LORA_STUDIO_HOME and HF_DATASETS_CACHE in a fresh folder per size (a cold start) and
                    LORA_STUDIO_DATA_PROCS=--num-proc.
    studio re-run   the same again with the same folders: what the studio's own cache saves (a studio
                    that caches nothing takes as long as the first run).
    stock           datasets.load_dataset("json", data_files=<file>, split="train", cache_dir=<fresh>)
                    then .map(batched=True, num_proc=--num-proc) applying tokenizer.apply_chat_template
                    (tokenize=True, truncation at 1024) to each row's messages, keeping input_ids only.
    stock re-run    the same with the same cache_dir: datasets' own cache (load and map both hit it).

Peak RSS is the child's ru_maxrss from os.wait4 (Linux, exact). With worker processes (--num-proc > 1)
it is the largest single process (the child or a reaped worker), not their sum. "RSS before prep" is
the child's peak after its imports and the tokenizer load, before the timed part: each arm's floor. rows/s counts the rows of the input file per second of preparation.

Goals (issue 19): at 100k rows the studio takes <= 1.0x stock's time and <= 1.5x its peak RSS; the
studio's rows/s at the largest size is >= 0.8x its rows/s at 10k (no superlinear cost); a re-run on
unchanged data and settings takes <= 5% of the first run.

The bundled model's GGUF is converted once per benchmark run in a set-up child (not measured) and its
folder linked into each size's fresh studio home, so the cold studio arm pays for data, not the model.

Runtime on 2 cores: about a minute at --rows 2000 (each child also spends ~5 s on imports and the
tokenizer). At the studio's pre-issue-19 speed (~1.2-2.5 ms/row, each run; stock ~1 ms/row) the default
10k,100k takes ~10 min, and 1M over an hour, with ~2 GB of data and several GB of caches in the temporary
folder (removed at the end; --keep keeps only the data files).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
CONFIG = ROOT / "resources" / "configs" / "default.toml"
MODEL = "bundled:smollm2-135m-instruct"
MAX_LEN = 1024
ARMS = ("studio", "studio re-run", "stock", "stock re-run")


# --- the children -------------------------------------------------------------------------------

def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _tokenizer():
    from studio.core.models import load_tokenizer, resolve_source

    return load_tokenizer(resolve_source(MODEL), False)


def studio_arm(file: str) -> dict:
    from studio.core.config import RunConfig
    from studio.core.data import prepare_data

    tok = _tokenizer()
    section = RunConfig.from_toml(CONFIG).with_overrides([f"data.path={file}", f"data.max_seq_len={MAX_LEN}"]).data
    before = _peak_kib()
    started = time.perf_counter()
    prepared = prepare_data(section, tok, "causal-lm", seed=0)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "before_kib": before, "train": len(prepared.train),
            "eval": len(prepared.eval) if prepared.eval is not None else None}


def stock_arm(file: str, cache: str, num_proc: int) -> dict:
    import datasets

    datasets.disable_progress_bars()
    tok = _tokenizer()

    def tokenize(batch):
        ids = []
        for messages in batch["messages"]:
            out = tok.apply_chat_template(messages, tokenize=True, truncation=True, max_length=MAX_LEN)
            ids.append(out["input_ids"] if hasattr(out, "keys") else out)  # a BatchEncoding in transformers 5
        return {"input_ids": ids}

    before = _peak_kib()
    started = time.perf_counter()
    rows = datasets.load_dataset("json", data_files=file, split="train", cache_dir=cache)
    mapped = rows.map(tokenize, batched=True, num_proc=num_proc if num_proc > 1 else None,
                      remove_columns=rows.column_names)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "before_kib": before, "train": len(mapped), "eval": None,
            "cache_files": len(mapped.cache_files)}


def setup_arm() -> dict:
    """Resolve the bundled model once (its GGUF is converted into LORA_STUDIO_HOME's cache)."""
    from studio.core.models import resolve_source
    from studio.core.paths import studio_home

    folder = Path(resolve_source(MODEL).path).resolve()
    return {"seconds": 0.0, "folder": str(folder), "home": str(studio_home().resolve())}


def child(args) -> None:
    try:
        if args.arm == "setup":
            result = setup_arm()
        elif args.arm == "studio":
            result = studio_arm(args.file)
        else:
            result = stock_arm(args.file, args.cache, args.num_proc)
    except BaseException as e:  # one line for the parent's table
        msg = " ".join(str(e).split()) or type(e).__name__
        print(json.dumps({"error": f"{type(e).__name__}: {msg}"}), flush=True)
        raise SystemExit(1)
    print(json.dumps(result), flush=True)


# --- the parent ---------------------------------------------------------------------------------

def run_arm(arm: str, file: Path, cache: Path, num_proc: int, studio_home: Path) -> dict:
    """One child; returns its JSON plus peak_kib (os.wait4's ru_maxrss) and wall (the whole child),
    or {"error": one line}."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--arm", arm.split()[0], "--file", str(file),
           "--cache", str(cache), "--num-proc", str(num_proc)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", LORA_STUDIO_HOME=str(studio_home),
               HF_DATASETS_CACHE=str(studio_home / "hf-datasets"), LORA_STUDIO_DATA_PROCS=str(num_proc),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        wall = time.perf_counter() - started
        err.seek(0)
        stderr = err.read()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    if "error" not in result and (proc.returncode != 0 or "seconds" not in result):
        last = [line.strip() for line in stderr.splitlines() if line.strip()]
        result = {"error": f"exit {proc.returncode}: {last[-1] if last else 'no output'}"}
    result.update(peak_kib=usage.ru_maxrss, wall=wall)
    return result


def human_kib(kib: float) -> str:
    mib = kib / 1024
    return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def ratio(a: dict, b: dict, key: str) -> float | None:
    if "error" in a or "error" in b or not b.get(key):
        return None
    return a[key] / b[key]


def fmt_ratio(value: float | None, goal: str) -> str:
    return ("n/a (an arm failed)" if value is None else f"{value:.2f}") + f"   (goal {goal})"


def cell_error(result: dict) -> str:
    return "error: " + result["error"].replace("|", "/")[:120]


def table(results: dict[int, dict[str, dict]]) -> list[str]:
    headers = ["rows", "studio prep s", "studio peak RSS", "studio rows/s", "studio re-run s (% of first)",
               "stock load+map s", "stock peak RSS", "stock rows/s", "stock re-run s"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" for _ in headers) + "|"]
    for n, arms in results.items():
        cells = [f"{n:,}"]
        for name in ("studio", "stock"):
            first, again = arms[name], arms[f"{name} re-run"]
            if "error" in first:
                cells += [cell_error(first), "", ""]
            else:
                cells += [f"{first['seconds']:.1f}", human_kib(first["peak_kib"]), f"{n / first['seconds']:,.0f}"]
            if "error" in again:
                cells.append(cell_error(again))
            elif name == "studio" and "error" not in first:
                cells.append(f"{again['seconds']:.1f} ({100 * again['seconds'] / first['seconds']:.0f}%)")
            else:
                cells.append(f"{again['seconds']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary(results: dict[int, dict[str, dict]]) -> list[str]:
    sizes = list(results)
    lines = []
    for n in sizes:
        arms = results[n]
        lines.append(f"studio/stock time at {n:,}: {fmt_ratio(ratio(arms['studio'], arms['stock'], 'seconds'), '<= 1.0 at 100k')}")
    for n in sizes:
        arms = results[n]
        lines.append(f"studio/stock peak RSS at {n:,}: {fmt_ratio(ratio(arms['studio'], arms['stock'], 'peak_kib'), '<= 1.5')}")
    small, large = min(sizes), max(sizes)
    for name in ("studio", "stock"):
        if small == large:
            lines.append(f"{name} rows/s at the largest vs the smallest size: n/a (one size)   (goal >= 0.8, "
                         f"{'largest' if name == 'studio' else 'for reference'})")
            continue
        a, b = results[large][name], results[small][name]
        # rows/s ratio = (large / t_large) / (small / t_small)
        value = None if "error" in a or "error" in b else (large / a["seconds"]) / (small / b["seconds"])
        goal = ">= 0.8" if name == "studio" else ">= 0.8, for reference"
        lines.append(f"{name} rows/s at {large:,} vs at {small:,}: {fmt_ratio(value, goal)}")
    for n in sizes:
        arms = results[n]
        value = ratio(arms["studio re-run"], arms["studio"], "seconds")
        share = "n/a (an arm failed)" if value is None else f"{100 * value:.1f}%"
        stock = ratio(arms["stock re-run"], arms["stock"], "seconds")
        stock_share = "n/a" if stock is None else f"{100 * stock:.1f}%"
        lines.append(f"studio re-run share at {n:,}: {share}   (goal <= 5%; stock's: {stock_share})")
    return lines


def notes(results: dict[int, dict[str, dict]]) -> list[str]:
    lines = []
    for n, arms in results.items():
        parts = []
        for name in ("studio", "stock"):
            r = arms[name]
            if "error" not in r:
                kept = f"{r['train']:,} train" + (f" + {r['eval']:,} eval" if r.get("eval") is not None else "")
                parts.append(f"{name}: {kept} rows, RSS before prep {human_kib(r['before_kib'])}, "
                             f"child wall {r['wall']:.1f} s")
        if parts:
            lines.append(f"{n:,} rows: " + "; ".join(parts))
    return lines


def parent(args) -> None:
    import datasets
    import transformers

    from synth_chat import write_chat

    sizes = [int(s.replace("_", "")) for s in args.rows.split(",") if s.strip()]
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    data_dir = Path(args.keep) if args.keep else work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, dict]] = {}
    began = time.perf_counter()
    try:
        # The bundled model is a GGUF the studio converts once into its home's cache: convert it here,
        # outside the measured children, and link the converted folder into each size's fresh home.
        model_home = work / "model_home"
        setup = run_arm("setup", data_dir, work / "unused", args.num_proc, model_home)
        if "error" in setup:
            raise SystemExit(f"cannot resolve {MODEL}: {setup['error']}")
        model_folder = Path(setup["folder"])
        try:
            model_rel = model_folder.relative_to(setup["home"])
        except ValueError:  # resolved outside the studio's home (a bundled folder): nothing to link
            model_rel = None
        for n in sizes:
            file = data_dir / f"synth_chat_{n}_seed{args.seed}.jsonl"
            if not file.exists():
                started = time.perf_counter()
                write_chat(file, n, seed=args.seed)
                log(f"{n:,} rows: wrote {file} ({file.stat().st_size / 2**20:.0f} MiB) in "
                    f"{time.perf_counter() - started:.1f} s")
            home, cache = work / f"studio_home_{n}", work / f"hf_cache_{n}"
            if model_rel is not None:
                (home / model_rel).parent.mkdir(parents=True, exist_ok=True)
                (home / model_rel).symlink_to(model_folder, target_is_directory=True)
            results[n] = {}
            for arm in ARMS:
                r = run_arm(arm, file, cache, args.num_proc, home)
                results[n][arm] = r
                shown = r["error"] if "error" in r else f"{r['seconds']:.1f} s, peak {human_kib(r['peak_kib'])}"
                log(f"{n:,} rows: {arm}: {shown}")
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nData preparation at real size: synthetic chats ({MODEL} tokenizer, max_seq_len {MAX_LEN}), "
          f"--num-proc {args.num_proc}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"datasets {datasets.__version__}, transformers {transformers.__version__}\n")
    print("\n".join(table(results)))
    print()
    print("\n".join(summary(results)))
    print()
    print("\n".join(notes(results)))
    print(f"\ntotal {time.perf_counter() - began:.0f} s")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Data preparation at real size: the studio against stock datasets.")
    ap.add_argument("--rows", default="10000,100000", help="comma-separated sizes (default 10000,100000)")
    ap.add_argument("--num-proc", type=int, default=1, help="stock map's num_proc; LORA_STUDIO_DATA_PROCS")
    ap.add_argument("--seed", type=int, default=0, help="the synthetic data's seed")
    ap.add_argument("--keep", metavar="DIR", help="write (and reuse) the synthetic files here")
    ap.add_argument("--arm", choices=("setup", "studio", "stock"), help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.num_proc < 1:
        ap.error("--num-proc must be 1 or more")
    if args.arm:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
