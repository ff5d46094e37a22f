"""Reading a data file into a `datasets.Dataset`, with errors that name the exact file, line and byte.

.jsonl, .json, .csv, .parquet and .txt are read through `datasets`, after cheap checks of our own
(jsoncheck.py for the text, the Parquet footer and columns here) that can name the exact file, line
and byte at fault (the loaders' own errors cannot); a loader's failure becomes one line here too.
data.py turns the rows into formatted, tokenized examples.

A UTF-8 byte-order mark is accepted everywhere; UTF-16/32 text is refused with a message saying
so. JSON rows may nest lists and objects jsonrows.MAX_DEPTH deep, as deep as Arrow (underneath
`datasets`) can store; Python's own parser gives up at about a thousand.

Files of any size: the checks read a file a chunk (jsoncheck.CHUNK) at a time, and the loaders write
Arrow to disk and map it, so neither holds the file in memory. Only a .json document (a JSON array,
or one object over many lines) must be parsed whole, by us and by `datasets`: one too large for the
free memory is refused with a line saying to save it as .jsonl.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from .errors import DataError, cause_chain
from .jsoncheck import (CHUNK, check_json_document, check_json_lines, json_limit, numbered_lines,
                        starts_json_lines, text_chunks)
from .jsonrows import first_problem, json_problem, line_rows

if TYPE_CHECKING:  # pragma: no cover
    import datasets

_LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
# the CSV and text readers would keep a byte-order mark in the first column name or line ("\ufefftext");
# the JSON reader drops it by itself
_LOADER_OPTIONS = {".csv": {"encoding": "utf-8-sig"}, ".txt": {"encoding": "utf-8-sig"}}


def read_rows(path: str, field: str = "data.path") -> "datasets.Dataset":
    """Load a .jsonl/.json/.csv/.parquet/.txt file as a datasets.Dataset (DataError on anything bad).

    `field` is the config key the path came from, for the message when there is no path at all."""
    if not path.strip():
        raise DataError(f"{field}: expected a data file ({', '.join(_LOADERS)}), got {path!r}")
    p = Path(path)
    name = p.name
    ext = p.suffix.lower()
    if not p.exists():
        if p.is_symlink():
            raise DataError(f"{path}: a symbolic link that leads nowhere (its target is missing, or it loops)")
        raise DataError(f"{path}: no such file")
    if p.is_dir():
        raise DataError(f"{path}: is a folder, expected a data file ({', '.join(_LOADERS)})")
    if ext not in _LOADERS:
        raise DataError(f"{name}: unsupported file type '{ext or '(none)'}' "
                        f"(expected one of {', '.join(_LOADERS)})")
    if not p.is_file():  # a pipe would block the read forever
        raise DataError(f"{path}: not a regular file (a device, pipe or socket); expected a data file")
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(CHUNK)
    except OSError as e:
        raise DataError(f"{name}: cannot read ({e.strerror})") from None
    as_lines = ext == ".jsonl"  # read and checked a line at a time (a .json holding JSON lines too)
    if ext == ".parquet":
        if size <= len(head) and not head.removeprefix(codecs.BOM_UTF8).strip():
            raise DataError(f"{name}: the file is empty")
        if head[:4] != b"PAR1":
            raise DataError(f"{name}: not a Parquet file (it does not start with the PAR1 marker)")
        _check_parquet_footer(name, p)
    elif ext == ".json" and size > json_limit():
        chunks = text_chunks(name, p, head)
        first = next(chunks, "")  # the encoding checks, on the first chunk only so far
        as_lines = starts_json_lines(name, first, size)
        check_json_lines(name, numbered_lines(name, _chained(first, chunks)))
    elif ext == ".json":
        check_json_document(name, "".join(text_chunks(name, p, head)))
    elif ext == ".jsonl":
        check_json_lines(name, numbered_lines(name, text_chunks(name, p, head)))  # the only way to name the bad line
    else:
        for _ in text_chunks(name, p, head):
            pass

    import datasets

    try:
        with _loader_logs_muted():
            rows = datasets.load_dataset(_LOADERS[ext], data_files=str(p), split="train",
                                         **_LOADER_OPTIONS.get(ext, {}))
    except Exception as e:  # datasets / pyarrow / pandas raise anything on bad bytes: turn it into one line
        raise DataError(f"{name}: {_reason(p, head, ext, as_lines, e)}") from None
    if ext == ".parquet":
        _check_columns(name, rows)
    _check_field_names(name, rows.data.table.schema)
    if ext == ".txt":
        rows = _without_blank_lines(rows)
    if len(rows) == 0:
        raise DataError(f"{name}: the file has no rows")
    return rows


class _Mute(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextlib.contextmanager
def _loader_logs_muted():
    """datasets' loaders log "Failed to read file ..." before they raise; the DataError made from the
    exception is the one message a person should see (the CLI promises one line)."""
    mute = _Mute()
    loggers = [logging.getLogger(f"datasets.packaged_modules.{kind}.{kind}") for kind in set(_LOADERS.values())]
    for logger in loggers:
        logger.addFilter(mute)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(mute)


def _check_parquet_footer(name: str, p: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_metadata(p).num_rows
    except UnicodeDecodeError:  # a damaged column name
        raise DataError(f"{name}: not a readable Parquet file (a column name is not UTF-8 text)") from None
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"{name}: not a readable Parquet file ({' '.join(str(e).split())[:200]})") from None
    if rows == 0:  # the reader would fail with "BatchSize must be greater than 0"
        raise DataError(f"{name}: the file has no rows")


def _check_columns(name: str, rows) -> None:
    """Parquet's strings are not checked for UTF-8 until a row is read: check them all now (C speed)."""
    import pyarrow as pa

    table = rows.data.table
    for column_name, column in zip(table.column_names, table.columns):
        try:
            column.validate(full=True)
        except pa.ArrowException as e:
            what = ("holds text that is not UTF-8 (expected UTF-8 strings)" if "UTF8" in str(e)
                    else f"holds damaged data ({' '.join(str(e).split())[:200]})")
            raise DataError(f"{name}: column {column_name!r} {what}") from None


def _check_field_names(name: str, schema) -> None:
    """Arrow keeps field names as C strings: two JSON keys that differ only after a NUL character
    ("" and "\u0000") become one name twice, and the rows then cannot be read back. Refuse them here."""
    import pyarrow as pa

    def walk(fields, where: str) -> None:
        names = [f.name for f in fields]
        for f in fields:
            if names.count(f.name) > 1:
                raise DataError(f"{name}: {where}two keys of one object read the same ({f.name!r}; a key with a "
                                "NUL character?); rename them")
            kind = f.type
            while pa.types.is_list(kind) or pa.types.is_large_list(kind):
                kind = kind.value_type
            if pa.types.is_struct(kind):
                walk([kind.field(i) for i in range(kind.num_fields)], f"field {f.name!r}: ")

    walk(list(schema), "")


def _chained(first: str, rest: Iterable[str]) -> Iterator[str]:
    yield first
    yield from rest


def _without_blank_lines(rows):
    """A .txt file's rows without its blank lines, looked at a batch at a time (the text stays on disk)."""
    import numpy as np

    table = rows.data.table.select(["text"])
    keep = np.fromiter((bool(t and t.strip()) for batch in table.to_batches(max_chunksize=65536)
                        for t in batch.column(0).to_pylist()), dtype=bool, count=len(rows))
    return rows if keep.all() else rows.select(np.flatnonzero(keep))


# -- why a loader failed ------------------------------------------------------------------------


def _reason(p: Path, head: bytes, ext: str, as_lines: bool, error: Exception) -> str:
    """One line for a loader failure; for JSON, first look for the row and field at fault (reading
    the file again: a line at a time, or whole for a .json document, which fits in memory)."""
    if ext in (".json", ".jsonl"):
        if as_lines:
            found = first_problem(line_rows(numbered_lines(p.name, text_chunks(p.name, p, head))))
        else:
            found = json_problem(p.read_bytes().decode("utf-8-sig"))
        if found:
            return found
    # datasets raises its own error from inside a failed fallback: the real one may be a context
    chain = cause_chain(error, suppressed=True)
    if any("corresponds to no data" in str(e) or "No columns to parse" in str(e) for e in chain):
        return "the file has no rows"
    # datasets wraps the real error; its JSON reader re-raises pyarrow's error from inside a failed
    # pandas fallback, whose own message ("If using all scalar values ...") says nothing useful
    cause = next((e for e in chain if not type(e).__module__.startswith("datasets")), chain[-1])
    text = " ".join(str(cause).split()) or type(cause).__name__
    if ext == ".csv":
        return f"not a valid CSV table ({text[:300]})"
    if ext == ".parquet":
        return f"not a readable Parquet file ({type(cause).__name__}: {text[:300]})"
    return f"cannot read rows ({type(cause).__name__}: {text[:300]})"
