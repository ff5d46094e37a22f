"""Parsed JSON rows checked for what Arrow cannot store, as one-line reasons naming the line and field.

A key twice in one object, a number beyond the float range or 64 bits, an unpaired UTF-16
surrogate, nesting deeper than MAX_DEPTH, and a field whose type differs between rows: the JSON
readers underneath `datasets` take some of these silently and fail on others with messages that
name neither the line nor the field. The strict decoder here parses a row and says which.
jsoncheck.py reads the file's text and calls this; datafiles.py calls it to explain a loader failure.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable

MAX_DEPTH = 63  # levels of [ ] and { } in one row, the row's own { } included: as deep as Arrow stores
JSON_SPACE = " \t\r\n"
LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what the JSON-lines reader splits on (not str.splitlines: U+2028 ...)
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')  # a string, or a bracket
_SURROGATE = re.compile("[\ud800-\udfff]")

TOO_LARGE = "too large to store (expected a float below about 1.8e308, or an integer that fits in 64 bits)"
TOO_DEEP = f"nested too deeply (more than {MAX_DEPTH} levels of lists and objects in one row)"


def too_deep(text: str, limit: int) -> int | None:
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


class _Problem(ValueError):
    """What is wrong with one JSON row, raised from the strict parser's hooks."""


class TooLarge:
    """A JSON number that Arrow cannot store: beyond the float range (Python reads it as inf) or an
    integer beyond 64 bits (the .json reader refuses it)."""

    def __init__(self, text: str):
        self.text = text


def strict_float(text: str) -> float | TooLarge:
    value = float(text)
    return TooLarge(text) if math.isinf(value) else value


def strict_int(text: str) -> int | TooLarge:
    if len(text) > 21:  # also keeps int() away from Python's 4300-digit limit
        return TooLarge(text)
    value = int(text)
    return value if -2**63 <= value < 2**64 else TooLarge(text)


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


_STRICT = json.JSONDecoder(object_pairs_hook=_strict_object, parse_float=strict_float, parse_int=strict_int)


def json_problem(text: str, lines: bool = False) -> str:
    """'line 4: ...' for the first row the Arrow JSON reader cannot take (a key twice, a number out
    of range, an unpaired surrogate, a field whose type differs between rows), or ''."""
    try:
        return first_problem(_json_rows(text, lines))
    except RecursionError:  # close to Python's limit, and the stack is deeper here than in read_rows
        top = 1 if text.lstrip(JSON_SPACE).startswith("[") and not lines else 0  # an array of rows
        at = too_deep(text, MAX_DEPTH + top)
        return "" if at is None else f"line {text.count(chr(10), 0, at) + 1}: {TOO_DEEP}"


def first_problem(rows: Iterable[tuple[str, Any]]) -> str:
    """json_problem's answer for (where, row) pairs, taken one at a time: a value Arrow cannot
    store anywhere comes before a type conflict."""
    types = _TypeConflict()
    conflict = ""
    try:
        for where, value in rows:
            bad = TOO_DEEP if _depth(value) > MAX_DEPTH else _bad_value(value)
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
    body = text.lstrip(JSON_SPACE)
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
    yield from line_rows(enumerate(LINE_BREAK.split(text), 1))


def line_rows(lines: Iterable[tuple[int, str]]):
    """_json_rows for numbered lines of JSON (read a line at a time from a file)."""
    for number, line in lines:
        if line.strip(JSON_SPACE):
            try:
                yield f"line {number}", _decode_at(line, _skip_space(line, 0), f"line {number}")[0]
            except RecursionError:  # deeper than Arrow stores, by far
                raise _Problem(f"line {number}: {TOO_DEEP}") from None


def _decode_at(text: str, pos: int, where: str):
    try:
        return _STRICT.raw_decode(text, pos)
    except _Problem as e:
        raise _Problem(f"{where}: {e}" if where else str(e)) from None


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in JSON_SPACE:
        pos += 1
    return pos


def _bad_value(record: Any) -> str:
    """A number out of range or an unpaired surrogate anywhere in a parsed row, by its field path."""
    stack = [("", record)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, (TooLarge, float)):
            if isinstance(value, float) and not math.isinf(value):
                continue
            text = value.text if isinstance(value, TooLarge) else str(value).replace("inf", "Infinity")
            shown = text if len(text) <= 24 else f"{text[:12]}...{text[-6:]} ({len(text)} digits)"
            return f"{where!r} is the number {shown}, {TOO_LARGE}"
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
