"""Where the window sits and how it is laid out: kept on the screen, and its geometry, docks and
splitter remembered in the settings between launches.

    fit_to_screen(window)
    restore_layout(window, settings, splitter)
    save_layout(window, settings, splitter)
"""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtWidgets import QApplication, QMainWindow, QSplitter


def fit_to_screen(window: QMainWindow) -> None:
    """Keep the whole window, title bar and frame included, on the screen's available area
    (resize() sets the inside: a first launch at the screen's size put the status bar off it)."""
    screen = window.screen() or QApplication.primaryScreen()
    if screen is None:
        return
    room = screen.availableGeometry()
    frame, inner = window.frameGeometry(), window.geometry()
    extra_w, extra_h = frame.width() - inner.width(), frame.height() - inner.height()
    width = min(window.width(), room.width() - extra_w)
    height = min(window.height(), room.height() - extra_h)
    if (width, height) != (window.width(), window.height()):
        window.resize(width, height)
    frame = window.frameGeometry()
    x = min(max(frame.x(), room.x()), room.right() - frame.width() + 1)
    y = min(max(frame.y(), room.y()), room.bottom() - frame.height() + 1)
    if (x, y) != (frame.x(), frame.y()):
        window.move(x, y)


def first_size(window: QMainWindow) -> None:
    """1400 x 900, or the screen's available size when that is smaller."""
    screen = QApplication.primaryScreen()
    room = screen.availableGeometry().size() if screen is not None else None
    window.resize(min(1400, room.width()) if room else 1400, min(900, room.height()) if room else 900)


def restore_layout(window: QMainWindow, settings: QSettings, splitter: QSplitter) -> None:
    geometry = settings.value("window/geometry")
    state = settings.value("window/state")
    if isinstance(geometry, QByteArray):
        window.restoreGeometry(geometry)
    if isinstance(state, QByteArray):
        window.restoreState(state)
    saved = settings.value("window/splitter")
    if isinstance(saved, QByteArray):
        splitter.restoreState(saved)


def save_layout(window: QMainWindow, settings: QSettings, splitter: QSplitter) -> None:
    settings.setValue("window/geometry", window.saveGeometry())
    settings.setValue("window/state", window.saveState())
    settings.setValue("window/splitter", splitter.saveState())
    settings.sync()
