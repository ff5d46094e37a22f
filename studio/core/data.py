"""Data preparation, the pipeline: data files -> the training and evaluation sets a run trains on.

    prepared = prepare_data(cfg.data, tokenizer, "causal-lm", seed=0)
    trainer = Trainer(..., train_dataset=prepared.train, eval_dataset=prepared.eval,
                      data_collator=prepared.collator)

`prepare_data` runs the stages in order, each in its own module:

  read       datafiles.read_rows: the file -> Arrow rows, or a one-line DataError
  format     dataformats.choose_format: the format ("auto" looks at the columns), the
             classification columns and classes; dataformats.RowFormatter turns a record into
             input ids and labels
  tokenize   datatokenize.tokenize_rows: rows -> examples through `Dataset.map` in chunks (worker
             processes for large files), each truncated to max_seq_len; keep_examples leaves out
             the rows with no loss tokens
  split      datasplit.hold_out: data.eval_fraction held out for evaluation (or data.eval_path)
  pack       datasplit.pack: plain text concatenated and cut into max_seq_len blocks; then
             datasplit.cap_eval (data.eval_max)

The dataset preview (inspect.py) calls the same stages. Anything wrong with the input raises
DataError with one line naming the file, the row and the field. The prepared examples are cached
by datacache.py; batches are made by collator.Collator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .collator import Collator, pad_id
from .datafiles import read_rows
from .dataformats import TASKS, DataFormat, choose_format
from .datasplit import cap_eval, hold_out, pack
from .datatokenize import CHARS_PER_TOKEN, keep_examples, num_procs, tokenize_rows
from .errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import datasets

    from .config import DataSection


@dataclass
class PreparedData:
    train: "datasets.Dataset"        # input_ids, labels (causal: list, -100 = no loss; classification: int)
    eval: "datasets.Dataset | None"
    collator: Callable               # list[dict] -> {input_ids, attention_mask, labels} torch tensors
    format: str                      # the detected or requested format
    num_labels: int = 0              # classification only
    label_names: list[str] = field(default_factory=list)  # classification only: index -> name
    chat_template_used: str = ""     # "tokenizer", "fallback-chatml", or "" for non-chat formats
    dropped: int = 0                 # rows left with no loss tokens after truncation, or with no text
    notes: list[str] = field(default_factory=list)  # one line each, for the person: rows dropped, no eval set


def prepare_data(section: "DataSection", tokenizer, task: str, seed: int = 0, progress=None) -> PreparedData:
    """Read, check, format, tokenize, truncate, split (and pack) the data a run config names.

    A staged pipeline on `datasets`: the file is read into Arrow (memory-mapped), rows become
    examples a batch at a time (`Dataset.map`, in worker processes for a large file), examples
    with nothing to learn are left out, the evaluation rows are held out, and plain text is packed.
    No stage holds all examples as Python lists. The result is cached by the files' content, the
    tokenizer and the settings (datacache.py): a re-run with the same data loads it memory-mapped.
    `progress(sentence)` hears about each stage (rows/s, time left)."""
    from . import datacache

    if task not in TASKS:
        raise DataError(f"data: unknown task '{task}' (expected one of {', '.join(TASKS)})")
    say = progress
    where = Path(section.path).name
    max_len = int(section.max_seq_len)
    causal = task == "causal-lm"
    eval_max = int(getattr(section, "eval_max", 0) or 0)
    key = _cache_key(section, tokenizer, task, seed)
    if key is not None:
        hit = datacache.load(key)
        if hit is not None:
            train, evaluation, meta = hit
            if say:
                say(f"prepared data from the cache: {len(train):,} training examples"
                    + (f", {len(evaluation):,} for evaluation" if evaluation is not None else ""))
            return _prepared(train, evaluation, meta, tokenizer, causal)

    # read
    if say:
        say(f"reading {where}")
    rows = read_rows(section.path, "data.path")
    # format
    notes: list[str] = []
    form = choose_format(section, rows, task, where, notes)

    work = datacache.work_folder(key or "nokey")
    read_files = [rows]
    try:
        # tokenize
        train, dropped, template_used = _tokenized(rows, where, form, tokenizer, section, work, say, notes)
        evaluation = None
        if section.eval_path:
            eval_where = Path(section.eval_path).name
            eval_rows = read_rows(section.eval_path, "data.eval_path")
            read_files.append(eval_rows)
            form.check_eval_columns(eval_rows, eval_where)   # the same auto-detected column names
            evaluation, eval_dropped, _ = _tokenized(eval_rows, eval_where, form, tokenizer, section, work, say,
                                                     notes)
            dropped += eval_dropped
        # split
        elif section.eval_fraction > 0:
            n = len(train)
            train, evaluation = hold_out(train, section.eval_fraction, seed)
            if evaluation is None:
                notes.append(f"{where}: too few examples ({n}) to hold out data.eval_fraction="
                             f"{float(section.eval_fraction):g} for evaluation; training without an evaluation set")
        # pack
        if form.packing:
            if say:
                say(f"packing {where} into blocks of {max_len} tokens")
            train, evaluation = pack(train, evaluation, max_len, where)
        evaluation, held_out = cap_eval(evaluation, eval_max)
        if held_out:
            notes.append(f"{where}: evaluating {eval_max:,} of the {held_out:,} held-out examples "
                         f"(data.eval_max; 0 evaluates them all)")

        meta = {"format": form.name, "label_names": form.label_names, "chat_template_used": template_used,
                "dropped": dropped, "notes": notes}
        if key is not None:
            if say:
                say(f"saving the prepared data ({len(train):,} training examples) to the cache")
            train, evaluation = datacache.save(key, train, evaluation, meta)
        else:
            train, evaluation = train.flatten_indices(keep_in_memory=True), (
                evaluation.flatten_indices(keep_in_memory=True) if evaluation is not None else None)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)   # mapped files stay readable until unmapped
        if key is not None:
            for ds in read_files:   # datasets' JSON->Arrow copy: the cache entry replaces it
                _remove_cache_files(ds)
    return _prepared(train, evaluation, meta, tokenizer, causal)


def _tokenized(rows, where: str, form: DataFormat, tokenizer, section: "DataSection", work: Path, say,
               notes: list[str]):
    """The tokenize stage for one file: (examples kept, rows dropped, chat template used)."""
    formatter = form.formatter(tokenizer, where)
    limit = form.max_len * CHARS_PER_TOKEN
    tokenized = tokenize_rows(rows, formatter, form.labels, truncate=form.truncates, limit=limit, work=work,
                              procs=num_procs(section, len(rows)), say=say)
    kept = keep_examples(tokenized, where, form.max_len)
    notes.extend(kept.notes(where, form.max_len, limit))
    return kept.examples, kept.dropped, formatter.template_used


def _cache_key(section: "DataSection", tokenizer, task: str, seed: int) -> str | None:
    """The datacache key of this preparation: the files' content, the tokenizer and the settings
    (None when a file is missing or unreadable: read_rows then says why, in one line)."""
    from . import datacache

    files = [section.path] + ([section.eval_path] if section.eval_path else [])
    try:
        settings = {"task": task, "format": section.format, "max_seq_len": int(section.max_seq_len),
                    "pack": bool(section.pack), "eval_path": bool(section.eval_path),
                    "eval_fraction": float(section.eval_fraction), "text_column": section.text_column,
                    "label_column": section.label_column, "seed": seed,
                    "eval_max": int(getattr(section, "eval_max", 0) or 0), "names": [Path(f).name for f in files]}
        if all(Path(f).is_file() for f in files):
            return datacache.cache_key(files, tokenizer, settings)
    except OSError:
        pass
    return None


def _remove_cache_files(ds) -> None:
    """Delete what datasets wrote when it read a data file (its JSON/CSV -> Arrow copy): of no use
    once the prepared data is cached, and datasets keeps every version it ever wrote. The copy's
    folder goes whole (with its dataset_info.json), so a later read of the file converts it again
    rather than finding a split whose file is gone."""
    import os
    import shutil

    for entry in getattr(ds, "cache_files", None) or []:
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not name:
            continue
        folder = Path(name).parent
        if (folder / "dataset_info.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            for lock in folder.parent.glob(f"*{folder.name}*.lock"):
                lock.unlink(missing_ok=True)
        elif os.path.isfile(name):
            Path(name).unlink(missing_ok=True)


def _prepared(train, evaluation, meta: dict, tokenizer, causal: bool) -> PreparedData:
    names = list(meta.get("label_names") or [])
    return PreparedData(
        train=train,
        eval=evaluation,
        collator=Collator(pad_id(tokenizer), causal),
        format=meta["format"],
        num_labels=len(names),
        label_names=names,
        chat_template_used=meta.get("chat_template_used", ""),
        dropped=int(meta.get("dropped", 0)),
        notes=list(meta.get("notes") or []),
    )
