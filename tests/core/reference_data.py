"""The data pipeline as it was before issue 19 (a per-row Python loop over lists), kept verbatim
as the reference the batched, cached pipeline (studio/core/data.py prepare_data) must equal:
the same input ids, labels and loss mask, the same split, the same packed blocks."""

from __future__ import annotations

import math
from pathlib import Path

from studio.core.collator import Collator, pad_id as _pad_id
from studio.core.data import PreparedData
from studio.core.datafiles import read_rows
from studio.core.dataformats import (IGNORE, TASKS, RowFormatter, classification_columns as _classification_columns,
                                     classification_labels, settle_format)
from studio.core.errors import DataError
from studio.core.options import shown


def reference_prepare_data(section: "DataSection", tokenizer, task: str, seed: int = 0) -> PreparedData:
    """Read, check, format, tokenize, truncate, split (and pack) the data a run config names."""
    import datasets

    if task not in TASKS:
        raise DataError(f"data: unknown task '{task}' (expected one of {', '.join(TASKS)})")
    where = Path(section.path).name
    rows = read_rows(section.path, "data.path")
    fmt = settle_format(section, rows, task, where)
    max_len = int(section.max_seq_len)
    causal = task == "causal-lm"

    labels = None
    label_names: list[str] = []
    if not causal:
        text_col, label_col, label_names = classification_labels(section, rows)
        labels = (text_col, label_col, {name: i for i, name in enumerate(label_names)})

    packing = causal and fmt == "text" and bool(section.pack)
    notes: list[str] = []

    def load(rows_, where_):
        examples, helper = _examples(rows_, where_, tokenizer, task, fmt, max_len, labels)
        n = len(examples)
        if causal and not packing:
            examples, dropped = _truncate(examples, max_len)  # blank rows have no labels: dropped too
        else:
            examples = [ex for ex in examples if len(ex["input_ids"])]  # packing: blank rows add nothing
            dropped = n - len(examples)
        if helper.blank == n:
            raise DataError(f"{where_}: no row has any text to learn from (all {n} rows have an empty 'text')")
        if not examples:
            raise DataError(f"{where_}: no example has any tokens to learn from within max_seq_len={max_len} "
                            f"(all {n} rows dropped; raise data.max_seq_len)")
        if helper.blank:
            notes.append(f"{where_}: {helper.blank} of {n} rows have no text and were skipped")
        if dropped > helper.blank:
            notes.append(f"{where_}: {dropped - helper.blank} of {n} rows have nothing left to learn from "
                         f"within max_seq_len={max_len} and were dropped")
        return examples, dropped, helper

    train_examples, dropped, helper = load(rows, where)
    eval_examples = None
    if section.eval_path:
        eval_where = Path(section.eval_path).name
        eval_rows = read_rows(section.eval_path, "data.eval_path")
        if not causal:  # the eval file may use the same auto-detected column names
            _classification_columns(list(eval_rows.column_names), labels[0], labels[1], eval_where)
        eval_examples, eval_dropped, _ = load(eval_rows, eval_where)
        dropped += eval_dropped
    elif section.eval_fraction > 0:
        n = len(train_examples)
        n_eval = max(1, math.floor(n * float(section.eval_fraction)))
        if n - n_eval >= 1:
            split = datasets.Dataset.from_list(train_examples).train_test_split(test_size=n_eval, seed=seed)
            train_examples, eval_examples = split["train"].to_list(), split["test"].to_list()
        else:
            notes.append(f"{where}: too few examples ({n}) to hold out data.eval_fraction="
                         f"{float(section.eval_fraction):g} for evaluation; training without an evaluation set")

    if packing:
        train_examples = _pack(train_examples, max_len)
        eval_examples = _pack(eval_examples, max_len) if eval_examples else eval_examples
    if packing and not any(len(ex["input_ids"]) >= 2 for ex in train_examples):  # one token predicts nothing
        raise DataError(f"{where}: too little text to train on (no block of two tokens or more)")

    return PreparedData(
        train=datasets.Dataset.from_list(train_examples),
        eval=datasets.Dataset.from_list(eval_examples) if eval_examples else None,
        collator=Collator(_pad_id(tokenizer), causal),
        format=fmt,
        num_labels=len(label_names),
        label_names=label_names,
        chat_template_used=helper.template_used,
        dropped=dropped,
        notes=notes,
    )


# -- the per-row path, as data.py had it -----------------------------------------------------------


def _decoded(rows, where: str):
    """The rows of a Dataset as dicts. datasets cannot decode some nested field names it has
    stored (an empty object under a key "\\u0000" fails with a KeyError naming the key): that is
    a DataError naming the file, not a traceback."""
    it = iter(rows)
    while True:
        try:
            record = next(it)
        except StopIteration:
            return
        except KeyError as e:
            raise DataError(f"{where}: a field named {shown(e.args[0] if e.args else '')} cannot be read back "
                            "(rename the field)") from None
        yield record


def _examples(rows, where: str, tokenizer, task: str, fmt: str, max_len: int, labels=None):
    """(list of {input_ids, labels}, helper) for one file, as Python lists: the reference the tests
    hold the batched pipeline (prepare_data) to."""
    helper = RowFormatter(where, tokenizer, task, fmt, max_len)
    needed = {"text": ["text"], "prompt-completion": ["prompt", "completion"], "alpaca": ["instruction", "output"],
              "messages": ["messages"], "sharegpt": ["conversations"]}.get(fmt, [])
    missing = [c for c in needed if c not in rows.column_names]
    if missing:
        raise DataError(f"{where}: format {fmt} needs column(s) {', '.join(map(repr, missing))}; "
                        f"found {', '.join(map(repr, rows.column_names))}")
    out = []
    for row, record in enumerate(_decoded(rows, where), 1):
        if fmt == "classification":
            text_col, label_col, index = labels
            ids, label = helper.classification(record, row, text_col, label_col, index)
            out.append({"input_ids": ids, "labels": label})
            continue
        ids, lab = helper.messages(record, row) if fmt in ("messages", "sharegpt") else helper.plain(record, row)
        out.append({"input_ids": ids, "labels": lab})
    return out, helper


def _truncate(examples: list[dict], max_len: int) -> tuple[list[dict], int]:
    kept = []
    for ex in examples:
        ids, labels = ex["input_ids"][:max_len], ex["labels"][:max_len]
        if any(t != IGNORE for t in labels[1:]):  # position 0 is never predicted
            kept.append({"input_ids": ids, "labels": labels})
    return kept, len(examples) - len(kept)


def _pack(examples: list[dict], block: int) -> list[dict]:
    """Concatenate every example and cut max_seq_len blocks; the last, shorter block is kept."""
    stream = [t for ex in examples for t in ex["input_ids"]]
    blocks = [stream[i:i + block] for i in range(0, len(stream), block)]
    if len(blocks) > 1 and len(blocks[-1]) < 2:
        blocks.pop()
    return [{"input_ids": b, "labels": list(b)} for b in blocks]
