"""The window's way to the engine job process (jobserver.py): starts it when first needed, sends it
calls, and hands back their progress, streamed text, results, errors and cancellations, so that
no torch work runs in the window's process. torch-free and Qt-free: the window imports it.

    client = engine()                       # one per process; shutdown_engine() at exit
    client.start(wait=False)                # optional: warm it up in the background
    name = client.call("combine", {"entries": [...], "weights": [...], "gallery": root},
                       progress=progress, should_stop=should_stop)   # blocks this (task) thread

`call` raises the StudioError the engine raised (the same class when it is one of the torch-free
ones: errors.*, gallery.GalleryError, paths.DiskFullError; StudioError otherwise, with the same
message and field), errors.Cancelled when it was stopped, and EngineDied when the process ended
under it (killed, crashed, out of memory); the next call starts a fresh process.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import Any, Callable

from . import childcmd, errors, gallery, paths
from .errors import Cancelled, StudioError

POLL_S = 0.1          # how often a waiting call asks should_stop
STARTING = "starting the engine"


class EngineDied(StudioError):
    """The engine process ended while calls were running (killed, crashed, out of memory)."""

    exit_code = 1


def _error_classes() -> dict[str, type[StudioError]]:
    """The StudioError classes a reply's "class" may name, found in the torch-free modules."""
    found, todo = {}, [StudioError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.__name__, cls)
        todo.extend(cls.__subclasses__())
    return {name: cls for name, cls in found.items() if cls.__module__ in (errors.__name__, gallery.__name__,
                                                                           paths.__name__)}


def rebuild_error(body: dict) -> StudioError:
    """The exception an error reply stands for: its class where the window knows it, else StudioError."""
    message, field = str(body.get("message") or "the engine failed"), body.get("field")
    cls = _error_classes().get(str(body.get("class")), StudioError)
    if issubclass(cls, paths.DiskFullError):
        if body.get("path") is not None:
            return cls(body["path"], body.get("hint") or "free some space and try again")
        cls = StudioError
    return cls(message, field=field)


def _ended(code: int | None) -> str:
    if code is None:
        return "its output closed"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Process:
    """One engine process: its pipes, its reader thread, the calls waiting for its replies."""

    def __init__(self, command: list[str]):
        # its own session: a Ctrl-C in the window's terminal ends the window, and so the engine's
        # stdin, never a call half way
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=childcmd.environment(),
                                     start_new_session=True)
        self.failure = ""                     # why it could not start (its one line), if it said
        self.ready = threading.Event()
        self.dead = False
        self.closing = False                  # closed on purpose: not a death to report as one
        self.lock = threading.Lock()          # waiting, dead
        self.write_lock = threading.Lock()
        self.waiting: dict[int, tuple[str, queue.Queue]] = {}
        threading.Thread(target=self.read, daemon=True, name="engine-reader").start()

    def add(self, call_id: int, name: str, box: queue.Queue) -> bool:
        with self.lock:
            if self.dead:
                return False
            self.waiting[call_id] = (name, box)
            return True

    def forget(self, call_id: int) -> None:
        with self.lock:
            self.waiting.pop(call_id, None)

    def send(self, request: dict) -> None:
        data = (json.dumps(request) + "\n").encode("utf-8")
        with self.write_lock:
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (OSError, ValueError):   # it died: the reader tells every waiting call
                pass

    def read(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            try:
                reply = json.loads(raw)
            except ValueError:
                print(f"engine: not a reply: {raw[:200]!r}", file=sys.stderr)
                continue
            if reply.get("ready"):
                self.ready.set()
                continue
            if reply.get("failed"):          # it could not start (a broken install): its own line
                self.failure = str(reply["failed"])
                continue
            with self.lock:
                waiting = self.waiting.get(reply.get("id"))
            if waiting is not None:
                waiting[1].put(reply)
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        with self.lock:
            self.dead = True
            waiting, self.waiting = dict(self.waiting), {}
        names = sorted({name for name, _ in waiting.values()})
        what = f"while running {' and '.join(names)}" if names else "while starting"
        how = "was closed" if self.closing else f"stopped ({_ended(code)})"
        why = f": {self.failure}" if self.failure else ""
        died = {"died": f"the engine process {how} {what}{why}; nothing was changed"}
        for _, box in waiting.values():
            box.put(died)
        self.ready.set()   # nobody waits for a start that will not come

    def close(self, timeout: float) -> None:
        self.closing = True
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class EngineClient:
    """Calls into the engine process, from any number of threads at once."""

    def __init__(self, command: list[str] | None = None):
        self.command = command or childcmd.command("studio.core.jobserver")
        self._lock = threading.Lock()
        self._process: _Process | None = None
        self._ids = itertools.count(1)

    def _current(self) -> _Process:
        with self._lock:
            if self._process is None or self._process.dead:
                self._process = _Process(self.command)
            return self._process

    @property
    def running(self) -> bool:
        """A process is started and has not ended (it may still be importing torch)."""
        process = self._process
        return process is not None and not process.dead

    def start(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Start the process unless it runs. wait=False returns at once (a warm-up: the heavy
        imports happen in the background); wait=True waits until it is ready. True when ready."""
        process = self._current()
        return process.ready.wait(timeout) and not process.dead if wait else process.ready.is_set()

    def call(self, name: str, args: dict | None = None, *, progress: Callable[[str, float | None], None] | None = None,
             should_stop: Callable[[], bool] | None = None,
             on_text: Callable[[str, str], None] | None = None) -> Any:
        """Run `name` in the engine and return its result; blocks the calling thread. progress and
        on_text are called on this thread; should_stop is asked every POLL_S and a True sends one
        cancel (the call then raises errors.Cancelled, unless its result came first)."""
        if should_stop is not None and should_stop():
            raise Cancelled(f"{name} cancelled before it started")
        box: queue.Queue = queue.Queue()
        call_id = next(self._ids)
        process = self._current()
        while not process.add(call_id, name, box):   # it died just now: a fresh one
            process = self._current()
        try:
            if progress is not None and not process.ready.is_set():
                progress(STARTING, None)
            process.send({"id": call_id, "call": name, "args": args or {},
                          "home": os.environ.get("LORA_STUDIO_HOME")})   # the caller's, which may have moved
            return self._wait(process, call_id, box, progress, should_stop, on_text)
        finally:
            process.forget(call_id)

    @staticmethod
    def _wait(process: _Process, call_id: int, box: queue.Queue, progress, should_stop, on_text) -> Any:
        """Hand on the call's replies until its last one. Left early (a callback raised, an
        interrupt), it cancels the call: the engine does not go on with work nobody awaits."""
        cancel_sent = final = False
        try:
            while True:
                try:
                    reply = box.get(timeout=POLL_S)
                except queue.Empty:
                    reply = None
                if reply is not None and "progress" in reply and progress is not None:
                    progress(reply["progress"], reply.get("fraction"))
                elif reply is not None and "text" in reply and on_text is not None:
                    on_text(*reply["text"])
                # asked every POLL_S, and after each progress or text reply (a stop asked in a
                # progress callback is sent at once, not a poll later)
                if not cancel_sent and should_stop is not None and should_stop():
                    process.send({"id": call_id, "cancel": True})
                    cancel_sent = True
                if reply is None or "progress" in reply or "text" in reply:
                    continue
                final = True
                if "result" in reply:
                    return reply["result"]
                if "cancelled" in reply:
                    raise Cancelled("cancelled; nothing was written")
                if "error" in reply:
                    raise rebuild_error(reply["error"])
                raise EngineDied(reply.get("died") or "the engine process stopped; nothing was changed")
        finally:
            if not final and not cancel_sent:
                process.send({"id": call_id, "cancel": True})

    def send_only(self, name: str, args: dict | None = None) -> None:
        """Ask the running engine to run `name`, and do not wait for its reply (to free what it
        holds while the window closes). Nothing happens when no engine runs."""
        process = self._process
        if process is not None and not process.dead:
            process.send({"id": next(self._ids), "call": name, "args": args or {},
                          "home": os.environ.get("LORA_STUDIO_HOME")})

    def close(self, timeout: float = 10) -> None:
        """End the process: its stdin closes (it cancels what runs and exits); killed after `timeout`."""
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            process.close(timeout)

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.proc.pid if process is not None and not process.dead else None


_engine: EngineClient | None = None
_engine_lock = threading.Lock()


def engine() -> EngineClient:
    """This process's client (the process itself starts on its first call, or on start())."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = EngineClient()
        return _engine


def shutdown_engine(timeout: float = 10) -> None:
    """Close this process's engine, if one was started (the window calls it when it closes)."""
    global _engine
    with _engine_lock:
        client, _engine = _engine, None
    if client is not None:
        client.close(timeout)


class RemotePlayground:
    """A gallery entry's Playground loaded in the engine process: the methods of
    studio.core.playground.Playground, each one a call. If the engine was restarted since the
    load (it died, say, mid-generation), the next answer loads the adapter again first."""

    def __init__(self, entry, client: EngineClient | None = None):
        self.entry = entry
        self.task = entry.task
        self.client = client or engine()
        self.handle: str | None = None
        self.engine_pid: int | None = None

    def load(self, progress=None, should_stop=None) -> "RemotePlayground":
        pid = self.client.pid
        handle = self.client.call("playground_load", {"entry": self.entry.name, "gallery": str(self.entry.path.parent)},
                                  progress=progress, should_stop=should_stop)
        # the handle belongs to the engine that ran the call: the one running before it, or the
        # one the call started (an engine that died since is noticed by the next answer)
        self.handle, self.engine_pid = handle, pid if pid is not None else self.client.pid
        return self

    def _loaded(self, should_stop=None) -> str:
        if self.handle is None or self.client.pid != self.engine_pid:
            self.load(should_stop=should_stop)
        return self.handle

    def generate(self, prompt: str, *, max_new_tokens: int = 128, temperature: float = 0.0, on_text=None,
                 should_stop=None) -> dict:
        return self.client.call("playground_generate", {"handle": self._loaded(should_stop), "prompt": prompt,
                                                        "max_new_tokens": int(max_new_tokens),
                                                        "temperature": float(temperature)},
                                on_text=on_text, should_stop=should_stop)

    def classify(self, text: str) -> dict:
        return self.client.call("playground_classify", {"handle": self._loaded(), "text": text})

    def close(self) -> None:
        """Free the model in the engine, without waiting for it (the window may be closing)."""
        handle, self.handle = self.handle, None
        if handle is not None and self.client.pid == self.engine_pid:
            self.client.send_only("playground_close", {"handle": handle})
