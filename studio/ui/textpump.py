"""TextPump: streamed text pieces from any thread, handed to the GUI thread one batch at a time."""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal


class TextPump(QObject):
    """Collects (which, piece) from any thread; `arrived` is emitted when the buffer goes from
    empty to not empty, so the GUI thread gets one queued call per batch, however fast pieces come."""

    arrived = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._lock = threading.Lock()
        self._buffer: list[tuple[int, str, str]] = []

    def push(self, run: int, which: str, piece: str) -> None:
        with self._lock:
            first = not self._buffer
            self._buffer.append((run, str(which), str(piece)))
        if first:
            self.arrived.emit()

    def take(self) -> list[tuple[int, str, str]]:
        """Everything buffered, consecutive pieces of one pane joined."""
        with self._lock:
            pieces, self._buffer = self._buffer, []
        out: list[tuple[int, str, str]] = []
        for run, which, piece in pieces:
            if out and out[-1][0] == run and out[-1][1] == which:
                out[-1] = (run, which, out[-1][2] + piece)
            else:
                out.append((run, which, piece))
        return out
