"""Streaming checks of a data file's text before a loader reads it, naming the exact line or byte at fault.

The text is read a chunk (CHUNK) at a time, whatever the file's size: UTF-16/32, binary data and
bytes that are not UTF-8 are refused with their byte offset; JSON lines are split where the
JSON-lines reader splits and parsed one at a time; a .json document, which must be parsed whole,
is refused when it is too large for the free memory. What Arrow cannot store in a parsed row is
found by jsonrows.py.
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Iterable, Iterator

from .errors import DataError
from .jsonrows import (JSON_SPACE, LINE_BREAK, MAX_DEPTH, TOO_DEEP, TOO_LARGE, TooLarge, json_problem,
                       strict_float, strict_int, too_deep, type_name)
from .modelcache import human_size

_WIDE_TEXT = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
              (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_PAIR = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")  # \ud83d\ude00
CHUNK = 1 << 20  # bytes read at a time: what the checks hold of a file, whatever its size
# Parsing JSON whole takes 3 to 11 times its size in memory (bytes, text, Python objects; measured on
# chat, text and numeric rows), and datasets' .json reader parses a document whole again after us:
# one JSON value over a quarter of the free memory cannot be read.
_JSON_MEMORY_FACTOR = 4
_ASCII_SPACE = b" \t\n\r\x0b\x0c"  # what bytes.strip() strips
_HUGE_INT = "a number with thousands of digits; expected numbers that fit in 64 bits"


def text_chunks(name: str, p: Path, head: bytes) -> Iterator[str]:
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
            chunk = f.read(CHUNK)
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


def numbered_lines(name: str, chunks: Iterable[str]) -> Iterator[tuple[int, str]]:
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
        parts = LINE_BREAK.split(text)
        for part in parts[:-1]:
            number += 1
            yield number, "".join(pieces) + part if pieces else part
            pieces, length = [], 0
        if parts[-1]:
            pieces.append(parts[-1])
            length += len(parts[-1])
            if length > CHUNK and length - len(parts[-1]) <= CHUNK:  # just grew past one chunk
                start = "".join(pieces)[:CHUNK].lstrip(JSON_SPACE)[:1]
                if start and start != "{":
                    raise DataError(f"{name}: line {number + 1}: over {human_size(CHUNK)} of text that is not a "
                                    f"JSON object (it starts with {start!r}); expected one JSON object per line")
            if length > CHUNK:
                limit = limit or json_limit()
                if length > limit:
                    raise DataError(f"{name}: line {number + 1} is longer than {human_size(limit)}: one row that "
                                    f"large cannot be parsed in this machine's free memory "
                                    f"({human_size(_available_memory())}); expected one JSON object per line")
    if pieces:
        yield number + 1, "".join(pieces)


def _available_memory() -> int:
    import psutil

    return psutil.virtual_memory().available


def json_limit() -> int:
    """The longest JSON text (a .json document, a line of a .jsonl) that can be parsed whole now."""
    return _available_memory() // _JSON_MEMORY_FACTOR


def starts_json_lines(name: str, first: str, size: int) -> bool:
    """Whether a .json file too large to parse whole holds JSON lines (which are read a line at a
    time); a single document that large is refused."""
    body = first.lstrip(JSON_SPACE)
    if not body.startswith(("[", "{")):
        start = f"it starts with {body[:1]!r}" if body else f"its first {human_size(CHUNK)} are blank"
        raise DataError(f"{name}: not JSON rows ({start}); expected a JSON array of objects, or one JSON "
                        "object per line")
    line = LINE_BREAK.split(body, maxsplit=1)
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


def _looks_utf16(raw: bytes) -> bool:
    """Mostly-ASCII UTF-16: one byte of each pair is zero (the high byte), the other is not."""
    head = raw[:512]
    if len(head) < 4:
        return False
    for zeros, chars in ((head[1::2], head[0::2]), (head[0::2], head[1::2])):  # little-, big-endian
        if zeros.count(0) >= 0.9 * len(zeros) and chars.count(0) <= 0.1 * len(chars):
            return True
    return False


def check_json_lines(name: str, lines: Iterable[tuple[int, str]]) -> None:
    for number, line in lines:
        if not line.strip(JSON_SPACE):
            continue
        try:
            value = json.loads(line)
        except RecursionError:  # nested about a thousand deep; shallower ones fail in Arrow (see datafiles)
            raise DataError(f"{name}: line {number}: {TOO_DEEP}") from None
        except json.JSONDecodeError as e:
            truncated = e.pos >= len(line.rstrip()) or e.msg.startswith("Unterminated string")
            what = "truncated JSON" if truncated else f"invalid JSON ({e.msg} at column {e.colno})"
            raise DataError(f"{name}: line {number}: {what}; expected one JSON object per line") from None
        except ValueError:  # an integer past Python's 4300-digit limit
            raise DataError(f"{name}: line {number}: {_HUGE_INT}") from None
        if not isinstance(value, dict):
            raise DataError(f"{name}: line {number}: expected a JSON object {{...}}, got {type_name(value)}")


def check_json_document(name: str, text: str) -> None:
    # The .json reader (ujson) turns 1e999 and Infinity into null and an unpaired surrogate into '',
    # silently: note such numbers while parsing (the hooks run once per number, which text has few of)
    too_large: list[TooLarge] = []

    def noted(parse):
        def note(text: str):
            value = parse(text)
            if isinstance(value, TooLarge):
                too_large.append(value)
            return value
        return note

    try:
        value = json.loads(text, parse_float=noted(strict_float), parse_int=noted(strict_int),
                           parse_constant=noted(lambda c: float(c) if c == "NaN" else TooLarge(c)))
    except RecursionError:
        top = 1 if text.lstrip(JSON_SPACE).startswith("[") else 0  # an array of rows is no row level
        at = too_deep(text, MAX_DEPTH + top) or 0
        raise DataError(f"{name}: line {text.count(chr(10), 0, at) + 1}: {TOO_DEEP}") from None
    except json.JSONDecodeError as e:
        if "Extra data" in e.msg:  # several objects: JSON lines saved as .json, datasets reads those
            check_json_lines(name, enumerate(LINE_BREAK.split(text), 1))
            return
        raise DataError(f"{name}: line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(value, list):
        for i, item in enumerate(value, 1):
            if not isinstance(item, dict):
                raise DataError(f"{name}: row {i}: expected a JSON object {{...}}, got {type_name(item)}")
    elif not isinstance(value, dict):
        raise DataError(f"{name}: expected a JSON array of objects, got {type_name(value)}")
    if too_large or _maybe_lone_surrogate(text):  # rare: find the row and field
        found = json_problem(text)
        if "too large" in found or "surrogate" in found:
            raise DataError(f"{name}: {found}")
        if too_large:  # found something else first (a key twice, which this reader takes)
            raise DataError(f"{name}: the number {too_large[0].text[:40]} is {TOO_LARGE}")


def _maybe_lone_surrogate(text: str) -> bool:
    """Whether the text may hold a \\ud800-style escape that is not half of a pair (a quick filter:
    an escaped backslash before it also counts)."""
    return bool(_SURROGATE_ESCAPE.search(text) and _SURROGATE_ESCAPE.search(_SURROGATE_PAIR.sub("", text)))
