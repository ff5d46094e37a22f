"""The event log: every run reports plain-data events (dicts of ints, floats, str, lists) to a
sink, and the Session writes each one as a JSON line to `events.jsonl` in the run folder,
flushed as it goes, so a finished run can be re-read and re-drawn exactly as it looked live.

Every event has `type`, `step` and `time` (seconds since the epoch); the emitters in this package
and training.py are the list of types.
"""

from __future__ import annotations

import errno
import json
import math
import os
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


class LogBusy(OSError):
    """Another process holds this event log (is training this run)."""


class EventLog:
    """Appends events to a JSON-lines file (one line each, written at once) and passes them on.

    Crash safety: reopening a log whose last line was torn by a crash (SIGKILL, power loss)
    cuts the file back to its last complete line, so the log is valid JSON lines again. A write
    that fails (a full disk) is undone the same way and raises (DiskFullError for a full disk).
    `exclusive` holds an advisory lock (POSIX flock) while open: a second writer of the same run
    fails with LogBusy instead of interleaving lines; the lock goes with the process, even killed."""

    def __init__(self, path: Path, forward: Sink | None = None, exclusive: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+b", buffering=0)
        try:
            if exclusive:
                _lock(self._file, self.path)
            drop_torn_tail(self._file.fileno())
        except BaseException:
            self._file.close()
            raise
        self._forward = forward

    def __call__(self, event: dict) -> None:
        event = plain(event)
        try:
            self.write(event)
        finally:   # the sink sees the event even when the disk refused it (a run_finished above all)
            if self._forward is not None:
                self._forward(event)

    def write(self, event: dict) -> None:
        """Write an already plain event without passing it on (the sink has seen it)."""
        if self._file.closed:
            return
        data = (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")
        fd = self._file.fileno()
        size = os.fstat(fd).st_size
        try:
            self._write_bytes(data)
        except OSError as e:
            try:   # no half line stays behind; truncating frees space, so it works on a full disk
                os.ftruncate(fd, size)
            except OSError:
                pass
            from ..paths import disk_full_error

            full = disk_full_error(e, self.path)
            if full is not None:
                raise full from e
            raise

    def _write_bytes(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._file.write(view)
            if not n:
                raise OSError(errno.EIO, "short write", str(self.path))
            view = view[n:]

    def close(self) -> None:
        self._file.close()


def _lock(file, path: Path) -> None:
    try:
        import fcntl
    except ImportError:   # Windows: no advisory lock; one writer per run is then the person's care
        return
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise LogBusy(errno.EAGAIN, "another process is writing this run's event log", str(path)) from None
    except OSError:   # a filesystem without locks (some network mounts): go on unlocked
        pass


def drop_torn_tail(fd: int) -> int:
    """Cut the file open as `fd` back to the end of its last complete line; returns its size."""
    size = os.fstat(fd).st_size
    if size == 0 or _pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = _pread(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            end = start + cut + 1
            break
        end = start
    os.ftruncate(fd, end)
    return end


def _pread(fd: int, n: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    os.lseek(fd, offset, os.SEEK_SET)   # Windows
    return os.read(fd, n)


def read_events(path: Path) -> Iterator[dict]:
    """Events of a run folder's events.jsonl. A line cut short by a crash is skipped, bytes that
    are not UTF-8 (a multi-byte character split by a kill) do not stop the reading."""
    with open(path, "rb") as f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            try:
                event = json.loads(line.decode("utf-8", errors="replace"))
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event
