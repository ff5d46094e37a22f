"""Which process is writing a run folder.

While a Session runs, `run.lock` in its folder names the process (pid, its start time, the host).
A run folder whose log has no `run_finished` event is then one of two things: still running (the
process named is alive), or interrupted (killed, crashed, the machine went down), and only an
interrupted run may be resumed. The start time guards against a recycled pid; a lock written on
another host cannot be checked from here and is taken at its word for a day.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

LOCK = "run.lock"
FOREIGN_HOST_TRUST_S = 24 * 3600


def _start_time(pid: int) -> float | None:
    try:
        import psutil   # installed with accelerate

        return psutil.Process(pid).create_time()
    except ImportError:
        pass
    except Exception:  # NoSuchProcess, AccessDenied
        return None
    if os.name == "posix":
        try:
            os.kill(pid, 0)
            return -1.0      # alive, start time unknown
        except PermissionError:
            return -1.0
        except OSError:
            return None
    return None


def claim(run_dir: Path) -> None:
    """Record this process as the run folder's writer (replacing a stale record)."""
    pid = os.getpid()
    record = {"pid": pid, "started": _start_time(pid), "host": socket.gethostname(), "since": time.time()}
    path = Path(run_dir) / LOCK
    tmp = path.with_name(f".{LOCK}.{pid}.tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def release(run_dir: Path) -> None:
    path = Path(run_dir) / LOCK
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def holder(run_dir: Path) -> int | None:
    """The pid of another live process writing this run folder, or None."""
    try:
        record = json.loads((Path(run_dir) / LOCK).read_text(encoding="utf-8"))
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("host") != socket.gethostname():
        since = record.get("since")
        fresh = isinstance(since, (int, float)) and time.time() - since < FOREIGN_HOST_TRUST_S
        return pid if fresh else None
    if pid == os.getpid():
        return None
    started = _start_time(pid)
    if started is None:
        return None
    recorded = record.get("started")
    if isinstance(recorded, (int, float)) and recorded > 0 and started > 0 and abs(started - recorded) > 1.0:
        return None          # the pid now belongs to another process
    return pid
