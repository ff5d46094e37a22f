"""A run's own process: one Session, speaking the event protocol to the window over a pipe.

    python -m studio.core.runchild        (started by runprocess.RunProcess, never by hand)

The window's process never imports torch: each run trains here, in a child that runs the same
engine as `lora-studio train`. The protocol is JSON lines:

  child → window (stdout)   {"ready": pid}                 the heavy libraries are imported
                            {"event": {...}}               one event of the typed protocol (events.py)
                            {"alive": seconds}             every HEARTBEAT seconds while it runs
                            {"result": {...}}              the RunResult as plain data, last
  window → child (stdin)    {"config": {...}, "source": "...", "resume_dir": null, "home": "..."}
                                                           once: the run (home: LORA_STUDIO_HOME)
                            {"cmd": "pause" | "resume" | "stop"}

`events.jsonl` in the run folder stays the record; the pipe only carries what the window draws.
A child is started ahead of time (a spare, see runprocess.py) and waits for its run after
`ready`. If the window goes away (its end of stdin closes: a crash, a kill, a quit), the child
stops at the next step boundary and saves a checkpoint and its adapter: no orphan trains on.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

HEARTBEAT = 2.0   # seconds between two "alive" lines while a run is under way
NICENESS = 10     # added to the run process's nice value (os.nice)


class Pipe:
    """The protocol's writing end: one JSON object per line, from any thread. Once the window has
    gone (a broken pipe), writes are dropped and `gone` is set."""

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.Lock()
        self.gone = threading.Event()

    def send(self, message: dict) -> None:
        if self.gone.is_set():
            return
        line = json.dumps(message, default=str) + "\n"
        with self.lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.gone.set()


def protocol_stdout():
    """The real stdout as the protocol's stream; fd 1 is pointed at stderr, so that a library's
    print can never break a protocol line."""
    stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def _read_commands(control, pipe: Pipe) -> None:
    """Pause, resume and stop from the window; the end of stdin means the window is gone."""
    for line in sys.stdin:
        try:
            cmd = json.loads(line).get("cmd")
        except (ValueError, AttributeError):
            continue
        if cmd == "pause":
            control.pause()
        elif cmd == "resume":
            control.resume()
        elif cmd == "stop":
            control.stop()
    pipe.gone.set()
    control.stop()   # the window died or quit: stop at the next step, saving a checkpoint


def _heartbeat(pipe: Pipe, done: threading.Event) -> None:
    started = time.monotonic()
    while not done.wait(HEARTBEAT):
        pipe.send({"alive": round(time.monotonic() - started, 1)})


def main() -> int:
    # a Ctrl-C in the window's terminal ends the window, whose end of stdin then closes: the run
    # stops at the next step and saves (see _read_commands). The child has its own session, and
    # ignores SIGINT should one reach it anyway
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # below the window in the scheduler: on a machine with few cores the window still gets the CPU
    # the moment it needs it (a click, a repaint), and training takes every cycle the window leaves
    try:
        os.nice(NICENESS)
    except OSError:
        pass
    pipe = Pipe(protocol_stdout())
    try:
        return _serve(pipe)
    except BaseException as e:    # noqa: BLE001 - a broken install, a bad request: one line, not a death
        import traceback

        from .errors import one_line

        traceback.print_exc(file=sys.stderr)
        pipe.send({"result": {"status": "failed", "error": one_line(e), "error_field": getattr(e, "field", None),
                              "exit_code": 1, "run_dir": None, "adapter_path": None, "gallery_entry": None}})
        return 1


def _serve(pipe: Pipe) -> int:
    from .imports import heavy_imports

    heavy_imports()
    pipe.send({"ready": os.getpid()})
    line = sys.stdin.readline()
    if not line.strip():
        return 0          # a spare the window no longer needs (it closed)
    request = json.loads(line)
    if request.get("home"):      # the window's studio home now (this child may have waited as a spare)
        os.environ["LORA_STUDIO_HOME"] = request["home"]
    else:
        os.environ.pop("LORA_STUDIO_HOME", None)

    from .config import RunConfig
    from .training import RunControl, Session

    control = RunControl()
    threading.Thread(target=_read_commands, args=(control, pipe), name="commands", daemon=True).start()
    done = threading.Event()
    threading.Thread(target=_heartbeat, args=(pipe, done), name="heartbeat", daemon=True).start()
    config = RunConfig.from_dict(request["config"], request.get("source") or "config")
    session = Session(config, resume_dir=request.get("resume_dir"), control=control)
    result = session.run(sink=lambda event: pipe.send({"event": event}))
    done.set()
    pipe.send({"result": {"status": result.status, "error": result.error, "error_field": result.error_field,
                          "exit_code": result.exit_code,
                          "run_dir": str(result.run_dir) if result.run_dir else None,
                          "adapter_path": str(result.adapter_path) if result.adapter_path else None,
                          "gallery_entry": result.gallery_entry}})
    return int(result.exit_code)


if __name__ == "__main__":
    sys.exit(main())
