"""Data files -> rows: reading .jsonl, .json, .csv, .parquet and .txt through `datasets`, after
cheap checks of our own that can name the exact file, line and byte at fault (the loaders' own
errors cannot). data.py turns the rows into formatted, tokenized examples.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import datasets

_LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def read_rows(path: str) -> "datasets.Dataset":
    """Load a .jsonl/.json/.csv/.parquet/.txt file as a datasets.Dataset (DataError on anything bad)."""
    p = Path(path)
    name = p.name
    ext = p.suffix.lower()
    if not p.exists():
        raise DataError(f"{path}: no such file")
    if p.is_dir():
        raise DataError(f"{path}: is a folder, expected a data file ({', '.join(_LOADERS)})")
    if ext not in _LOADERS:
        raise DataError(f"{name}: unsupported file type '{ext or '(none)'}' "
                        f"(expected one of {', '.join(_LOADERS)})")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"{name}: cannot read ({e.strerror})") from None
    if not raw.strip():
        raise DataError(f"{name}: the file is empty")
    if ext == ".parquet":
        if raw[:4] != b"PAR1":
            raise DataError(f"{name}: not a Parquet file (it does not start with the PAR1 marker)")
    else:
        _check_text(name, raw)
        if ext == ".jsonl":
            _check_json_lines(name, raw)  # cheap, and the only way to name the bad line
        elif ext == ".json":
            _check_json_document(name, raw)

    import datasets

    try:
        rows = datasets.load_dataset(_LOADERS[ext], data_files=str(p), split="train")
    except Exception as e:  # datasets / pyarrow / pandas errors: turn them into one line
        raise DataError(f"{name}: {_reason(name, raw, ext, e)}") from None
    if ext == ".txt":
        rows = rows.select([i for i, t in enumerate(rows["text"]) if t.strip()])  # blank lines are no rows
    if len(rows) == 0:
        raise DataError(f"{name}: the file has no rows")
    return rows


def _check_text(name: str, raw: bytes) -> None:
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{name}: binary data at byte offset {nul} (expected UTF-8 text)")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not UTF-8 text: invalid byte 0x{raw[e.start]:02x} at byte offset {e.start}") from None


def _check_json_lines(name: str, raw: bytes) -> None:
    for number, line in enumerate(raw.decode("utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            truncated = e.pos >= len(line.rstrip()) or e.msg.startswith("Unterminated string")
            what = "truncated JSON" if truncated else f"invalid JSON ({e.msg} at column {e.colno})"
            raise DataError(f"{name}: line {number}: {what}; expected one JSON object per line") from None
        if not isinstance(value, dict):
            raise DataError(f"{name}: line {number}: expected a JSON object {{...}}, got {type_name(value)}")


def _check_json_document(name: str, raw: bytes) -> None:
    text = raw.decode("utf-8-sig")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        if "Extra data" in e.msg:  # several objects: JSON lines saved as .json, datasets reads those
            _check_json_lines(name, raw)
            return
        raise DataError(f"{name}: line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(value, list):
        for i, item in enumerate(value, 1):
            if not isinstance(item, dict):
                raise DataError(f"{name}: row {i}: expected a JSON object {{...}}, got {type_name(item)}")
    elif not isinstance(value, dict):
        raise DataError(f"{name}: expected a JSON array of objects, got {type_name(value)}")


def _reason(name: str, raw: bytes, ext: str, error: Exception) -> str:
    """One line for a loader failure; for JSON, find the row whose types disagree with the others."""
    if ext in (".json", ".jsonl"):
        records = _json_records(raw)
        if records is not None:
            conflict = _type_conflict(records)
            if conflict:
                return conflict
    while error.__cause__ is not None or error.__context__ is not None:  # datasets wraps the real cause
        error = error.__cause__ or error.__context__
    text = " ".join(str(error).split()) or type(error).__name__
    if "corresponds to no data" in text or "No columns to parse" in text:
        return "the file has no rows"
    if ext == ".csv":
        return f"not a valid CSV table ({text[:300]})"
    return f"cannot read rows ({type(error).__name__}: {text[:300]})"


def _json_records(raw: bytes) -> list | None:
    text = raw.decode("utf-8-sig")
    try:
        value = json.loads(text)
        return value if isinstance(value, list) else [value]
    except json.JSONDecodeError:
        pass
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError:
        return None


def _type_conflict(records: list) -> str:
    """'row 4: 'messages[1].content' is a number, earlier rows have a string' or ''."""
    seen: dict[str, tuple[str, int]] = {}

    def walk(value: Any, where: str, row: int) -> str:
        kind = type_name(value)
        if value is None:
            return ""
        key = _generic(where)
        if key in seen and seen[key][0] != kind:
            return f"row {row}: '{where}' is {kind}, row {seen[key][1]} has {seen[key][0]}"
        seen.setdefault(key, (kind, row))
        if isinstance(value, dict):
            for k, v in value.items():
                found = walk(v, f"{where}.{k}" if where else str(k), row)
                if found:
                    return found
        elif isinstance(value, list):
            for i, v in enumerate(value):
                found = walk(v, f"{where}[{i}]", row)
                if found:
                    return found
        return ""

    for row, record in enumerate(records, 1):
        found = walk(record, "", row)
        if found:
            return found + " (every row must use the same type for a field)"
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
