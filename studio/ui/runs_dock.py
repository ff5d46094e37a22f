"""The Runs dock and the recent files: the past runs in the runs folder, ticked to overlay their
loss curves on the loss chart and double-clicked to open; File ▸ Open recent.

    runs = RunsDock(charts, open_run=window.open_run_folder, resume=window.resume_run)
    runs.refresh(folder)             # the runs folder of the set-up (None: none)
    recent = RecentFiles(settings, menu, load=window.load)
    recent.add(path)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QHBoxLayout, QListWidget, QListWidgetItem, QMenu, QPushButton, QVBoxLayout, QWidget

from .history import RunHistory

MAX_RECENT = 8


class RunsDock(QWidget):
    """The past runs list with Refresh and Resume run under it. `charts` draws the overlays."""

    def __init__(self, charts, open_run: Callable, resume: Callable, refresh: Callable):
        super().__init__()
        self.charts = charts
        self._overlay_cache: dict[str, tuple[float, RunHistory]] = {}
        self.view = QListWidget()
        self.view.setObjectName("runsView")
        self.view.setAccessibleName("Past runs")
        self.view.setToolTip("Tick runs to overlay their loss curves; double-click to open one")
        self.view.itemChanged.connect(lambda item: self.set_overlays(self.checked()))
        self.view.itemDoubleClicked.connect(lambda item: open_run(item.data(Qt.ItemDataRole.UserRole)))
        refresh_button = QPushButton("Refresh")
        refresh_button.setObjectName("refreshRunsButton")
        refresh_button.clicked.connect(lambda: refresh())
        self.resume_button = QPushButton("Resume run")
        self.resume_button.setObjectName("resumeRunButton")
        self.resume_button.setToolTip("Continue the opened run from its last checkpoint")
        self.resume_button.clicked.connect(lambda: resume())
        column = QVBoxLayout(self)
        column.setContentsMargins(2, 2, 2, 2)
        column.addWidget(self.view, 1)
        row = QHBoxLayout()
        row.addWidget(refresh_button)
        row.addWidget(self.resume_button)
        column.addLayout(row)

    def checked(self) -> list[str]:
        """The run folders ticked for overlaying."""
        return [self.view.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.view.count())
                if self.view.item(i).checkState() == Qt.CheckState.Checked]

    def refresh(self, folder: Path | None) -> None:
        """List the runs in `folder`, newest first; the ticked ones stay ticked."""
        checked = set(self.checked())
        self.view.blockSignals(True)
        self.view.clear()
        runs = sorted((p for p in folder.iterdir() if (p / "events.jsonl").is_file()),
                      key=lambda p: p.stat().st_mtime, reverse=True) if folder and folder.is_dir() else []
        for p in runs:
            item = QListWidgetItem(p.name)
            item.setData(Qt.ItemDataRole.UserRole, str(p))
            item.setToolTip(str(p))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if str(p) in checked else Qt.CheckState.Unchecked)
            self.view.addItem(item)
        self.view.blockSignals(False)

    def set_overlays(self, run_dirs: list[str | Path]) -> None:
        """Overlay these runs' loss curves on the loss chart, to compare variants."""
        histories = []
        for d in run_dirs:
            path = Path(d) / "events.jsonl"
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            cached = self._overlay_cache.get(str(d))
            if cached is None or cached[0] != mtime:
                try:
                    cached = (mtime, RunHistory.from_run_folder(d))
                except (OSError, ValueError):
                    continue
                self._overlay_cache[str(d)] = cached
            histories.append(cached[1])
        self.charts.set_overlays(histories)


class RecentFiles:
    """The last opened configs and run folders, kept in the settings and listed in `menu`."""

    def __init__(self, settings: QSettings, menu: QMenu, load: Callable[[str], object]):
        self.settings = settings
        self.menu = menu
        self.load = load
        self.update_menu()

    def items(self) -> list[str]:
        value = self.settings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [v for v in (value or []) if v]

    def add(self, path: str | Path) -> None:
        resolved = str(Path(path).resolve())
        items = [resolved] + [p for p in self.items() if p != resolved]
        self.settings.setValue("recent", items[:MAX_RECENT])
        self.update_menu()

    def update_menu(self) -> None:
        self.menu.clear()
        items = self.items()
        for p in items:
            a = self.menu.addAction(p)
            a.triggered.connect(lambda checked=False, p=p: self.load(p))
        self.menu.setEnabled(bool(items))
