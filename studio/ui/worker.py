"""The bridge between the window and the engine: each run trains in its own child process.

    controller = RunController()
    controller.events_arrived.connect(on_events)      # list[dict], in order, on the GUI thread
    controller.run_finished.connect(on_finished)      # {"status", "error", "run_dir", ...}
    controller.start(config)                          # a RunConfig; returns at once
    controller.pause(); controller.resume(); controller.stop(); controller.kill()

The run is a child process (core/runprocess.py, core/runchild.py) that runs the same engine as
`lora-studio train` and speaks the typed event protocol over a pipe, so training never shares
the window's interpreter (its GIL, or its fate: a segfault or an out-of-memory kill ends the
child and the run, never the window). A task thread (tasks.BackgroundJob) reads the child's
lines; each event goes into a buffer, which signals the GUI thread only when it goes from empty
to non-empty, so however fast the steps come the GUI thread receives one queued call per batch
it has time to take. Pause, resume and stop are messages to the child, honoured between
optimizer steps (and between preparation phases); `kill()` is the last resort. A child that
dies without its result ends the run as `interrupted` (killed) or `failed` (crashed), with the
signal named; a child that stops answering is reported by `unresponsive`.

`in_process=True` runs the Session on the task thread instead, as the window did before the
child process (tests/bench/bench_window.py compares the two).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from .tasks import BackgroundJob

UNRESPONSIVE_S = 30.0   # no line from the child (it sends one every 2 s) for this long: reported


class RunController(QObject):
    """Owns at most one run; all signals arrive on the GUI thread."""

    events_arrived = Signal(list)     # a batch of plain events, in the order they happened
    run_finished = Signal(dict)       # after the last batch; the run's thread has ended
    state_changed = Signal(str)       # idle, running, paused, stopping
    unresponsive = Signal(float)      # seconds since the child last answered (0.0: it answers again)
    _events_ready = Signal()          # emitted by the run's thread: new events wait in the buffer

    def __init__(self, parent: QObject | None = None, in_process: bool = False):
        super().__init__(parent)
        self.in_process = in_process
        self._job: BackgroundJob | None = None
        self._control = None              # a RunControl (in process) or the RunProcess (child)
        self._lock = threading.Lock()
        self._buffer: list[dict] = []
        self._events_ready.connect(self._deliver_events)
        self.state = "idle"
        self.last_heard = 0.0             # time.monotonic() of the child's last line (0: none yet)
        self._silent = False
        self._watchdog = QTimer(self, interval=2000)
        self._watchdog.timeout.connect(self._check_alive)

    @property
    def is_running(self) -> bool:
        return self._job is not None

    @property
    def child_pid(self) -> int | None:
        """The run's process (None in process, or before it started)."""
        return getattr(self._control, "pid", None)

    def prewarm(self) -> None:
        """Start a spare run process now, so that Train does not wait for its imports."""
        if not self.in_process:
            from studio.core.runprocess import prewarm

            prewarm()

    def start(self, config, resume_dir: str | Path | None = None) -> None:
        if self._job is not None:
            raise RuntimeError("a run is already in progress")
        work = self._in_process_work(config, resume_dir) if self.in_process else self._child_work(config, resume_dir)
        # the child imports the heavy libraries; in process, the task imports them first
        job = self._job = BackgroundJob(work, self, name="runThread", heavy=self.in_process)
        job.succeeded.connect(self._on_finished)
        job.failed.connect(lambda text: self._on_finished({"status": "failed", "error": text, "exit_code": 1,
                                                           "run_dir": None, "adapter_path": None}))
        self.last_heard, self._silent = 0.0, False
        job.start()
        if not self.in_process:
            self._watchdog.start()
        self._set_state("running")

    def _child_work(self, config, resume_dir):
        from studio.core.runprocess import RunProcess

        child = self._control = RunProcess.take()
        child.begin(config, resume_dir)   # now: a stop or pause sent next must come after the run

        def work(progress, should_stop):
            step, run_dir = None, None
            for message in child.messages():
                self.last_heard = time.monotonic()
                event = message.get("event")
                if event is not None:
                    if event.get("type") == "step":
                        step = event.get("step", step)
                    elif event.get("type") == "run_started":
                        run_dir = event.get("run_dir")
                    self._sink(event)
            return child.outcome(step, run_dir)

        return work

    def _in_process_work(self, config, resume_dir):
        from studio.core.training import RunControl   # torch-free

        control = self._control = RunControl()

        def work(progress, should_stop):
            from studio.core.training import Session

            r = Session(config, resume_dir=resume_dir, control=control).run(sink=self._sink)
            return {"status": r.status, "error": r.error, "error_field": r.error_field, "exit_code": r.exit_code,
                    "run_dir": str(r.run_dir) if r.run_dir else None,
                    "adapter_path": str(r.adapter_path) if r.adapter_path else None,
                    "gallery_entry": r.gallery_entry}

        return work

    def _command(self, name: str) -> None:
        if self.in_process:
            getattr(self._control, name)()
        else:
            self._control.send(name)

    def pause(self) -> None:
        if self._job is not None and self.state == "running":
            self._command("pause")
            self._set_state("paused")

    def resume(self) -> None:
        if self._job is not None and self.state == "paused":
            self._command("resume")
            self._set_state("running")

    def stop(self) -> None:
        """Ask the run to stop after the step under way (it saves a checkpoint and its adapter)."""
        if self._job is not None and self.state != "stopping":
            self._command("stop")
            self._set_state("stopping")

    def kill(self) -> None:
        """End the run's process now (the last resort: its last checkpoint resumes)."""
        if self._job is not None and not self.in_process:
            self._control.kill()

    def wait(self, timeout_ms: int) -> bool:
        """Block until the run's thread ends (tests, and a last resort at exit). The finished
        signal is still delivered by the event loop afterwards."""
        return self._job is None or self._job.wait(timeout_ms)

    def _sink(self, event: dict) -> None:
        """Called by the run's thread for each event."""
        with self._lock:
            first = not self._buffer
            self._buffer.append(event)
        if first:
            self._events_ready.emit()

    def _take_events(self) -> list[dict]:
        with self._lock:
            events, self._buffer = self._buffer, []
        return events

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)

    @Slot()
    def _check_alive(self) -> None:
        if not self.last_heard:
            return      # its imports (a child taken before it was ready) say nothing; it beats once running
        silent = time.monotonic() - self.last_heard
        if silent >= UNRESPONSIVE_S and self.state != "paused":
            self._silent = True
            self.unresponsive.emit(silent)
        elif self._silent and silent < UNRESPONSIVE_S:
            self._silent = False
            self.unresponsive.emit(0.0)

    @Slot()
    def _deliver_events(self) -> None:
        events = self._take_events()
        if events:
            self.events_arrived.emit(events)

    def _on_finished(self, result: dict) -> None:
        self._watchdog.stop()
        self._deliver_events()
        self._job, self._control = None, None
        if self._silent:
            self._silent = False
            self.unresponsive.emit(0.0)
        self._set_state("idle")
        self.run_finished.emit(result)
