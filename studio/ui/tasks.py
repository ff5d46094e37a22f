"""Background work for the window: a plain function run in its own QThread (`BackgroundJob`),
and at most one such task per owner (`TaskSlot`), the pattern of Orange3's ConcurrentMixin.

    slot = TaskSlot(self, "previewDataset")
    slot.start(work, done=self.show, failed=self.show_error, cancelled=..., progress=...)
    slot.cancel(); slot.busy; slot.shutdown()

`work(progress, should_stop)` runs on the task's thread and never touches a widget:
`progress(message, fraction=None)` reports (fraction: the share done, 0..1, when known) and
`should_stop()` turns True once the task is cancelled. A function that stops early raises the
engine's one cancellation type, `studio.core.errors.Cancelled` (any exception after a cancel
counts as a cancel too). Every callback runs on the GUI thread.

Starting a task cancels the one under way, and a slot delivers only its latest task's outcome:
the "is this still the job I care about?" check lives here once, not at every call site.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

# every thread this module starts, so a closing window (and the tests) can wait for them
_THREADS: "weakref.WeakSet[QThread]" = weakref.WeakSet()

Work = Callable[[Callable[..., None], Callable[[], bool]], Any]


def running_threads() -> list[QThread]:
    return [t for t in list(_THREADS) if t.isRunning()]


class BackgroundJob(QObject):
    """Runs `fn(progress, should_stop)` in its own QThread. Exactly one of succeeded, failed or
    cancelled is emitted, on the GUI thread, after which the thread has ended. `progress`
    carries (message, fraction or None)."""

    progress = Signal(str, object)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    _done = Signal(str, object)

    def __init__(self, fn: Work, parent: QObject | None = None, name: str = "job", heavy: bool = False):
        super().__init__(parent)
        self.fn = fn
        # the job uses torch/transformers/datasets: they are imported first, once, one thread at a time
        self.heavy = heavy
        self.stop_event = threading.Event()
        self._thread: QThread | None = QThread()
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
        self.stop_event.set()

    @property
    def cancel_requested(self) -> bool:
        return self.stop_event.is_set()

    def report(self, message: str, fraction: float | None = None) -> None:
        """The progress callable handed to the function (any thread)."""
        if fraction is not None:
            try:
                fraction = min(max(float(fraction), 0.0), 1.0)
            except (TypeError, ValueError):
                fraction = None
        self.progress.emit(str(message), fraction)

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.isRunning()

    def wait(self, timeout_ms: int) -> bool:
        return self._thread is None or self._thread.wait(timeout_ms)

    def finish(self, outcome: str, value: Any) -> None:
        """Called once by the runner, on the job's thread: the outcome goes to the GUI thread."""
        self._done.emit(outcome, value)

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
    """The QObject that lives on the job's thread and calls its function there."""

    def __init__(self, job: BackgroundJob):
        super().__init__()
        self.job = job

    @Slot()
    def run(self) -> None:
        from studio.core.errors import Cancelled, one_line

        job = self.job
        try:
            value = self._call(job)
            outcome = "cancelled" if job.cancel_requested else "ok"
        except BaseException as e:
            if job.cancel_requested or isinstance(e, Cancelled):
                outcome, value = "cancelled", None
            else:
                outcome, value = "error", one_line(e)
        job.finish(outcome, value)
        self.moveToThread(job.thread())  # hand the runner back before its thread ends
        # end the thread now, not when the GUI thread gets to _on_done: a window closing (or a
        # test tearing down) can then wait for it without running the event loop
        QThread.currentThread().quit()

    @staticmethod
    def _call(job: BackgroundJob):
        """The job's function, after the heavy libraries are imported (by this thread or, while it
        waits, by another). An error from a half-imported library is an import race, never the
        job's answer: it is tried again once the imports are complete."""
        should_stop = job.stop_event.is_set
        if not job.heavy:
            return job.fn(job.report, should_stop)
        from studio.core.imports import heavy_imports, is_import_race

        heavy_imports()
        for attempt in range(3):
            try:
                return job.fn(job.report, should_stop)
            except Exception as e:
                if attempt == 2 or should_stop() or not is_import_race(e):
                    raise
                heavy_imports()


class TaskSlot(QObject):
    """At most one background task for its owner. `start` cancels the task under way (whose
    outcome is then dropped) and runs a new one; only the latest task's callbacks are called,
    and `busy` is False again before they are."""

    def __init__(self, owner: QObject, name: str, heavy: bool = False):
        super().__init__(owner)
        self.name = name
        self.heavy = heavy
        self.job: BackgroundJob | None = None
        self._started: "weakref.WeakSet[BackgroundJob]" = weakref.WeakSet()

    @property
    def busy(self) -> bool:
        """A task of this slot is under way (a cancelled one counts until it has ended)."""
        return self.job is not None

    def start(self, fn: Work, *, done: Callable[[Any], None] | None = None,
              failed: Callable[[str], None] | None = None, cancelled: Callable[[], None] | None = None,
              progress: Callable[[str, float | None], None] | None = None,
              discarded: Callable[[Any], None] | None = None) -> BackgroundJob:
        """Run `fn(progress, should_stop)`; `discarded(value)` is given the result of this task if
        it succeeds after being superseded or dropped (to close what it holds)."""
        self.cancel()
        job = BackgroundJob(fn, self, name=self.name, heavy=self.heavy)
        if progress is not None:
            job.progress.connect(lambda message, fraction, j=job: j is self.job and progress(message, fraction))
        job.succeeded.connect(lambda value, j=job: self._finish(j, done, value, discarded=discarded))
        job.failed.connect(lambda text, j=job: self._finish(j, failed, text))
        job.cancelled.connect(lambda j=job: self._finish(j, cancelled))
        self.job = job
        self._started.add(job)
        return job.start()

    def cancel(self) -> None:
        """Ask the task under way to stop; its `cancelled` callback comes once it has."""
        if self.job is not None:
            self.job.cancel()

    def drop(self) -> None:
        """Cancel the task under way and forget it: none of its callbacks will be called."""
        self.cancel()
        self.job = None

    def shutdown(self, timeout_ms: int = 30000) -> None:
        """The owner goes away: cancel, and wait for every task this slot started."""
        self.drop()
        for job in list(self._started):
            job.cancel()
            job.wait(timeout_ms)

    def _finish(self, job: BackgroundJob, callback: Callable | None, *value, discarded=None) -> None:
        if job is not self.job:     # superseded or dropped: its outcome is no longer wanted
            if discarded is not None:
                discarded(*value)
            return
        self.job = None
        if callback is not None:
            callback(*value)
