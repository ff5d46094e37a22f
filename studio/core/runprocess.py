"""A run's child process seen from the window: start it, hand it the run, read what it says,
pause/resume/stop it, and say in one sentence how it ended when it died without a result.

    child = RunProcess.take()                  # a warm spare when there is one (see below)
    child.begin(config, resume_dir)
    for message in child.messages():           # {"event": ...}, {"alive": ...}, {"result": ...}
        ...
    child.send("stop"); child.kill()           # from any thread
    result = child.outcome(last_step)          # the result, or what the child's death means

The child (runchild.py) imports torch, transformers and peft before it says `ready`, a few
seconds. So that Train does not wait for that, `prewarm()` starts a spare child ahead of time,
and `take()` hands it out and starts the next one. Qt-free and torch-free: the window imports
this module, and the protocol is plain JSON lines over the child's stdin and stdout.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

from . import childcmd

_spare: "RunProcess | None" = None
_spare_lock = threading.Lock()
# signals that end a process on purpose (a kill, the out-of-memory killer, a shutdown): the run
# is interrupted, and its last checkpoint resumes; any other signal is a crash (a failure)
KILLED = {signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT}


class RunProcess:
    """One child process for one run."""

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        self.pid = popen.pid
        self.result: dict | None = None
        self.started = False
        self.ready = False           # it said `ready` (its imports are done)
        self.killed = False          # the window ended it (kill)
        self._fd = popen.stdout.fileno()
        self._buffer = b""
        self._write_lock = threading.Lock()

    @classmethod
    def spawn(cls) -> "RunProcess":
        # its own session: a Ctrl-C in the window's terminal never kills the child half way
        # through a checkpoint (the window's end of its stdin closes, and it stops at a step)
        popen = subprocess.Popen(childcmd.command("studio.core.runchild"), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, env=childcmd.environment(), start_new_session=True)
        return cls(popen)

    @classmethod
    def take(cls) -> "RunProcess":
        """The warm spare if it is alive (the next one starts at once), else a new child."""
        global _spare
        with _spare_lock:
            child, _spare = _spare, None
        if child is None or child.popen.poll() is not None:
            child = cls.spawn()
        prewarm()
        return child

    def wait_ready(self, timeout: float = 0.0) -> bool:
        """True once the child has said `ready`, waiting up to `timeout` seconds for it. Before
        its run it says nothing else, so the line read here is never one `messages` needs."""
        if not self.ready and not self.started:
            line = self._line(timeout)
            self.ready = line is not None and "ready" in json.loads(line or b"{}")
        return self.ready

    # -- talking to it -------------------------------------------------------------------------

    def begin(self, config, resume_dir: str | Path | None = None) -> None:
        """Hand the child its run (a RunConfig); it starts as soon as its imports are done."""
        self.started = True
        # the studio home as it is now (a spare was started earlier, with the environment of then)
        self._write({"config": config.to_dict(), "source": config.source_path,
                     "resume_dir": str(resume_dir) if resume_dir else None,
                     "home": os.environ.get("LORA_STUDIO_HOME")})

    def send(self, cmd: str) -> None:
        """"pause", "resume" or "stop"; a child that has gone is not an error."""
        self._write({"cmd": cmd})

    def _write(self, message: dict) -> None:
        with self._write_lock:
            try:
                self.popen.stdin.write((json.dumps(message) + "\n").encode("utf-8"))
                self.popen.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass

    def messages(self) -> Iterator[dict]:
        """What the child says, in order, until its result or its end (blocking; one reader
        thread). The run is over at its result: the child's interpreter may take a second or two
        more to exit, which nobody waits for (a daemon thread reaps it)."""
        while True:
            line = self._line(None)
            if not line:
                return            # it ended (or died while its tokenizing workers held the pipe)
            try:
                message = json.loads(line)
            except ValueError:
                continue          # not a protocol line (cannot happen: the child keeps stdout for them)
            yield message
            if "result" in message:
                self.result = message["result"]
                threading.Thread(target=self.popen.wait, name="reap-run", daemon=True).start()
                return

    def _line(self, timeout: float | None) -> bytes | None:
        """The child's next line (b"" at its end), or None if none came within `timeout` seconds.
        Read from the pipe itself, a second at a time, so that a child that has died is noticed
        even while a worker it forked still holds the pipe open."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            if select.select([self._fd], [], [], wait)[0]:
                chunk = os.read(self._fd, 1 << 16)
                if not chunk:
                    return b""
                self._buffer += chunk
            elif self.popen.poll() is not None:
                return b""
            elif deadline is not None and time.monotonic() >= deadline:
                return None
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def kill(self) -> None:
        """The last resort: the run ends where it is (its last checkpoint resumes). The whole
        process group goes: the child leads its own session, and its tokenizing workers (forked,
        holding the pipe) end with it."""
        self.killed = True
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            try:
                self.popen.kill()
            except OSError:
                pass

    def close(self) -> None:
        """A spare that is not needed: it holds nothing, so it ends at once (even mid-import)."""
        self.kill()
        try:
            self.popen.stdin.close()
        except OSError:
            pass
        self.popen.wait()

    # -- how it ended --------------------------------------------------------------------------

    def outcome(self, last_step: int | None = None, run_dir: str | None = None) -> dict:
        """The run's result: the child's own when it sent one, else what its death means."""
        if self.result is not None:
            return self.result
        code = self.popen.wait()
        where = f" at step {last_step}" if last_step else " before its first step"
        if code < 0:
            try:
                sig = signal.Signals(-code)
                name = sig.name
            except ValueError:
                sig, name = None, f"signal {-code}"
            interrupted = sig in KILLED
            if self.killed:
                how = "was ended from the window"
            elif sig == signal.SIGKILL:
                how = "was killed (SIGKILL, often the out-of-memory killer)"
            else:
                how = f"was killed ({name})" if interrupted else f"crashed ({name}, a fault in native code)"
            error = f"the run's process {how}{where}; resume it from its last checkpoint"
        else:
            interrupted = False
            error = f"the run's process ended without a result (exit code {code}){where}"
        return {"status": "interrupted" if interrupted else "failed", "error": error, "error_field": None,
                "exit_code": 130 if interrupted else 1, "run_dir": run_dir, "adapter_path": None,
                "gallery_entry": None}


def prewarm() -> None:
    """Start a spare child now, if there is none, so that the next run skips the imports
    (LORA_STUDIO_SPARE_RUN=0 turns spares off: every run then starts its child when it starts)."""
    global _spare
    if os.environ.get("LORA_STUDIO_SPARE_RUN", "1") == "0":
        return
    with _spare_lock:
        if _spare is None or _spare.popen.poll() is not None:
            _spare = RunProcess.spawn()


def spare_ready(timeout: float = 0.0) -> bool:
    """The spare child is there and ready (waiting up to `timeout` seconds for it)."""
    with _spare_lock:
        child = _spare
    return child is not None and child.wait_ready(timeout)


def close_spare() -> None:
    """The window closes: the spare exits (its stdin closes)."""
    global _spare
    with _spare_lock:
        child, _spare = _spare, None
    if child is not None:
        child.close()
