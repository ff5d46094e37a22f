"""Opening the window: `lora-studio`, `lora-studio CONFIG.toml`, `lora-studio RUN_FOLDER`.

    from studio.ui.app import open_window
    window = open_window("runs/20261122-101500-lora")   # reuses a running QApplication (tests)

The window appears before anything heavy is imported: torch, transformers and peft load in the
worker thread when a run starts (napari's lazy-viewer pattern), so launch to a visible window
takes Qt's start-up and ours, no more.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from studio.core.resources import icon_path

APP_NAME = "LoRA Studio"
ORG_NAME = "lora-studio"


def application():
    """The running QApplication, or a new one named for QSettings and QStandardPaths."""
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        icon = QIcon()
        for path in (icon_path("svg"), icon_path("png")):   # the PNG where Qt's SVG plugin is absent
            if path.is_file():
                icon.addFile(str(path))
        app.setWindowIcon(icon)
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(ORG_NAME)
    app.setApplicationDisplayName(APP_NAME)
    return app


def open_window(path: str | Path | None = None, settings=None):
    """Make and show the main window, with a run config or a past run loaded if given."""
    from .main_window import MainWindow
    from .theme import apply_theme

    app = application()
    window = MainWindow(settings=settings)
    apply_theme(app, str(window.settings.value("theme", "system")))
    if path is not None:
        window.load(path)
    window.show()
    return window


_OPEN: list = []   # windows opened into a QApplication someone else runs (tests, an embedding app)


def main(path: str | None = None, screenshot: str | None = None, screenshot_delay: float = 1.0) -> int:
    """The GUI entry point. With no QApplication yet it makes one and runs its event loop (the
    return value is the loop's exit code); with one already running it opens the window into it
    and returns 0 at once, so a test can drive the real window in-process.

    With `screenshot`, the window is saved to that image file `screenshot_delay` seconds after it
    is shown, and then closed (and the event loop ended, exit code 1 if the file could not be
    written): `QT_QPA_PLATFORM=offscreen lora-studio gui --screenshot window.png` checks an
    installed or frozen app without a display."""
    if path is not None and not Path(path).expanduser().exists():
        print(f"lora-studio: error: {path}: no such run config or run folder", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from PySide6.QtWidgets import QApplication

        import pyqtgraph  # noqa: F401
    except ImportError:
        print("lora-studio: error: the window needs PySide6 and pyqtgraph "
              "(pip install 'lora-studio[gui]'); the command line works without them", file=sys.stderr)
        return 2
    existing = QApplication.instance() is not None
    if not existing:
        from . import qtlibs

        if qtlibs.uses_xcb():
            lacking = qtlibs.missing()
            if lacking:   # Qt would abort, naming the wrong library
                print(qtlibs.message(lacking), file=sys.stderr)
                return 2
    app = application()
    window = open_window(path)
    if screenshot:
        save_later(window, screenshot, screenshot_delay, quit_app=not existing)
    if existing:
        _OPEN.append(window)
        return 0
    try:
        return app.exec()
    finally:
        dispose(window)
        from studio.core.engineclient import shutdown_engine
        from studio.core.runprocess import close_spare

        close_spare()     # the spare run process and the engine exit now (they would anyway: their
        shutdown_engine()  # stdin closes with this process)


def save_later(window, path: str | Path, delay_s: float = 1.0, quit_app: bool = True) -> None:
    """Grab the window into an image file once the event loop has run `delay_s` seconds (layout,
    theme and the first paint are done by then), then close it, or end the application's loop."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    def grab() -> None:
        target = Path(path).expanduser()
        ok = window.grab().save(str(target))
        if ok:
            print(f"window saved to {target}", file=sys.stderr)
        else:
            print(f"lora-studio: error: {target}: could not write the screenshot "
                  "(a writable folder, and a .png/.jpg name?)", file=sys.stderr)
        if quit_app:
            QApplication.instance().exit(0 if ok else 1)
        else:
            window.close()

    QTimer.singleShot(int(max(delay_s, 0.0) * 1000), window, grab)


def dispose(window) -> None:
    """Delete the window's Qt objects while the interpreter is still whole, rather than in
    Python's final garbage collection, where the order of Qt and Python deletions is arbitrary."""
    import gc

    from PySide6.QtCore import QCoreApplication, QEvent

    window.close()
    window.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    del window
    gc.collect()
