"""The bridge between the window and the engine: a core Session run in a QThread.

    controller = RunController()
    controller.events_arrived.connect(on_events)      # list[dict], in order, on the GUI thread
    controller.run_finished.connect(on_finished)      # {"status", "error", "run_dir", ...}
    controller.start(config)                          # a RunConfig; returns at once
    controller.pause(); controller.resume(); controller.stop()

The worker only calls `Session.run(sink)` inside try/except (Orange3's concurrent-task pattern)
and never touches a widget. The sink appends each event to a buffer and signals only when the
buffer goes from empty to non-empty, so however fast the steps come the GUI thread receives one
queued call per batch it has time to take: a step rate of a thousand per second costs the window
no more than one of one per second. Stop and pause go to the Session's RunControl, which honours
them between optimizer steps (and between preparation phases, so a long model conversion or
tokenization can be cancelled).

`BackgroundJob` runs any plain function the same way (a dataset preview, a model description, a
gallery export) with progress messages, an optional progress fraction, and cancellation.
"""

from __future__ import annotations

import threading
import traceback
import weakref
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

# every thread this module starts, so a closing window (and the tests) can wait for them
_THREADS: "weakref.WeakSet[QThread]" = weakref.WeakSet()


def running_threads() -> list[QThread]:
    return [t for t in list(_THREADS) if t.isRunning()]


class RunWorker(QObject):
    """Runs one Session on the thread it was moved to. Lives only as long as the run."""

    events_ready = Signal()       # new events wait in take_events()
    finished = Signal(dict)       # the run's result, plain data

    def __init__(self, config, resume_dir: str | Path | None = None):
        super().__init__()
        from studio.core.training import RunControl

        self.config = config
        self.resume_dir = resume_dir
        self.control = RunControl()
        self._lock = threading.Lock()
        self._buffer: list[dict] = []

    def take_events(self) -> list[dict]:
        """Everything reported since the last call (any thread)."""
        with self._lock:
            events, self._buffer = self._buffer, []
        return events

    def _sink(self, event: dict) -> None:
        with self._lock:
            first = not self._buffer
            self._buffer.append(event)
        if first:
            self.events_ready.emit()

    @Slot()
    def run(self) -> None:
        result: dict[str, Any]
        try:
            from studio.core.imports import heavy_imports

            heavy_imports()     # once per process, one thread at a time (a data check may run beside)
            from studio.core.training import Session

            session = Session(self.config, resume_dir=self.resume_dir, control=self.control)
            r = session.run(sink=self._sink)
            result = {"status": r.status, "error": r.error, "error_field": r.error_field, "exit_code": r.exit_code,
                      "run_dir": str(r.run_dir) if r.run_dir else None,
                      "adapter_path": str(r.adapter_path) if r.adapter_path else None,
                      # the gallery entry the Session added the adapter as (run_finished carries it too)
                      "gallery_entry": getattr(r, "gallery_entry", None)}
        except BaseException as e:  # Session.run reports its own failures; this is a bug or a broken sink
            from studio.core.errors import first_line

            result = {"status": "failed",
                      "error": f"{type(e).__name__}: {first_line(e)}" if str(e).strip() else type(e).__name__,
                      "exit_code": 1, "run_dir": None, "adapter_path": None,
                      "traceback": traceback.format_exc()}
        self.finished.emit(result)
        QThread.currentThread().quit()   # the thread ends with the run, whatever the GUI thread is doing


class RunController(QObject):
    """Owns at most one RunWorker and its QThread; all signals arrive on the GUI thread."""

    events_arrived = Signal(list)     # a batch of plain events, in the order they happened
    run_finished = Signal(dict)       # after the last batch; the thread has ended
    state_changed = Signal(str)       # idle, running, paused, stopping

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: RunWorker | None = None
        self.state = "idle"

    @property
    def is_running(self) -> bool:
        return self._thread is not None

    def start(self, config, resume_dir: str | Path | None = None) -> None:
        if self._thread is not None:
            raise RuntimeError("a run is already in progress")
        thread = QThread()
        thread.setObjectName("runThread")
        worker = RunWorker(config, resume_dir)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.events_ready.connect(self._on_worker_events_ready)
        worker.finished.connect(self._on_worker_finished)
        self._thread, self._worker = thread, worker
        _THREADS.add(thread)
        thread.start()
        self._set_state("running")

    def pause(self) -> None:
        if self._worker is not None and self.state == "running":
            self._worker.control.pause()
            self._set_state("paused")

    def resume(self) -> None:
        if self._worker is not None and self.state == "paused":
            self._worker.control.resume()
            self._set_state("running")

    def stop(self) -> None:
        """Ask the run to stop after the step under way (it saves a checkpoint and its adapter)."""
        if self._worker is not None and self.state != "stopping":
            self._worker.control.stop()
            self._set_state("stopping")

    def wait(self, timeout_ms: int) -> bool:
        """Block until the thread ends (tests, and a last resort at exit). The finished signal
        is still delivered by the event loop afterwards."""
        return self._thread is None or self._thread.wait(timeout_ms)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)

    @Slot()
    def _on_worker_events_ready(self) -> None:
        if self._worker is not None:
            events = self._worker.take_events()
            if events:
                self.events_arrived.emit(events)

    @Slot(dict)
    def _on_worker_finished(self, result: dict) -> None:
        thread, worker = self._thread, self._worker
        if worker is not None:
            events = worker.take_events()
            if events:
                self.events_arrived.emit(events)
        if thread is not None:
            thread.quit()
            thread.wait()
            thread.deleteLater()
        if worker is not None:
            worker.deleteLater()
        self._thread, self._worker = None, None
        self._set_state("idle")
        self.run_finished.emit(result)


class JobCancelled(Exception):
    """Raised inside a job's function when its should_stop() says so (any exception type the
    function raises after a cancel counts as cancelled too)."""


class BackgroundJob(QObject):
    """Runs `fn(progress, should_stop)` in its own QThread. `progress(message, fraction=None)` may
    be called from the function (fraction: the share done, 0..1, when the function knows it);
    `should_stop()` turns True once cancel() was asked. Exactly one of succeeded, failed or
    cancelled is emitted, on the GUI thread, after which the thread has ended.

    `progress` carries the message alone (what older callers listen to); `progressed` carries
    (message, fraction or None), for a determinate progress bar."""

    progress = Signal(str)
    progressed = Signal(str, object)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    _done = Signal(str, object)

    def __init__(self, fn: Callable[[Callable[[str], None], Callable[[], bool]], Any],
                 parent: QObject | None = None, name: str = "job", heavy: bool = False):
        super().__init__(parent)
        self._fn = fn
        # the job uses torch/transformers/datasets: they are imported first, once, one thread at a time
        self._heavy = heavy
        self._stop = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName(name)
        self._runner = _JobRunner(self)
        self._runner.moveToThread(self._thread)
        self._thread.started.connect(self._runner.run)
        self._done.connect(self._on_done)
        _THREADS.add(self._thread)

    def start(self) -> "BackgroundJob":
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._stop.set()

    @property
    def cancel_requested(self) -> bool:
        return self._stop.is_set()

    def _report(self, message: str, fraction: float | None = None) -> None:
        """The progress callable handed to the function (any thread)."""
        message = str(message)
        if fraction is not None:
            try:
                fraction = min(max(float(fraction), 0.0), 1.0)
            except (TypeError, ValueError):
                fraction = None
        self.progress.emit(message)
        self.progressed.emit(message, fraction)

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.isRunning()

    def wait(self, timeout_ms: int) -> bool:
        return self._thread is None or self._thread.wait(timeout_ms)

    @Slot(str, object)
    def _on_done(self, outcome: str, value: Any) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.quit()
            thread.wait()
            thread.deleteLater()
        if outcome == "ok":
            self.succeeded.emit(value)
        elif outcome == "cancelled":
            self.cancelled.emit()
        else:
            self.failed.emit(value)


class _JobRunner(QObject):
    def __init__(self, job: BackgroundJob):
        super().__init__()
        self.job = job

    @Slot()
    def run(self) -> None:
        job = self.job
        try:
            value = self._call(job)
            outcome = "cancelled" if job._stop.is_set() else "ok"
        except BaseException as e:
            if job._stop.is_set() or isinstance(e, JobCancelled) or _is_cancelled(e):
                outcome, value = "cancelled", None
            else:
                outcome, value = "error", _one_line(e)
        job._done.emit(outcome, value)
        self.moveToThread(job.thread())  # hand the runner back before its thread ends
        # end the thread now, not when the GUI thread gets to _on_done: a window closing (or a
        # test tearing down) can then wait for it without running the event loop
        QThread.currentThread().quit()

    @staticmethod
    def _call(job: "BackgroundJob"):
        """The job's function, after the heavy libraries are imported (by this thread or, while it
        waits, by another). An error from a half-imported library is an import race, never the
        job's answer: it is tried again once the imports are complete."""
        if not job._heavy:
            return job._fn(job._report, job._stop.is_set)
        from studio.core.imports import heavy_imports, is_import_race

        heavy_imports()
        for attempt in range(3):
            try:
                return job._fn(job._report, job._stop.is_set)
            except Exception as e:
                if attempt == 2 or job._stop.is_set() or not is_import_race(e):
                    raise
                heavy_imports()


def _is_cancelled(e: BaseException) -> bool:
    """The engine's own Cancelled (studio.core.errors), raised when should_stop() said so."""
    from studio.core import errors

    cancelled = getattr(errors, "Cancelled", None)
    return cancelled is not None and isinstance(e, cancelled)


def _one_line(e: BaseException) -> str:
    from studio.core.errors import one_line

    return one_line(e)
