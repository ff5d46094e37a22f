"""Window tests: pytest-qt, offscreen. Every test fails if it leaves a QThread running (napari's
`_dangling_qthreads` pattern), so a run that does not stop cleanly cannot pass."""

from __future__ import annotations

import gc

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")


@pytest.fixture(autouse=True)
def _no_dangling_qthreads(qapp):
    from PySide6.QtCore import QThread

    yield
    gc.collect()
    running = [t for t in _live_qthreads(QThread) if t.isRunning()]
    for t in running:       # leave the next test a clean slate, then fail this one
        t.quit()
        t.wait(5000)
    assert not running, f"{len(running)} QThread(s) left running: {[t.objectName() for t in running]}"


def _live_qthreads(QThread):
    for obj in gc.get_objects():
        try:
            if isinstance(obj, QThread) and obj is not QThread.currentThread():
                yield obj
        except RuntimeError:   # a wrapper whose C++ object is gone
            continue


def pytest_collection_modifyitems(config, items):
    for item in items:    # `pytest -m "not gui"` runs the suite without a display stack
        if "tests/ui/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.gui)
