"""The data pipeline as it was before issue 19 (a per-row Python loop over lists), kept verbatim
as the reference the batched, cached pipeline (studio/core/data.py prepare_data) must equal:
the same input ids, labels and loss mask, the same split, the same packed blocks."""

from __future__ import annotations

import math
from pathlib import Path

from studio.core.data import (TASKS, Collator, DataError, PreparedData, _classification_columns, _examples,
                              _pack, _pad_id, _truncate, classification_labels, read_rows, settle_format)


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
