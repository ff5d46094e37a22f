"""Prepared datasets, cached: a re-run on the same data starts training in seconds.

    key = cache_key(files, tokenizer, settings)
    hit = load(key)            # (train, eval, meta) memory-mapped from the studio's cache, or None
    save(key, train, eval, meta)
    clean(keep=KEEP)           # the least recently used entries go

The key is the content of every data file (xxhash, read in blocks), the tokenizer (its
vocabulary and rules, special tokens and chat template), and every setting that changes the
examples (format, task, max_seq_len, pack, split, columns, seed, eval cap) with a version of this
code. Entries are folders under <studio home>/cache/data/<key>/ (train.arrow, eval.arrow, meta.json),
written atomically (into a temporary folder, then one rename) and read back with
datasets.Dataset.from_file (Arrow, memory-mapped: nothing is loaded into RAM). datasets' own fingerprinting keys its map cache on
the Python objects (the tokenizer pickled whole) and the path of the file, not its content, and
keeps every version it ever wrote; hence this small cache of our own.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .paths import atomic_dir, cache_dir

VERSION = "1"      # bump when the examples prepare_data makes change for the same input
KEEP = 8           # prepared datasets kept; the least recently used beyond this are removed
_BLOCK = 8 * 2 ** 20


def root() -> Path:
    return cache_dir("data")


def file_hash(path: str | os.PathLike) -> str:
    """The content hash of a file, read in 8 MiB blocks (xxh3-128: ~10 GB/s, so a 2 GB file adds
    a fraction of a second)."""
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def tokenizer_hash(tokenizer) -> str:
    """What in a tokenizer changes the ids of a text: its rules and vocabulary (a fast tokenizer's
    JSON), special tokens, chat template and class."""
    import xxhash

    h = xxhash.xxh3_128()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode("utf-8"))
    else:   # a slow tokenizer: its vocabulary
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode("utf-8"))
    h.update(json.dumps([type(tokenizer).__name__, tokenizer.special_tokens_map,
                         getattr(tokenizer, "chat_template", None), tokenizer.eos_token_id,
                         getattr(tokenizer, "add_bos_token", None), getattr(tokenizer, "add_eos_token", None)],
                        sort_keys=True, default=str).encode("utf-8"))
    return h.hexdigest()


def cache_key(files: list[str], tokenizer, settings: dict) -> str:
    import xxhash

    h = xxhash.xxh3_128()
    h.update(json.dumps({"version": VERSION, "files": [file_hash(f) for f in files],
                         "tokenizer": tokenizer_hash(tokenizer), "settings": settings},
                        sort_keys=True, default=str).encode("utf-8"))
    return h.hexdigest()


def load(key: str):
    """(train, eval or None, meta) of a cached entry, or None when there is none (or it is damaged:
    then it is removed and the data is prepared again)."""
    import datasets

    folder = root() / key
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        train = datasets.Dataset.from_file(str(folder / "train.arrow"))
        evaluation = (datasets.Dataset.from_file(str(folder / "eval.arrow")) if (folder / "eval.arrow").is_file()
                      else None)
    except Exception:   # a damaged entry is a miss, never an error
        shutil.rmtree(folder, ignore_errors=True)
        return None
    os.utime(meta_path)   # recently used
    return train, evaluation, meta


def save(key: str, train, evaluation, meta: dict):
    """Write an entry (atomically) and read it back memory-mapped: (train, eval)."""
    folder = root() / key
    with atomic_dir(folder, durable=False) as tmp:
        # one Arrow file each, written a batch at a time with any selection or split applied
        # (save_to_disk materialises a whole shard of a selected dataset in memory: 1 GB at 100k rows)
        train.flatten_indices(cache_file_name=str(tmp / "train.arrow"))
        if evaluation is not None:
            evaluation.flatten_indices(cache_file_name=str(tmp / "eval.arrow"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    clean()
    hit = load(key)
    if hit is None:   # pragma: no cover - the folder was just written
        return train, evaluation
    return hit[0], hit[1]


def clean(keep: int = KEEP) -> list[Path]:
    """Remove the least recently used entries beyond `keep`, and work folders of runs that died
    (older than a day); returns what was removed."""
    base = root()
    entries = sorted((p for p in base.iterdir() if (p / "meta.json").is_file()),
                     key=lambda p: (p / "meta.json").stat().st_mtime, reverse=True)
    removed = entries[keep:]
    now = time.time()
    removed += [p for p in base.glob("work-*") if p.is_dir() and now - p.stat().st_mtime > 86400]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def work_folder(key: str) -> Path:
    """Where the intermediate Arrow files of one preparation go (removed when it ends)."""
    folder = root() / f"work-{key}-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
