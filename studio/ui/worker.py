"""The bridge between the window and the engine: a core Session run on a background thread.

    controller = RunController()
    controller.events_arrived.connect(on_events)      # list[dict], in order, on the GUI thread
    controller.run_finished.connect(on_finished)      # {"status", "error", "run_dir", ...}
    controller.start(config)                          # a RunConfig; returns at once
    controller.pause(); controller.resume(); controller.stop()

The run is a task like any other (tasks.BackgroundJob: its own QThread, the heavy imports first,
the outcome on the GUI thread). The task only calls `Session.run(sink)`, which reports its own
failures, and never touches a widget. The sink appends each event to a buffer and signals only
when the buffer goes from empty to non-empty, so however fast the steps come the GUI thread
receives one queued call per batch it has time to take: a step rate of a thousand per second
costs the window no more than one of one per second. Stop and pause go to the Session's
RunControl, which honours them between optimizer steps (and between preparation phases, so a
long model conversion or tokenization can be cancelled).
"""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot

from .tasks import BackgroundJob


class RunController(QObject):
    """Owns at most one run; all signals arrive on the GUI thread."""

    events_arrived = Signal(list)     # a batch of plain events, in the order they happened
    run_finished = Signal(dict)       # after the last batch; the run's thread has ended
    state_changed = Signal(str)       # idle, running, paused, stopping
    _events_ready = Signal()          # emitted by the run's thread: new events wait in the buffer

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._job: BackgroundJob | None = None
        self._control = None
        self._lock = threading.Lock()
        self._buffer: list[dict] = []
        self._events_ready.connect(self._deliver_events)
        self.state = "idle"

    @property
    def is_running(self) -> bool:
        return self._job is not None

    def start(self, config, resume_dir: str | Path | None = None) -> None:
        if self._job is not None:
            raise RuntimeError("a run is already in progress")
        from studio.core.training import RunControl   # torch-free

        control = self._control = RunControl()

        def work(progress, should_stop):
            from studio.core.training import Session

            r = Session(config, resume_dir=resume_dir, control=control).run(sink=self._sink)
            return {"status": r.status, "error": r.error, "error_field": r.error_field, "exit_code": r.exit_code,
                    "run_dir": str(r.run_dir) if r.run_dir else None,
                    "adapter_path": str(r.adapter_path) if r.adapter_path else None,
                    # the gallery entry the Session added the adapter as (run_finished carries it too)
                    "gallery_entry": r.gallery_entry}

        # the heavy imports come first, once per process, one thread at a time (a data check may
        # run beside); Session.run reports its own failures, so an error here is a bug
        job = self._job = BackgroundJob(work, self, name="runThread", heavy=True)
        job.succeeded.connect(self._on_finished)
        job.failed.connect(lambda text: self._on_finished({"status": "failed", "error": text, "exit_code": 1,
                                                           "run_dir": None, "adapter_path": None}))
        job.start()
        self._set_state("running")

    def pause(self) -> None:
        if self._job is not None and self.state == "running":
            self._control.pause()
            self._set_state("paused")

    def resume(self) -> None:
        if self._job is not None and self.state == "paused":
            self._control.resume()
            self._set_state("running")

    def stop(self) -> None:
        """Ask the run to stop after the step under way (it saves a checkpoint and its adapter)."""
        if self._job is not None and self.state != "stopping":
            self._control.stop()
            self._set_state("stopping")

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
    def _deliver_events(self) -> None:
        events = self._take_events()
        if events:
            self.events_arrived.emit(events)

    def _on_finished(self, result: dict) -> None:
        self._deliver_events()
        self._job, self._control = None, None
        self._set_state("idle")
        self.run_finished.emit(result)
