"""Data files -> rows: reading .jsonl, .json, .csv, .parquet and .txt through `datasets`, after
cheap checks of our own that can name the exact file, line and byte at fault (the loaders' own
errors cannot). data.py turns the rows into formatted, tokenized examples.

A UTF-8 byte-order mark is accepted everywhere; UTF-16/32 text is refused with a message saying
so. JSON rows may nest lists and objects MAX_DEPTH deep, as deep as Arrow (underneath `datasets`)
can store; Python's own parser gives up at about a thousand.

Files of any size: the checks read a file a chunk (_CHUNK) at a time, and the loaders write Arrow
to disk and map it, so neither holds the file in memory. Only a .json document (a JSON array, or
one object over many lines) must be parsed whole, by us and by `datasets`: one too large for the
free memory is refused with a line saying to save it as .jsonl.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from .errors import DataError, cause_chain
from .modelcache import human_size

if TYPE_CHECKING:  # pragma: no cover
    import datasets

_LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
# the CSV and text readers would keep a byte-order mark in the first column name or line ("\ufefftext");
# the JSON reader drops it by itself
_LOADER_OPTIONS = {".csv": {"encoding": "utf-8-sig"}, ".txt": {"encoding": "utf-8-sig"}}
MAX_DEPTH = 63  # levels of [ ] and { } in one row, the row's own { } included: as deep as Arrow stores
_WIDE_TEXT = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
              (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
_JSON_SPACE = " \t\r\n"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what the JSON-lines reader splits on (not str.splitlines: U+2028 ...)
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')  # a string, or a bracket
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_PAIR = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")  # \ud83d\ude00
_CHUNK = 1 << 20  # bytes read at a time: what the checks hold of a file, whatever its size
# Parsing JSON whole takes 3 to 11 times its size in memory (bytes, text, Python objects; measured on
# chat, text and numeric rows), and datasets' .json reader parses a document whole again after us:
# one JSON value over a quarter of the free memory cannot be read.
_JSON_MEMORY_FACTOR = 4
_ASCII_SPACE = b" \t\n\r\x0b\x0c"  # what bytes.strip() strips


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
            head = f.read(_CHUNK)
    except OSError as e:
        raise DataError(f"{name}: cannot read ({e.strerror})") from None
    as_lines = ext == ".jsonl"  # read and checked a line at a time (a .json holding JSON lines too)
    if ext == ".parquet":
        if size <= len(head) and not head.removeprefix(codecs.BOM_UTF8).strip():
            raise DataError(f"{name}: the file is empty")
        if head[:4] != b"PAR1":
            raise DataError(f"{name}: not a Parquet file (it does not start with the PAR1 marker)")
        _check_parquet_footer(name, p)
    elif ext == ".json" and size > _json_limit():
        chunks = _text_chunks(name, p, head)
        first = next(chunks, "")  # the encoding checks, on the first chunk only so far
        as_lines = _starts_json_lines(name, first, size)
        _check_json_lines(name, _lines(name, _chained(first, chunks)))
    elif ext == ".json":
        _check_json_document(name, "".join(_text_chunks(name, p, head)))
    elif ext == ".jsonl":
        _check_json_lines(name, _lines(name, _text_chunks(name, p, head)))  # the only way to name the bad line
    else:
        for _ in _text_chunks(name, p, head):
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


def _text_chunks(name: str, p: Path, head: bytes) -> Iterator[str]:
    """The file's text a chunk at a time (byte-order mark dropped), each chunk checked before it is
    handed on: UTF-16/32, NUL bytes (binary data) and bytes that are not UTF-8 are refused naming the
    byte offset; a file of nothing but white space is 'empty' once the end is reached."""
    for bom, encoding in _WIDE_TEXT:
        if head.startswith(bom):
            raise DataError(f"{name}: {encoding} text; expected UTF-8 (save the file as UTF-8)")
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, blank = 0, True
    with open(p, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            nul = chunk.find(b"\x00")
            if nul >= 0:
                if _looks_utf16(head):
                    raise DataError(f"{name}: UTF-16 text (without a byte-order mark); expected UTF-8 "
                                    "(save the file as UTF-8)")
                raise DataError(f"{name}: binary data at byte offset {offset + nul} (expected UTF-8 text)")
            held = len(decoder.getstate()[0])  # the start of a character cut by the last chunk's end
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                raise DataError(f"{name}: not UTF-8 text: invalid byte 0x{e.object[e.start]:02x} at byte offset "
                                f"{offset - held + e.start}") from None
            if offset == 0:
                text = text.removeprefix("\ufeff")
                blank = not chunk.removeprefix(codecs.BOM_UTF8).strip(_ASCII_SPACE)
            elif blank:
                blank = not chunk.strip(_ASCII_SPACE)
            if not chunk:
                if blank:
                    raise DataError(f"{name}: the file is empty")
                return
            offset += len(chunk)
            if text:
                yield text


def _lines(name: str, chunks: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line number, line) for each line of the text, split where the JSON-lines reader splits.

    A line that runs past one chunk must start like a JSON object, and may not grow past what can
    be parsed in the free memory: either way it is refused before it is held whole."""
    number, pieces, length, after_cr, limit = 0, [], 0, False, None
    for text in chunks:
        if after_cr and text.startswith("\n"):  # the rest of a "\r\n" split between two chunks
            text = text[1:]
            if not text:
                continue
        after_cr = text.endswith("\r")
        parts = _LINE_BREAK.split(text)
        for part in parts[:-1]:
            number += 1
            yield number, "".join(pieces) + part if pieces else part
            pieces, length = [], 0
        if parts[-1]:
            pieces.append(parts[-1])
            length += len(parts[-1])
            if length > _CHUNK and length - len(parts[-1]) <= _CHUNK:  # just grew past one chunk
                start = "".join(pieces)[:_CHUNK].lstrip(_JSON_SPACE)[:1]
                if start and start != "{":
                    raise DataError(f"{name}: line {number + 1}: over {human_size(_CHUNK)} of text that is not a "
                                    f"JSON object (it starts with {start!r}); expected one JSON object per line")
            if length > _CHUNK:
                limit = limit or _json_limit()
                if length > limit:
                    raise DataError(f"{name}: line {number + 1} is longer than {human_size(limit)}: one row that "
                                    f"large cannot be parsed in this machine's free memory "
                                    f"({human_size(_available_memory())}); expected one JSON object per line")
    if pieces:
        yield number + 1, "".join(pieces)


def _chained(first: str, rest: Iterable[str]) -> Iterator[str]:
    yield first
    yield from rest


def _available_memory() -> int:
    import psutil

    return psutil.virtual_memory().available


def _json_limit() -> int:
    """The longest JSON text (a .json document, a line of a .jsonl) that can be parsed whole now."""
    return _available_memory() // _JSON_MEMORY_FACTOR


def _starts_json_lines(name: str, first: str, size: int) -> bool:
    """Whether a .json file too large to parse whole holds JSON lines (which are read a line at a
    time); a single document that large is refused."""
    body = first.lstrip(_JSON_SPACE)
    if not body.startswith(("[", "{")):
        start = f"it starts with {body[:1]!r}" if body else f"its first {human_size(_CHUNK)} are blank"
        raise DataError(f"{name}: not JSON rows ({start}); expected a JSON array of objects, or one JSON "
                        "object per line")
    line = _LINE_BREAK.split(body, maxsplit=1)
    if body.startswith("{") and len(line) == 2:  # a first line that ends within the first chunk
        try:
            if isinstance(json.loads(line[0]), dict):
                return True
        except (ValueError, RecursionError):
            pass
    raise DataError(f"{name}: a single JSON document of {human_size(size)}, too large to read: it must be "
                    f"parsed whole, which takes several times its size in memory ({human_size(_available_memory())} "
                    "free); save the rows as JSON lines (.jsonl, one object per line), which are read a line "
                    "at a time")


def _without_blank_lines(rows):
    """A .txt file's rows without its blank lines, looked at a batch at a time (the text stays on disk)."""
    import numpy as np

    table = rows.data.table.select(["text"])
    keep = np.fromiter((bool(t and t.strip()) for batch in table.to_batches(max_chunksize=65536)
                        for t in batch.column(0).to_pylist()), dtype=bool, count=len(rows))
    return rows if keep.all() else rows.select(np.flatnonzero(keep))


def _looks_utf16(raw: bytes) -> bool:
    """Mostly-ASCII UTF-16: one byte of each pair is zero (the high byte), the other is not."""
    head = raw[:512]
    if len(head) < 4:
        return False
    for zeros, chars in ((head[1::2], head[0::2]), (head[0::2], head[1::2])):  # little-, big-endian
        if zeros.count(0) >= 0.9 * len(zeros) and chars.count(0) <= 0.1 * len(chars):
            return True
    return False


def _check_json_lines(name: str, lines: Iterable[tuple[int, str]]) -> None:
    for number, line in lines:
        if not line.strip(_JSON_SPACE):
            continue
        try:
            value = json.loads(line)
        except RecursionError:  # nested about a thousand deep; shallower ones fail in Arrow (see _reason)
            raise DataError(f"{name}: line {number}: {_TOO_DEEP}") from None
        except json.JSONDecodeError as e:
            truncated = e.pos >= len(line.rstrip()) or e.msg.startswith("Unterminated string")
            what = "truncated JSON" if truncated else f"invalid JSON ({e.msg} at column {e.colno})"
            raise DataError(f"{name}: line {number}: {what}; expected one JSON object per line") from None
        except ValueError:  # an integer past Python's 4300-digit limit
            raise DataError(f"{name}: line {number}: {_HUGE_INT}") from None
        if not isinstance(value, dict):
            raise DataError(f"{name}: line {number}: expected a JSON object {{...}}, got {type_name(value)}")


_TOO_LARGE = "too large to store (expected a float below about 1.8e308, or an integer that fits in 64 bits)"
_HUGE_INT = "a number with thousands of digits; expected numbers that fit in 64 bits"
_TOO_DEEP = f"nested too deeply (more than {MAX_DEPTH} levels of lists and objects in one row)"


def _check_json_document(name: str, text: str) -> None:
    # The .json reader (ujson) turns 1e999 and Infinity into null and an unpaired surrogate into '',
    # silently: note such numbers while parsing (the hooks run once per number, which text has few of)
    too_large: list[_TooLarge] = []

    def noted(parse):
        def note(text: str):
            value = parse(text)
            if isinstance(value, _TooLarge):
                too_large.append(value)
            return value
        return note

    try:
        value = json.loads(text, parse_float=noted(_strict_float), parse_int=noted(_strict_int),
                           parse_constant=noted(lambda c: float(c) if c == "NaN" else _TooLarge(c)))
    except RecursionError:
        top = 1 if text.lstrip(_JSON_SPACE).startswith("[") else 0  # an array of rows is no row level
        at = _too_deep(text, MAX_DEPTH + top) or 0
        raise DataError(f"{name}: line {text.count(chr(10), 0, at) + 1}: {_TOO_DEEP}") from None
    except json.JSONDecodeError as e:
        if "Extra data" in e.msg:  # several objects: JSON lines saved as .json, datasets reads those
            _check_json_lines(name, enumerate(_LINE_BREAK.split(text), 1))
            return
        raise DataError(f"{name}: line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(value, list):
        for i, item in enumerate(value, 1):
            if not isinstance(item, dict):
                raise DataError(f"{name}: row {i}: expected a JSON object {{...}}, got {type_name(item)}")
    elif not isinstance(value, dict):
        raise DataError(f"{name}: expected a JSON array of objects, got {type_name(value)}")
    if too_large or _maybe_lone_surrogate(text):  # rare: find the row and field
        found = _json_problem(text)
        if "too large" in found or "surrogate" in found:
            raise DataError(f"{name}: {found}")
        if too_large:  # found something else first (a key twice, which this reader takes)
            raise DataError(f"{name}: the number {too_large[0].text[:40]} is {_TOO_LARGE}")


def _maybe_lone_surrogate(text: str) -> bool:
    """Whether the text may hold a \\ud800-style escape that is not half of a pair (a quick filter:
    an escaped backslash before it also counts)."""
    return bool(_SURROGATE_ESCAPE.search(text) and _SURROGATE_ESCAPE.search(_SURROGATE_PAIR.sub("", text)))


def _too_deep(text: str, limit: int) -> int | None:
    """The offset where [ ] / { } nesting first passes `limit` (strings skipped), or None."""
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > limit:
                return m.start()
        elif c in "]}":
            depth -= 1
    return None


def _depth(value: Any) -> int:
    """Levels of lists and objects in a parsed JSON row (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((v, level + 1) for v in (value.values() if isinstance(value, dict) else value)
                     if isinstance(v, (dict, list)))
    return deepest


# -- why a loader failed ------------------------------------------------------------------------


def _reason(p: Path, head: bytes, ext: str, as_lines: bool, error: Exception) -> str:
    """One line for a loader failure; for JSON, first look for the row and field at fault (reading
    the file again: a line at a time, or whole for a .json document, which fits in memory)."""
    if ext in (".json", ".jsonl"):
        if as_lines:
            found = _first_problem(_line_rows(_lines(p.name, _text_chunks(p.name, p, head))))
        else:
            found = _json_problem(p.read_bytes().decode("utf-8-sig"))
        if found:
            return found
    chain = _chain(error)
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


def _chain(error: BaseException) -> list[BaseException]:
    # datasets raises its own error from inside a failed fallback: the real one may be a context
    return cause_chain(error, suppressed=True)


class _Problem(ValueError):
    """What is wrong with one JSON row, raised from the strict parser's hooks."""


class _TooLarge:
    """A JSON number that Arrow cannot store: beyond the float range (Python reads it as inf) or an
    integer beyond 64 bits (the .json reader refuses it)."""

    def __init__(self, text: str):
        self.text = text


def _strict_float(text: str) -> float | _TooLarge:
    value = float(text)
    return _TooLarge(text) if math.isinf(value) else value


def _strict_int(text: str) -> int | _TooLarge:
    if len(text) > 21:  # also keeps int() away from Python's 4300-digit limit
        return _TooLarge(text)
    value = int(text)
    return value if -2**63 <= value < 2**64 else _TooLarge(text)


def _strict_object(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise _Problem(f"the key {key!r} appears twice in one object; expected each field once")
        bad = _SURROGATE.search(key)
        if bad:
            raise _Problem(f"the key {key!r} holds an unpaired UTF-16 surrogate (\\u{ord(bad.group()):04x}); "
                           "expected valid Unicode text")
        out[key] = value
    return out


_STRICT = json.JSONDecoder(object_pairs_hook=_strict_object, parse_float=_strict_float, parse_int=_strict_int)


def _json_problem(text: str, lines: bool = False) -> str:
    """'line 4: ...' for the first row the Arrow JSON reader cannot take (a key twice, a number out
    of range, an unpaired surrogate, a field whose type differs between rows), or ''."""
    try:
        return _first_problem(_json_rows(text, lines))
    except RecursionError:  # close to Python's limit, and the stack is deeper here than in read_rows
        top = 1 if text.lstrip(_JSON_SPACE).startswith("[") and not lines else 0  # an array of rows
        at = _too_deep(text, MAX_DEPTH + top)
        return "" if at is None else f"line {text.count(chr(10), 0, at) + 1}: {_TOO_DEEP}"


def _first_problem(rows: Iterable[tuple[str, Any]]) -> str:
    """_json_problem's answer for (where, row) pairs, taken one at a time: a value Arrow cannot
    store anywhere comes before a type conflict."""
    types = _TypeConflict()
    conflict = ""
    try:
        for where, value in rows:
            bad = _TOO_DEEP if _depth(value) > MAX_DEPTH else _bad_value(value)
            if bad:
                return f"{where}: {bad}" if where else bad
            conflict = conflict or types.add(value)
    except _Problem as e:
        return str(e)
    except json.JSONDecodeError:  # read_rows' own checks report these first
        return ""
    return conflict


def _json_rows(text: str, lines: bool):
    """(where, row) for each row of a JSON-lines or JSON-array text, parsed by _STRICT; `where` is
    'line N' ('' for a .json file that is one object). A _Problem names its line."""
    body = text.lstrip(_JSON_SPACE)
    if body.startswith("[") and not lines:
        pos = len(text) - len(body) + 1
        line, counted = 1, 0
        while True:
            pos = _skip_space(text, pos)
            if pos >= len(text) or text[pos] == "]":
                return
            line, counted = line + text.count("\n", counted, pos), pos
            value, pos = _decode_at(text, pos, f"line {line}")
            yield f"line {line}", value
            pos = _skip_space(text, pos)
            if pos >= len(text) or text[pos] != ",":
                return
            pos += 1
    if not lines:
        try:
            yield "", _STRICT.decode(text)  # one object: one row
            return
        except json.JSONDecodeError:  # JSON lines saved as .json
            pass
    yield from _line_rows(enumerate(_LINE_BREAK.split(text), 1))


def _line_rows(lines: Iterable[tuple[int, str]]):
    """_json_rows for numbered lines of JSON (read a line at a time from a file)."""
    for number, line in lines:
        if line.strip(_JSON_SPACE):
            try:
                yield f"line {number}", _decode_at(line, _skip_space(line, 0), f"line {number}")[0]
            except RecursionError:  # deeper than Arrow stores, by far
                raise _Problem(f"line {number}: {_TOO_DEEP}") from None


def _decode_at(text: str, pos: int, where: str):
    try:
        return _STRICT.raw_decode(text, pos)
    except _Problem as e:
        raise _Problem(f"{where}: {e}" if where else str(e)) from None


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _JSON_SPACE:
        pos += 1
    return pos


def _bad_value(record: Any) -> str:
    """A number out of range or an unpaired surrogate anywhere in a parsed row, by its field path."""
    stack = [("", record)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, (_TooLarge, float)):
            if isinstance(value, float) and not math.isinf(value):
                continue
            text = value.text if isinstance(value, _TooLarge) else str(value).replace("inf", "Infinity")
            shown = text if len(text) <= 24 else f"{text[:12]}...{text[-6:]} ({len(text)} digits)"
            return f"{where!r} is the number {shown}, {_TOO_LARGE}"
        if isinstance(value, str):
            bad = _SURROGATE.search(value)
            if bad:
                return (f"{where!r} holds an unpaired UTF-16 surrogate (\\u{ord(bad.group()):04x}); "
                        "expected valid Unicode text")
        elif isinstance(value, dict):
            stack.extend(reversed([(f"{where}.{k}" if where else str(k), v) for k, v in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{where}[{i}]", v) for i, v in enumerate(value)]))
    return ""


class _TypeConflict:
    """Rows fed one at a time; `add` answers "row 4: 'messages[1].content' is a number, row 1 has a
    string ..." for the first row whose field has another type than in an earlier row, else ''."""

    def __init__(self):
        self.seen: dict[str, tuple[str, int]] = {}
        self.row = 0

    def add(self, record: Any) -> str:
        self.row += 1
        found = self._walk(record, "")
        return found + " (every row must use the same type for a field)" if found else ""

    def _walk(self, value: Any, where: str) -> str:
        kind = type_name(value)
        if value is None:
            return ""
        key = _generic(where)
        seen = self.seen
        if key in seen and seen[key][0] != kind:
            return f"row {self.row}: {where!r} is {kind}, row {seen[key][1]} has {seen[key][0]}"
        seen.setdefault(key, (kind, self.row))
        if isinstance(value, dict):
            for k, v in value.items():
                found = self._walk(v, f"{where}.{k}" if where else str(k))
                if found:
                    return found
        elif isinstance(value, list):
            for i, v in enumerate(value):
                found = self._walk(v, f"{where}[{i}]")
                if found:
                    return found
        return ""


def _generic(where: str) -> str:
    return re.sub(r"\[\d+\]", "[]", where)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
