"""The tokenize stage of data preparation: rows -> examples, a batch at a time.

`tokenize_rows` maps rows to examples (input_ids, labels) with `tokenize_batch`: through
`Dataset.map` in chunks, in worker processes for a large file, with progress lines (training); or
in this process and in memory, asking a callback between batches (the dataset preview). Each row
also gets its status (KEEP, BLANK, EMPTY), whether it was cut to the character bound, and its
length in tokens before truncation. `keep_examples` then leaves out the rows with nothing to
learn, and raises when none has anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .dataformats import IGNORE, RowFormatter, chat_labels, check_columns
from .errors import DataError
from .options import shown as _shown

if TYPE_CHECKING:  # pragma: no cover
    import datasets
    import numpy as np

KEEP, BLANK, EMPTY = 0, 1, 2   # an example; a row with no text; nothing to learn within max_seq_len
CHARS_PER_TOKEN = 32           # the character bound: max_seq_len x this (a token is a few characters;
                               # text beyond the bound could never reach the first max_seq_len tokens)
CHUNK_ROWS = 20_000            # rows mapped between two progress reports (and two bounded buffers)
BATCH_ROWS = 200               # rows a tokenizer call gets


def bound(record: dict, fmt: str, limit: int) -> tuple[dict, bool]:
    """The record with its text fields cut to `limit` characters in all, in reading order (a chat's
    turns one after another), and whether anything was cut. A row of hundreds of MB never reaches
    the template or the tokenizer whole; what is cut lies past max_seq_len tokens anyway."""
    if fmt in ("messages", "sharegpt"):
        key = "conversations" if fmt == "sharegpt" else "messages"
        turns = record.get(key)
        if not isinstance(turns, list):
            return record, False
        budget, cut, kept = limit, False, []
        for turn in turns:
            if isinstance(turn, dict):
                content_key = "value" if fmt == "sharegpt" and "from" in turn else "content"
                text = turn.get(content_key)
                if isinstance(text, str):
                    if budget <= 0:   # later turns could not be reached: an assistant turn cut to ""
                        cut = True
                        turn = {**turn, content_key: ""}
                    elif len(text) > budget:
                        cut = True
                        turn = {**turn, content_key: text[:budget]}
                    budget -= len(turn[content_key])
            kept.append(turn)
        return ({**record, key: kept}, True) if cut else (record, False)
    fields = {"text": ("text",), "prompt-completion": ("prompt", "completion"),
              "alpaca": ("instruction", "input", "output")}.get(fmt, ())
    budget, cut, out = limit, False, dict(record)
    for name in fields:
        text = record.get(name)
        if isinstance(text, str) and len(text) > max(budget, 0):
            out[name], cut = text[:max(budget, 0)], True
        if isinstance(out.get(name), str):
            budget -= len(out[name])
    return (out, True) if cut else (record, False)


def tokenize_batch(batch: dict, indices: list[int], *, formatter: RowFormatter, labels, limit: int,
                   truncate: bool, start: int = 0, report: Callable[[int], None] | None = None) -> dict:
    """A batch of rows -> input_ids, labels, status (KEEP/BLANK/EMPTY), whether the row was cut to
    the character bound (`limit` characters; 0: not bounded) and its length in tokens before
    truncation (`truncate`: cut to max_len). datasets.map's function. Errors name the row (`start`
    + its index + 1). Chat rows are rendered one by one and tokenized in one call for the batch
    (the tokenizer's own batching), as apply_chat_template does for a batch."""
    helper, fmt, max_len = formatter, formatter.fmt, formatter.max_len
    columns = list(batch)
    n = len(indices)
    encoded: list = [None] * n      # (ids, labels) per row, or None for a blank row
    cut_out = [False] * n
    chats: list[tuple[int, str, list]] = []
    for j, index in enumerate(indices):
        row = start + index + 1   # indices count within the chunk
        record = {c: batch[c][j] for c in columns}
        if fmt == "classification":
            text_col, label_col, index_of = labels
            text = record.get(text_col)
            if limit and isinstance(text, str) and len(text) > limit:
                record, cut_out[j] = {**record, text_col: text[:limit]}, True
            encoded[j] = helper.classification(record, row, text_col, label_col, index_of)
            continue
        if limit:
            record, cut_out[j] = bound(record, fmt, limit)
        blank_before = helper.blank
        if fmt not in ("messages", "sharegpt"):
            ids, lab = helper.plain(record, row)
        else:
            helper.check_turns(record, row)
            full, spans = helper.chat_render(helper.chat_messages(record, row), row)
            chats.append((j, full, spans))
            continue
        encoded[j] = None if helper.blank != blank_before else (ids, lab)
    if chats:
        try:
            enc = helper.tok([full for _, full, _ in chats], add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:
            raise DataError(f"{helper.where}: chat formats need a fast tokenizer (with offset mappings)") from None
        for k, (j, _, spans) in enumerate(chats):
            encoded[j] = chat_labels(enc["input_ids"][k], enc["offset_mapping"][k], spans)
    ids_out, labels_out, status, lengths = [], [], [], []
    for item in encoded:
        if fmt == "classification":
            ids, label = item
            ids_out.append(ids)
            labels_out.append(label)
            status.append(KEEP)
            lengths.append(len(ids))
            continue
        if item is None:
            state, ids, lab = BLANK, [], []
            lengths.append(0)
        else:
            ids, lab = item
            lengths.append(len(ids))
            if truncate:
                ids, lab = ids[:max_len], lab[:max_len]
                state = KEEP if any(t != IGNORE for t in lab[1:]) else EMPTY   # position 0 is never predicted
            else:
                state = KEEP if ids else BLANK
        ids_out.append(ids if state == KEEP else [])
        labels_out.append(lab if state == KEEP else [])
        status.append(state)
    if report is not None:
        report(n)
    return {"input_ids": ids_out, "labels": labels_out, "status": status, "cut": cut_out, "length": lengths}


class Progress:
    """Progress of one stage as plain sentences, at most every `every` seconds:
    'tokenizing train.jsonl: 40,000 of 100,000 rows (1,520 rows/s, about 40 s left)'."""

    def __init__(self, say, what: str, total: int, every: float = 2.0):
        import time

        self.say, self.what, self.total, self.every = say, what, total, every
        self.done = 0
        self.started = self.last = time.monotonic()

    def __call__(self, n: int) -> None:
        import time

        self.done += n
        now = time.monotonic()
        if self.say is None or (now - self.last < self.every and self.done < self.total):
            return
        self.last = now
        rate = self.done / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        eta = f", about {left:.0f} s left" if self.done < self.total else f", {now - self.started:.1f} s"
        self.say(f"{self.what}: {self.done:,} of {self.total:,} rows ({rate:,.0f} rows/s{eta})")


def num_procs(section, n_rows: int) -> int:
    """Worker processes for tokenizing: data.num_proc, or (0) one per core for a large file
    (LORA_STUDIO_DATA_PROCS overrides: the benchmarks). A small file is quicker in one."""
    import os

    override = os.environ.get("LORA_STUDIO_DATA_PROCS", "").strip()
    wanted = int(override) if override.isdigit() else int(getattr(section, "num_proc", 0) or 0)
    if wanted <= 0:
        wanted = os.cpu_count() or 1 if n_rows >= 2 * CHUNK_ROWS else 1
    return max(1, min(wanted, os.cpu_count() or 1, max(1, n_rows // BATCH_ROWS)))




def features(fmt: str) -> "datasets.Features":
    """The columns tokenize_rows makes."""
    import datasets

    return datasets.Features({
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "labels": datasets.Value("int64") if fmt == "classification" else datasets.Sequence(datasets.Value("int32")),
        "status": datasets.Value("int8"),
        "cut": datasets.Value("bool"),
        "length": datasets.Value("int32"),
    })


def tokenize_rows(rows, formatter: RowFormatter, labels=None, *, truncate: bool, limit: int = 0,
                  work: Path | None = None, procs: int = 1, say: Callable[[str], None] | None = None,
                  report: Callable[[int], None] | None = None, batch_rows: int = BATCH_ROWS) -> "datasets.Dataset":
    """All rows mapped to examples by tokenize_batch (with the columns of `features`).

    With a `work` folder (training): chunk by chunk through Dataset.map, in `procs` processes, into
    Arrow files in `work`, concatenated without a copy; `say` hears a progress line between chunks
    (and within them when one process tokenizes). Without one (the preview): in this process and in
    memory, `batch_rows` rows a batch, `report(rows done)` after each batch (it may raise to stop)."""
    check_columns(rows, formatter.where, formatter.fmt)
    kwargs = dict(formatter=formatter, labels=labels, limit=limit, truncate=truncate)
    if work is None:
        return _in_memory(rows, formatter, kwargs, report, batch_rows)
    import datasets

    where = formatter.where
    progress = Progress(say, f"tokenizing {where}", len(rows))
    parts = []
    for n, start in enumerate(range(0, len(rows), CHUNK_ROWS)):
        chunk = rows.select(range(start, min(start + CHUNK_ROWS, len(rows))))
        try:
            part = chunk.map(tokenize_batch, batched=True, batch_size=batch_rows, with_indices=True,
                             fn_kwargs=dict(kwargs, start=start, report=progress if procs == 1 else None),
                             remove_columns=chunk.column_names, features=features(formatter.fmt),
                             num_proc=procs if procs > 1 else None,
                             cache_file_name=str(work / f"{where}-{n}.arrow"), load_from_cache_file=False,
                             # our own cache decides reuse; without a fingerprint datasets would try to
                             # pickle the function's arguments (the tokenizer, the progress callback)
                             new_fingerprint=_fingerprint(work.name, where, n))
        except KeyError as e:   # datasets cannot decode some nested field names it stored
            raise _undecodable(where, e) from None
        if procs > 1:
            progress(len(chunk))
        parts.append(part)
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def _in_memory(rows, formatter: RowFormatter, kwargs: dict, report, batch_rows: int) -> "datasets.Dataset":
    import datasets

    out: dict[str, list] = {name: [] for name in features(formatter.fmt)}
    batches = rows.iter(batch_size=batch_rows)
    start = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except KeyError as e:   # datasets cannot decode some nested field names it stored
            raise _undecodable(formatter.where, e) from None
        n = len(next(iter(batch.values()))) if batch else 0
        part = tokenize_batch(batch, list(range(n)), **kwargs, start=start, report=report)
        for name, values in part.items():
            out[name].extend(values)
        start += n
    return datasets.Dataset.from_dict(out, features=features(formatter.fmt))


def _undecodable(where: str, error: KeyError) -> DataError:
    return DataError(f"{where}: a field named {_shown(error.args[0] if error.args else '')} cannot be read back "
                     "(rename the field)")


def _fingerprint(*parts) -> str:
    import xxhash

    return xxhash.xxh3_64_hexdigest("\0".join(map(str, parts)).encode("utf-8"))


# -- rows with nothing to learn -------------------------------------------------------------------


@dataclass
class Kept:
    """What keep_examples keeps of one file's tokenized rows."""

    examples: "datasets.Dataset"   # input_ids and labels of the rows kept, in file order
    rows: int                      # rows in the file
    blank: int                     # rows with no text
    dropped: int                   # rows left out: blank, or nothing to learn within max_len
    cut: int                       # rows cut to the character bound before tokenizing
    kept: "np.ndarray"             # per row: kept or not
    lengths: "np.ndarray"          # per row: tokens before truncation (0 for a blank row)

    def notes(self, where: str, max_len: int, limit: int) -> list[str]:
        """One line each about the rows skipped, dropped or cut, as training reports them."""
        n, out = self.rows, []
        if self.blank:
            out.append(f"{where}: {self.blank} of {n} rows have no text and were skipped")
        if self.dropped > self.blank:
            out.append(f"{where}: {self.dropped - self.blank} of {n} rows have nothing left to learn from "
                       f"within max_seq_len={max_len} and were dropped")
        if self.cut:
            out.append(f"{where}: {self.cut} of {n} rows are longer than {limit:,} characters "
                       f"(max_seq_len x {CHARS_PER_TOKEN}) and were cut to that before tokenizing")
        return out


def keep_examples(tokenized: "datasets.Dataset", where: str, max_len: int) -> Kept:
    """The rows of tokenize_rows with something to learn. DataError when no row has any text, or
    no example anything to learn within max_len."""
    import numpy as np

    n = len(tokenized)
    table = tokenized.with_format("arrow")[:]   # whole columns from Arrow (no row-by-row formatting)
    status = table.column("status").to_numpy() if n else np.zeros(0, dtype=np.int8)
    cut = int(table.column("cut").to_numpy(zero_copy_only=False).sum()) if n else 0
    lengths = table.column("length").to_numpy() if n else np.zeros(0, dtype=np.int32)
    blank = int((status == BLANK).sum())
    dropped = int((status != KEEP).sum())
    if blank == n:
        raise DataError(f"{where}: no row has any text to learn from (all {n} rows have an empty 'text')")
    if dropped == n:
        raise DataError(f"{where}: no example has any tokens to learn from within max_seq_len={max_len} "
                        f"(all {n} rows dropped; raise data.max_seq_len)")
    kept = status == KEEP
    examples = tokenized.select(np.flatnonzero(kept)) if dropped else tokenized
    return Kept(examples.remove_columns(["status", "cut", "length"]), n, blank, dropped, cut, kept, lengths)
