"""The event log: every run reports plain-data events (dicts of ints, floats, str, lists) to a
sink, and the Session writes each one as a JSON line to `events.jsonl` in the run folder,
flushed as it goes, so a finished run can be re-read and re-drawn exactly as it looked live.

Every event has `type`, `step` and `time` (seconds since the epoch); DESIGN.md lists the types.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

Sink = Callable[[dict], None]


def make_event(type: str, step: int = 0, **payload: Any) -> dict:
    return {"type": type, "step": int(step), "time": time.time(), **payload}


def plain(value: Any) -> Any:
    """Make a value JSON-safe: NaN/inf become None, tuples become lists, numpy/torch scalars floats."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalar
        try:
            return plain(value.item())
        except (ValueError, RuntimeError):
            pass
    if hasattr(value, "tolist"):
        return plain(value.tolist())
    return str(value)


class EventLog:
    """Appends events to a JSON-lines file (one line each, flushed) and passes them on."""

    def __init__(self, path: Path, forward: Sink | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        if self._file.tell() > 0 and not self.path.read_bytes().endswith(b"\n"):
            self._file.write("\n")  # a line torn by a crash stays alone; read_events skips it
        self._forward = forward

    def __call__(self, event: dict) -> None:
        event = plain(event)
        self.write(event)
        if self._forward is not None:
            self._forward(event)

    def write(self, event: dict) -> None:
        """Write an already plain event without passing it on (the sink has seen it)."""
        if not self._file.closed:
            self._file.write(json.dumps(event, ensure_ascii=False) + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_events(path: Path) -> Iterator[dict]:
    """Events of a run folder's events.jsonl; a line cut short by a crash is skipped."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
