"""The gallery's Resize dialog (ResizeDialog): measure how much of an adapter's update each rank
keeps (the energy curve, in the dialog's own BackgroundJob), then pick a lower rank, or the share
to keep, on that curve. It only collects the choice; the controller runs the resize.
"""

from __future__ import annotations

from html import escape

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (QButtonGroup, QDialog, QDialogButtonBox, QDoubleSpinBox, QGridLayout, QHBoxLayout,
                               QLabel, QLineEdit, QProgressBar, QRadioButton, QSlider, QSpinBox, QStackedWidget,
                               QVBoxLayout, QWidget)

from studio.core.errors import StudioError
from studio.core.gallery import Entry, Gallery
from studio.core.modelcache import human_size

from .charts.common import SERIES_COLOURS
from .gallery_dialog_parts import dialog_buttons, entry_size, name_problem, problem_label
from .gallery_job_strip import show_fraction
from .tasks import TaskSlot


def rank_text(entry: Entry, measured: int | None = None) -> str:
    """The adapter's rank now, as the resize dialog states it.

    entry.rank is the rank its config saves, while the energy curve runs to `measured`, the
    largest rank any layer's update has, and the two can differ: AdaLoRA's saved rank is its
    average budget target_r, but it prunes every layer on its own from init_r, so a layer keeps
    up to init_r (12 against a target_r of 8 by default: "now rank 8" over a curve to 12); and a
    layer narrower than r has an update of a lower rank than r. A uniform rank below `measured`
    is what truncates some layer, so the dialog counts from it and says how it relates to the
    saved rank."""
    saved = entry.rank
    adalora = entry.config.get("peft_type") == "ADALORA"
    if measured is None:         # still measuring: what the config says
        if adalora and entry.config.get("init_r"):
            return f"AdaLoRA: rank {saved} on average, up to {entry.config['init_r']} per layer"
        return f"now rank {saved or '?'}"
    if adalora and saved and measured != saved:
        if not entry.config.get("rank_pattern"):    # peft records the pruned ranks there
            return f"now rank {measured}: AdaLoRA had not pruned it to its budget (rank {saved} on average)"
        return f"now up to rank {measured} per layer; AdaLoRA's budget is rank {saved} on average"
    if saved and measured < saved:
        return f"now rank {measured}: saved as rank {saved}, but no layer's update has a higher rank"
    if saved and measured > saved:
        return f"now rank {measured} (its config says rank {saved})"
    return f"now rank {measured}"


class ResizeDialog(QDialog):
    """Measure how much of the update each rank keeps (energy_curve, in the background), then pick
    a rank, or the share of ‖ΔW‖² to keep, on that curve."""

    def __init__(self, entry: Entry, gallery: Gallery, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("resizeDialog")
        self.setWindowTitle(f"Resize rank — {entry.name}")
        self.entry = entry
        self.gallery = gallery
        self.curve: dict | None = None
        self.curve_task = TaskSlot(self, "energyCurve")
        self._name_edited = False
        self._default = ""
        self._syncing = False

        self.head = head = QLabel()
        head.setObjectName("resizeHead")
        head.setWordWrap(True)
        head.setTextFormat(Qt.TextFormat.RichText)
        self._set_head(None)

        self.progress_label = QLabel("Measuring the update's spectrum…")
        self.progress_label.setObjectName("resizeProgressLabel")
        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("resizeProgress")
        self.progress_bar.setRange(0, 0)
        waiting = QWidget()
        wait_column = QVBoxLayout(waiting)
        wait_column.addStretch(1)
        wait_column.addWidget(self.progress_label)
        wait_column.addWidget(self.progress_bar)
        wait_column.addStretch(1)

        self.plot = pg.PlotWidget(background=self.palette().color(QPalette.ColorRole.Base))
        self.plot.setObjectName("resizeCurve")
        self.plot.setAccessibleName("Share of the update kept per rank")
        self.plot.setMinimumHeight(200)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        text = self.palette().color(QPalette.ColorRole.Text)
        self.plot.setLabel("bottom", "rank", color=text.name())
        self.plot.setLabel("left", "‖ΔW‖² kept (%)", color=text.name())
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        for side in ("left", "bottom"):
            self.plot.getAxis(side).setTextPen(text)
            self.plot.getAxis(side).setPen(pg.mkPen(self.palette().color(QPalette.ColorRole.Mid)))
        self.energy_curve_item = self.plot.plot(pen=pg.mkPen(SERIES_COLOURS[0], width=2), symbol="o", symbolSize=5,
                                                symbolBrush=pg.mkBrush(SERIES_COLOURS[0]), antialias=True)
        self.rank_line = pg.InfiniteLine(angle=90, movable=False,
                                         pen=pg.mkPen(SERIES_COLOURS[1], width=1.5, style=Qt.PenStyle.DashLine))
        self.kept_line = pg.InfiniteLine(angle=0, movable=False,
                                         pen=pg.mkPen(SERIES_COLOURS[2], width=1.5, style=Qt.PenStyle.DashLine))
        self.marker = pg.ScatterPlotItem(size=10, brush=pg.mkBrush(SERIES_COLOURS[1]), pen=pg.mkPen(None))
        for item in (self.rank_line, self.kept_line):
            self.plot.addItem(item, ignoreBounds=True)
        self.plot.addItem(self.marker)

        self.by_rank = QRadioButton("Rank")
        self.by_rank.setObjectName("resizeByRank")
        self.by_energy = QRadioButton("Share of ‖ΔW‖² to keep")
        self.by_energy.setObjectName("resizeByEnergy")
        self.by_energy.setToolTip("The smallest rank (the same for every layer) whose update keeps at least "
                                  "this share of ‖ΔW‖², all layers together")
        self.mode = QButtonGroup(self)
        self.mode.addButton(self.by_rank)
        self.mode.addButton(self.by_energy)
        self.by_rank.setChecked(True)
        self.rank_spin = QSpinBox()
        self.rank_spin.setObjectName("resizeRank")
        self.rank_spin.setAccessibleName("New rank")
        self.energy_spin = QDoubleSpinBox()
        self.energy_spin.setObjectName("resizeEnergy")
        self.energy_spin.setAccessibleName("Share of the update to keep")
        self.energy_spin.setRange(1.0, 100.0)
        self.energy_spin.setDecimals(1)
        self.energy_spin.setSingleStep(0.5)
        self.energy_spin.setSuffix(" %")
        self.energy_spin.setValue(95.0)
        self.energy_slider = QSlider(Qt.Orientation.Horizontal)
        self.energy_slider.setObjectName("resizeEnergySlider")
        self.energy_slider.setRange(10, 1000)
        self.energy_slider.setValue(950)
        self.keeps_label = QLabel()
        self.keeps_label.setObjectName("resizeKeeps")
        font = self.keeps_label.font()
        font.setBold(True)
        self.keeps_label.setFont(font)
        self.keeps_label.setWordWrap(True)
        self.name_edit = QLineEdit()
        self.name_edit.setObjectName("resizeName")
        self.name_edit.setAccessibleName("Name of the resized adapter")
        self.name_edit.textChanged.connect(self._on_name_changed)
        self.problem = problem_label("resizeProblem")

        grid = QGridLayout()
        grid.addWidget(self.by_rank, 0, 0)
        grid.addWidget(self.rank_spin, 0, 1)
        grid.addWidget(self.by_energy, 1, 0)
        grid.addWidget(self.energy_spin, 1, 1)
        grid.addWidget(self.energy_slider, 2, 0, 1, 2)
        grid.addWidget(self.keeps_label, 3, 0, 1, 2)
        name_row = QHBoxLayout()
        name_row.addWidget(QLabel("Name"))
        name_row.addWidget(self.name_edit, 1)
        grid.addLayout(name_row, 4, 0, 1, 2)
        grid.setColumnStretch(0, 1)
        chooser = QWidget()
        chooser_column = QVBoxLayout(chooser)
        chooser_column.setContentsMargins(0, 0, 0, 0)
        chooser_column.addWidget(self.plot, 1)
        chooser_column.addLayout(grid)
        self.stack = QStackedWidget()
        self.stack.addWidget(waiting)
        self.stack.addWidget(chooser)

        self.buttons = dialog_buttons("resizeOkButton", "Resize")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setEnabled(False)
        column = QVBoxLayout(self)
        column.addWidget(head)
        column.addWidget(self.stack, 1)
        column.addWidget(self.problem)
        column.addWidget(self.buttons)
        self.problem.hide()

        self.rank_spin.valueChanged.connect(self._on_rank_spin_changed)
        self.energy_spin.valueChanged.connect(self._on_energy_spin_changed)
        self.energy_slider.valueChanged.connect(self._on_energy_slider_changed)
        self.mode.buttonToggled.connect(lambda *_: self._update())
        self.name_edit.textChanged.connect(lambda *_: self._check())
        self.resize(560, 560)

    def _set_head(self, measured: int | None) -> None:
        self.head.setText(f"Truncate every layer's update ΔW of <b>{escape(self.entry.name)}</b> to a lower rank by "
                          f"SVD ({escape(rank_text(self.entry, measured))}, {human_size(entry_size(self.entry))}). "
                          "The curve is the share of ‖ΔW‖² (all layers together) that each rank keeps.")

    def current_rank(self) -> int | None:
        """The adapter's rank now, as measured: the largest rank of any layer's update, where the
        curve ends (rank_text says why this, not entry.rank); None until the curve is in."""
        if self.curve is None:
            return None
        ranks = self.curve.get("ranks") or []
        return int(self.curve.get("max_rank") or (ranks[-1] if ranks else 0)) or None

    # -- the energy curve --------------------------------------------------------------------

    def start(self) -> None:
        """Measure the curve in the background (the dialog waits on it)."""
        from studio.core.engineclient import engine

        args = {"entry": self.entry.name, "gallery": str(self.entry.path.parent)}

        def work(progress, should_stop):   # in the engine process
            return engine().call("energy_curve", args, progress=progress, should_stop=should_stop)

        self.curve_task.start(work, done=self.set_curve, failed=self._on_curve_failed,
                              cancelled=lambda: self._on_curve_failed(None), progress=self._on_curve_progress)

    def set_curve(self, curve: dict) -> None:
        """Show a measured curve and pick a starting rank: the smallest keeping 99%, if lower than now,
        else half the current rank."""
        self.curve = curve
        ranks = [int(r) for r in curve.get("ranks") or []]
        kept = [float(k) for k in curve.get("kept") or []]
        max_rank = current = self.current_rank() or 1
        self._set_head(current)
        self.energy_curve_item.setData(ranks, [100.0 * k for k in kept])
        self.plot.setXRange(0.5, max_rank + 0.5, padding=0.02)
        self.plot.setYRange(min([100.0 * k for k in kept] + [100.0]) - 2, 101, padding=0)
        self._syncing = True
        self.rank_spin.setRange(1, max(max_rank, 1))
        self.rank_spin.setSuffix(f" of {current}")
        from studio.core.resize import rank_for_energy   # torch is imported inside its functions only

        start = rank_for_energy(curve, 0.99) if kept else 1
        if start >= current:
            start = max(1, current // 2)
        self.rank_spin.setValue(start)
        self._syncing = False
        self.stack.setCurrentIndex(1)
        self._update()

    def _on_curve_progress(self, message: str, fraction) -> None:
        self.progress_label.setText(message)
        show_fraction(self.progress_bar, fraction)

    def _on_curve_failed(self, text: str | None) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_label.setText("cancelled" if text is None else "could not measure the adapter")
        if text:
            self.problem.setText(text)
            self.problem.show()

    def shutdown(self) -> None:
        self.curve_task.shutdown(60000)

    def reject(self) -> None:
        self.curve_task.cancel()
        super().reject()

    # -- the choice --------------------------------------------------------------------------

    def kept(self) -> list[float]:
        return [float(k) for k in (self.curve or {}).get("kept") or []]

    def rank(self) -> int:
        """The rank the choice amounts to (for energy: the uniform rank reaching it)."""
        if self.by_energy.isChecked():
            from studio.core.resize import rank_for_energy

            return rank_for_energy(self.curve, self.energy_spin.value() / 100.0) if self.kept() else 1
        return self.rank_spin.value()

    def kept_share(self) -> float | None:
        kept = self.kept()
        if not kept:
            return None
        return kept[min(self.rank(), len(kept)) - 1]

    def choice(self) -> dict:
        """The keyword for studio.core.resize.resize: {"rank": r} or {"energy": share}."""
        if self.by_energy.isChecked():
            return {"energy": round(self.energy_spin.value() / 100.0, 4)}
        return {"rank": self.rank_spin.value()}

    def name(self) -> str:
        return self.name_edit.text().strip()

    def set_rank(self, rank: int) -> None:
        self.by_rank.setChecked(True)
        self.rank_spin.setValue(rank)

    def set_energy(self, share: float) -> None:
        self.by_energy.setChecked(True)
        self.energy_spin.setValue(100.0 * share)

    # -- keeping the controls in step ---------------------------------------------------------

    def _on_rank_spin_changed(self, value: int) -> None:
        if not self._syncing:
            self.by_rank.setChecked(True)
        self._update()

    def _on_energy_spin_changed(self, value: float) -> None:
        if not self._syncing:
            self._syncing = True
            self.energy_slider.setValue(int(round(value * 10)))
            self._syncing = False
            self.by_energy.setChecked(True)
        self._update()

    def _on_energy_slider_changed(self, value: int) -> None:
        if not self._syncing:
            self.energy_spin.setValue(value / 10.0)

    def _on_name_changed(self, text: str) -> None:
        if text != self._default:
            self._name_edited = True

    def _update(self) -> None:
        if self.curve is None:
            return
        rank, share = self.rank(), self.kept_share()
        current = self.current_rank() or rank
        # the file's size follows the rank the file stores (AdaLoRA's pruned layers: their average
        # budget), the choice follows the curve's
        saved = self.entry.rank or current
        if self.entry.config.get("peft_type") == "ADALORA" and not self.entry.config.get("rank_pattern"):
            saved = current      # never pruned: every layer is stored at init_r
        size = entry_size(self.entry)
        estimate = f" · about {human_size(size * rank / saved)} instead of {human_size(size)}" if saved else ""
        if self.by_energy.isChecked():
            self.keeps_label.setText(f"rank {rank} of {current} keeps {100 * (share or 0):.1f}% of ‖ΔW‖² "
                                     f"(at least {self.energy_spin.value():.1f}%){estimate}")
        else:
            self.keeps_label.setText(f"rank {rank} of {current} keeps {100 * (share or 0):.1f}% of ‖ΔW‖²"
                                     f"{estimate}")
        self.rank_line.setValue(rank)
        self.kept_line.setValue(100 * (share or 0))
        self.marker.setData([rank], [100 * (share or 0)])
        if not self._name_edited:
            stem = (f"{self.entry.name}-e{self.energy_spin.value():g}" if self.by_energy.isChecked()
                    else f"{self.entry.name}-r{rank}")
            try:
                default = self.gallery.unique_name(stem)
            except StudioError:
                default = stem
            self._default = default
            self.name_edit.setText(default)
        self._check()

    def current_problem(self) -> str | None:
        if self.curve is None:
            return "the energy curve is still being measured"
        current = self.current_rank()
        if self.by_rank.isChecked() and current is not None and self.rank_spin.value() >= current:
            return f"rank {self.rank_spin.value()} is not lower than the adapter's rank now ({current})"
        return name_problem(self.gallery, self.name())

    def _check(self) -> None:
        problem = self.current_problem()
        if self.curve is not None:
            self.problem.setText(problem or "")
            self.problem.setVisible(bool(problem))
        self.ok_button.setEnabled(problem is None)

    def accept(self) -> None:
        if self.current_problem() is None:
            super().accept()
