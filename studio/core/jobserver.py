"""The engine job process: the window's short torch jobs (the dataset preview, the gallery's
export, combine, resize and import, the playground) run in this long-lived process, never in the
window's, and talk to it in JSON lines (engineclient.EngineClient starts it and speaks for it).

    python -m studio.core.jobserver        # heavy_imports(), then prints {"ready": true}

Requests, one JSON object a line on stdin:
    {"id": N, "call": NAME, "args": {...}, "home": ...}   runs CALLS[NAME](call, **args) on its own thread
                                             (home: the window's LORA_STUDIO_HOME, set for it)
    {"id": N, "cancel": true}                that call's should_stop() turns True
Replies, one JSON object a line on stdout (written under a lock; nothing else goes to stdout):
    {"id": N, "progress": message, "fraction": f or null}
    {"id": N, "text": [which, piece]}        streamed generation ("base" or "adapted")
    {"id": N, "result": value}               plain JSON data
    {"id": N, "error": {"message": one line, "class": the exception's class name, "field": f or null}}
    {"id": N, "cancelled": true}             errors.Cancelled, or anything raised (or returned) after a cancel
Every call ends with exactly one of result, error or cancelled. End of stdin (the window closed
or died) cancels every call; the process exits once they have ended, or after GRACE_S anyway.
Gallery entries travel by name with the gallery's root folder (`"gallery"`, None: the default).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .errors import Cancelled, StudioError, one_line

GRACE_S = 3.0   # after stdin ends, how long running calls have to notice their cancel


# -- the calls -------------------------------------------------------------------------------------

class Call:
    """One request on its thread: what its function reports, streams and asks."""

    def __init__(self, server: "Server", call_id: Any, name: str):
        self.server, self.id, self.name = server, call_id, name
        self.stop = threading.Event()
        self.undo: Callable[[], None] | None = None   # what to release when it ends cancelled with a value

    def progress(self, message: str, fraction: float | None = None) -> None:
        self.server.send({"id": self.id, "progress": str(message),
                          "fraction": None if fraction is None else float(fraction)})

    def text(self, which: str, piece: str) -> None:
        self.server.send({"id": self.id, "text": [which, piece]})

    def should_stop(self) -> bool:
        return self.stop.is_set()


def _gallery(root: str | None):
    from .gallery import Gallery

    return Gallery(root) if root else Gallery()


def preview_dataset(call: Call, *, data: dict, model_source: str, task: str, rows: int = 5, config_source: str = "",
                    seed: int = 0, trust_remote_code: bool = False) -> dict:
    """inspect.preview_dataset, `data` being the DataSection's fields (its tuples come back as lists)."""
    from .config import DataSection
    from .inspect import preview_dataset as preview

    return preview(DataSection(**data), model_source, task, rows=rows, config_source=config_source,
                   progress=call.progress, should_stop=call.should_stop, seed=seed,
                   trust_remote_code=trust_remote_code)


def export_adapter(call: Call, *, entry: str, out_dir: str, overwrite: bool = False,
                   gallery: str | None = None) -> str:
    from . import export

    found = _gallery(gallery)
    return str(export.export_adapter(found.get(entry), out_dir, overwrite=overwrite, gallery=found,
                                     progress=call.progress, should_stop=call.should_stop))


def export_merged(call: Call, *, entry: str, out_dir: str, overwrite: bool = False, dtype: str = "auto",
                  gallery: str | None = None) -> str:
    from . import export

    found = _gallery(gallery)
    return str(export.export_merged(found.get(entry), out_dir, overwrite=overwrite, gallery=found, dtype=dtype,
                                    progress=call.progress, should_stop=call.should_stop))


def combine(call: Call, *, entries: list[str], weights: list[float], method: str = "linear", name: str | None = None,
            density: float = 0.5, gallery: str | None = None) -> str:
    from .combine import combine as combine_entries

    found = _gallery(gallery)
    return combine_entries([found.get(n) for n in entries], weights, method=method, name=name, density=density,
                           gallery=found, progress=call.progress, should_stop=call.should_stop).name


def resize(call: Call, *, entry: str, rank: int | None = None, energy: float | None = None, name: str | None = None,
           gallery: str | None = None) -> str:
    from .resize import resize as resize_entry

    found = _gallery(gallery)
    return resize_entry(found.get(entry), rank=rank, energy=energy, name=name, gallery=found,
                        progress=call.progress, should_stop=call.should_stop).name


def energy_curve(call: Call, *, entry: str, gallery: str | None = None) -> dict:
    from .resize import energy_curve as curve

    return curve(_gallery(gallery).get(entry), progress=call.progress, should_stop=call.should_stop)


def import_folder(call: Call, *, folder: str, name: str | None = None, base_model: str | None = None,
                  gallery: str | None = None) -> str:
    return _gallery(gallery).import_folder(folder, name, base_model).name


# the playgrounds loaded in this process, by handle
_playgrounds: dict[str, Any] = {}
_handles = itertools.count(1)
_playground_lock = threading.Lock()


def _playground(handle: str):
    with _playground_lock:
        found = _playgrounds.get(handle)
    if found is None:
        raise StudioError(f"the playground's model {handle!r} is no longer loaded; load the adapter again")
    return found


def playground_load(call: Call, *, entry: str, gallery: str | None = None) -> str:
    """Load an adapter on its base; the answer is the handle the other playground calls take."""
    from .playground import Playground

    playground = Playground(_gallery(gallery).get(entry)).load(progress=call.progress, should_stop=call.should_stop)
    if call.should_stop():          # stopped while the last part loaded: nothing is kept
        playground.close()
        raise Cancelled("the playground's load was cancelled")
    with _playground_lock:
        handle = f"playground-{next(_handles)}"
        _playgrounds[handle] = playground
    call.undo = lambda: playground_close(call, handle=handle)   # a cancel that comes now
    return handle


def playground_generate(call: Call, *, handle: str, prompt: str, max_new_tokens: int = 128,
                        temperature: float = 0.0) -> dict:
    """The base's then the adapter's answer, each streamed as `text` replies; {"base", "adapted"}."""
    return _playground(handle).generate(prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                                        on_text=call.text, should_stop=call.should_stop)


def playground_classify(call: Call, *, handle: str, text: str) -> dict:
    return _playground(handle).classify(text)


def playground_close(call: Call, *, handle: str) -> None:
    with _playground_lock:
        found = _playgrounds.pop(handle, None)
    if found is not None:
        found.close()


CALLS: dict[str, Callable[..., Any]] = {
    "preview_dataset": preview_dataset,
    "export_adapter": export_adapter,
    "export_merged": export_merged,
    "combine": combine,
    "resize": resize,
    "energy_curve": energy_curve,
    "import_folder": import_folder,
    "playground_load": playground_load,
    "playground_generate": playground_generate,
    "playground_classify": playground_classify,
    "playground_close": playground_close,
}


# -- the protocol ----------------------------------------------------------------------------------

def _plain(value):
    """json's fallback: numpy scalars and arrays, paths; anything else is not plain data."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not plain data")


def error_reply(e: BaseException) -> dict:
    """The error reply's body: one line, the class name and the field (and a full disk's path)."""
    body = {"message": one_line(e), "class": type(e).__name__, "field": getattr(e, "field", None)
            if isinstance(e, StudioError) else None}
    if hasattr(e, "hint") and hasattr(e, "path"):   # paths.DiskFullError: rebuilt from them
        body.update(path=str(e.path), hint=str(e.hint))
    return body


class Server:
    """Reads requests, runs each call on its own daemon thread, writes the replies under a lock."""

    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()
        self.calls: dict[Any, tuple[Call, threading.Thread]] = {}

    def send(self, reply: dict) -> None:
        line = json.dumps(reply, default=_plain)
        with self.lock:
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (OSError, ValueError):   # the window is gone: nobody reads; stdin's end stops us
                pass

    def handle(self, line: str) -> None:
        try:
            request = json.loads(line)
            call_id = request["id"]
        except (ValueError, TypeError, KeyError):
            print(f"jobserver: not a request: {line[:200]!r}", file=sys.stderr)
            return
        if request.get("cancel"):
            with self.lock:
                running = self.calls.get(call_id)
            if running is not None:
                running[0].stop.set()
            return
        name = request.get("call")
        home = request.get("home")   # the window's studio home (its caches, conversions), as it is now
        if home and os.environ.get("LORA_STUDIO_HOME") != home:
            os.environ["LORA_STUDIO_HOME"] = str(home)
        elif not home:
            os.environ.pop("LORA_STUDIO_HOME", None)
        call = Call(self, call_id, str(name))
        thread = threading.Thread(target=self.run, args=(call, request.get("args") or {}), daemon=True,
                                  name=f"job-{call_id}-{name}")
        with self.lock:
            self.calls[call_id] = (call, thread)
        thread.start()

    def run(self, call: Call, args: dict) -> None:
        try:
            self.send(self.outcome(call, args))
        finally:
            with self.lock:
                self.calls.pop(call.id, None)

    def outcome(self, call: Call, args: dict) -> dict:
        """The call's last reply: its result, its error, or cancelled."""
        fn = CALLS.get(call.name)
        try:
            if fn is None:
                raise StudioError(f"the engine has no call named {call.name!r} (expected one of {', '.join(CALLS)})")
            value = fn(call, **args)
            if call.should_stop():
                if call.undo is not None:
                    call.undo()
                return {"id": call.id, "cancelled": True}
            json.dumps(value, default=_plain)   # not plain data: an error, not a broken reply
            return {"id": call.id, "result": value}
        except BaseException as e:   # noqa: BLE001 - every outcome is a reply
            if call.should_stop() or isinstance(e, Cancelled):
                return {"id": call.id, "cancelled": True}
            if not isinstance(e, StudioError):
                traceback.print_exc(file=sys.stderr)
            return {"id": call.id, "error": error_reply(e)}

    def serve(self, stdin) -> bool:
        """Handle requests until stdin ends, then cancel every call and give them GRACE_S to end.
        True when all of them have."""
        for raw in iter(stdin.readline, b""):
            line = raw.decode("utf-8", errors="replace").strip()
            if line:
                self.handle(line)
        with self.lock:
            running = list(self.calls.values())
        for call, _ in running:
            call.stop.set()
        deadline = time.monotonic() + GRACE_S
        for _, thread in running:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for _, thread in running)


def protocol_stream():
    """The real stdout for the replies; fd 1 and sys.stdout then go to stderr, so that a library's
    print (Python's or C's) cannot break a reply line."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", encoding="utf-8", newline="\n")


def main() -> int:
    out = protocol_stream()
    from .imports import heavy_imports

    try:
        heavy_imports()
    except BaseException as e:   # noqa: BLE001 - a broken install: say why before ending
        from .errors import one_line

        traceback.print_exc(file=sys.stderr)
        out.write(json.dumps({"failed": one_line(e)}) + "\n")
        out.flush()
        return 1
    server = Server(out)
    server.send({"ready": True})
    if not server.serve(sys.stdin.buffer):
        # a call still busy in C code (a model loading): end now, as if killed; its writes are atomic
        sys.stderr.flush()
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
    return 0


if __name__ == "__main__":
    sys.exit(main())
