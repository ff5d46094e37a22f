"""The gallery's dialogs: CombineDialog (several adapters on one base model into a new one),
ResizeDialog (truncate an adapter to a lower rank, chosen on its energy curve) and
ExportFolderDialog (the folder an export writes, an existing one or a new name).

The first two only collect a choice; the controller (gallery_actions.GalleryController) runs the
combine or resize itself in a BackgroundJob. What the engine can check cheaply (studio.core.export's
combine_problem, gallery names) is checked live and keeps OK disabled with the reason shown; the
energy curve, which needs the adapter's tensors, is computed in the dialog's own BackgroundJob.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QComboBox, QDialog, QDialogButtonBox,
                               QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QProgressBar, QRadioButton, QSlider, QSpinBox, QStackedWidget,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from studio.core.errors import StudioError
from studio.core.gallery import Entry, Gallery, check_name

from .charts.common import SERIES_COLOURS
from .forms import ERROR_STYLE
from .gallery_view import human_size, muted, short_base
from .worker import BackgroundJob

# what each combination method does, for the method combo's tooltips and the note under it
METHOD_HELP = {
    "linear": "Weighted sum of the low-rank factors A and B; every adapter must have the same rank. "
              "Fast, and exact only for one adapter.",
    "svd": "Weighted sum of the full updates ΔW, brought back to a low rank by SVD. Exact up to the "
           "truncation; the slowest.",
    "cat": "Stacks the factors side by side: exactly the weighted sum of the updates, with a rank "
           "that is the sum of the ranks.",
    "ties": "TIES-merging: keep each update's largest `density` share, elect one sign per weight, "
            "average what agrees. Reduces interference between tasks.",
    "dare_linear": "DARE: drop a random (1 − density) of each update and rescale the rest, then sum.",
    "dare_ties": "DARE's random drop and rescale, then TIES's sign election.",
    "magnitude_prune": "Keep the largest `density` share of each update by magnitude, then sum.",
}


def _engine():
    """studio.core.export (its functions import torch when called, not at import)."""
    from studio.core import export

    return export


def name_problem(gallery: Gallery, name: str) -> str | None:
    """Why `name` cannot be a new gallery entry's name, or None."""
    try:
        check_name(name)
    except StudioError as e:
        return str(e)
    if (gallery.root / name).exists():
        return f"an adapter named {name!r} already exists"
    return None


def _buttons(ok_name: str, ok_text: str) -> QDialogButtonBox:
    box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
    ok = box.button(QDialogButtonBox.StandardButton.Ok)
    ok.setObjectName(ok_name)
    ok.setText(ok_text)
    box.button(QDialogButtonBox.StandardButton.Cancel).setObjectName(ok_name.replace("Ok", "Cancel"))
    return box


def _problem_label(name: str) -> QLabel:
    label = QLabel()
    label.setObjectName(name)
    label.setWordWrap(True)
    label.setStyleSheet(ERROR_STYLE)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class CombineDialog(QDialog):
    """Tick the adapters to combine (the selected one and those on the same base model), give
    each a weight, pick the method (and density where it uses one) and a name."""

    problem_changed = Signal(str)

    def __init__(self, entry: Entry, compatible: list[Entry], gallery: Gallery, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("combineDialog")
        self.setWindowTitle(f"Combine adapters — {entry.name}")
        self.gallery = gallery
        self.entries = [entry] + [e for e in compatible if e.name != entry.name]
        self._name_edited = False     # once the person types a name, it is no longer made up for them
        self._default = ""
        engine = _engine()
        methods = list(engine.COMBINE_METHODS)
        self.density_methods = set(engine.DENSITY_METHODS)

        head = QLabel(f"Combine <b>{entry.name}</b> with other adapters on the same base model "
                      f"(<i>{short_base(entry.base_model)}</i>, {entry.task}) into a new gallery entry. "
                      "A negative weight subtracts an adapter's effect.")
        head.setWordWrap(True)
        head.setTextFormat(Qt.TextFormat.RichText)
        self.table = QTableWidget(len(self.entries), 3)
        self.table.setObjectName("combineTable")
        self.table.setAccessibleName("Adapters to combine")
        self.table.setHorizontalHeaderLabels(["Adapter", "Variant · rank · size", "Weight"])
        self.table.verticalHeader().hide()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.weight_spins: dict[str, QDoubleSpinBox] = {}
        self.check_items: dict[str, QTableWidgetItem] = {}
        for row, e in enumerate(self.entries):
            item = QTableWidgetItem(e.name)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if row == 0 else Qt.CheckState.Unchecked)
            item.setToolTip(e.base_model)
            self.table.setItem(row, 0, item)
            about = QTableWidgetItem(" · ".join([e.variant] + ([f"r {e.rank}"] if e.rank else [])
                                                + [human_size(_size(e))]))
            about.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.table.setItem(row, 1, about)
            spin = QDoubleSpinBox()
            spin.setObjectName(f"combineWeight{row}")
            spin.setAccessibleName(f"Weight of {e.name}")
            spin.setRange(-10.0, 10.0)
            spin.setDecimals(2)
            spin.setSingleStep(0.1)
            spin.setValue(1.0)
            spin.valueChanged.connect(self._update)
            self.table.setCellWidget(row, 2, spin)
            self.weight_spins[e.name] = spin
            self.check_items[e.name] = item
        self.table.itemChanged.connect(lambda *_: self._update())
        self.table.resizeRowsToContents()
        rows_h = sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        self.table.setMinimumHeight(min(240, rows_h + self.table.horizontalHeader().sizeHint().height() + 6))
        self.table.setMaximumHeight(max(240, self.table.minimumHeight()))

        self.method_combo = QComboBox()
        self.method_combo.setObjectName("combineMethod")
        self.method_combo.setAccessibleName("Combination method")
        for m in methods:
            self.method_combo.addItem(m, m)
            self.method_combo.setItemData(self.method_combo.count() - 1, METHOD_HELP.get(m, ""),
                                          Qt.ItemDataRole.ToolTipRole)
        self.method_help = QLabel()
        self.method_help.setObjectName("combineMethodHelp")
        self.method_help.setWordWrap(True)
        muted(self.method_help)
        self.density_spin = QDoubleSpinBox()
        self.density_spin.setObjectName("combineDensity")
        self.density_spin.setAccessibleName("Density")
        self.density_spin.setRange(0.01, 1.0)
        self.density_spin.setSingleStep(0.05)
        self.density_spin.setValue(0.5)
        self.density_spin.setToolTip("The share of each update's entries kept (TIES, DARE, magnitude pruning)")
        self.name_edit = QLineEdit()
        self.name_edit.setObjectName("combineName")
        self.name_edit.setAccessibleName("Name of the combined adapter")
        self.name_edit.textChanged.connect(self._on_name_changed)
        self.problem = _problem_label("combineProblem")
        self.buttons = _buttons("combineOkButton", "Combine")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)

        form = QFormLayout()
        form.addRow("Method", self.method_combo)
        form.addRow("", self.method_help)
        form.addRow("Density", self.density_spin)
        form.addRow("Name", self.name_edit)
        column = QVBoxLayout(self)
        column.addWidget(head)
        column.addWidget(self.table, 1)
        column.addLayout(form)
        column.addWidget(self.problem)
        column.addWidget(self.buttons)
        self.method_combo.currentIndexChanged.connect(lambda *_: self._update())
        self.density_spin.valueChanged.connect(lambda *_: self._update())
        self.name_edit.textChanged.connect(lambda *_: self._update())
        self._update()
        self.resize(640, self.sizeHint().height())

    # -- the choice --------------------------------------------------------------------------

    def chosen(self) -> tuple[list[Entry], list[float]]:
        entries = [e for e in self.entries if self.check_items[e.name].checkState() == Qt.CheckState.Checked]
        return entries, [self.weight_spins[e.name].value() for e in entries]

    def method(self) -> str:
        return self.method_combo.currentData() or "linear"

    def density(self) -> float:
        return self.density_spin.value()

    def name(self) -> str:
        return self.name_edit.text().strip()

    def set_checked(self, name: str, checked: bool = True) -> None:
        self.check_items[name].setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def set_method(self, method: str) -> None:
        self.method_combo.setCurrentIndex(self.method_combo.findData(method))

    # -- checking ----------------------------------------------------------------------------

    def current_problem(self) -> str | None:
        entries, weights = self.chosen()
        engine = _engine()
        try:
            problem = engine.combine_problem(entries, self.method())
        except StudioError as e:
            problem = str(e)
        if problem:
            return problem
        if weights and all(w == 0 for w in weights):
            return "every weight is 0: the result would do nothing"
        return name_problem(self.gallery, self.name())

    def _default_name(self) -> str:
        entries, _ = self.chosen()
        stem = "-".join(e.name for e in entries[:3]) if len(entries) > 1 else f"{self.entries[0].name}-combined"
        try:
            return self.gallery.unique_name(f"{stem}-{self.method()}")
        except StudioError:
            return f"{self.entries[0].name}-combined"

    def _on_name_changed(self, text: str) -> None:
        if text != self._default:
            self._name_edited = True

    def _update(self, *_):
        method = self.method()
        self.method_help.setText(METHOD_HELP.get(method, ""))
        self.density_spin.setEnabled(method in self.density_methods)
        if not self._name_edited:
            self._default = self._default_name()
            self.name_edit.setText(self._default)
        problem = self.current_problem()
        self.problem.setText(problem or "")
        self.problem.setVisible(bool(problem))
        self.ok_button.setEnabled(problem is None)
        self.problem_changed.emit(problem or "")

    def accept(self) -> None:
        if self.current_problem() is None:
            super().accept()


def _size(entry: Entry) -> int:
    try:
        return entry.size_bytes
    except OSError:
        return 0


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
        self.job: BackgroundJob | None = None
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
        self.problem = _problem_label("resizeProblem")

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

        self.buttons = _buttons("resizeOkButton", "Resize")
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
                          f"SVD ({escape(rank_text(self.entry, measured))}, {human_size(_size(self.entry))}). "
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
        engine = _engine()
        entry = self.entry

        def work(progress, should_stop):
            return engine.energy_curve(entry, progress=progress, should_stop=should_stop)

        job = BackgroundJob(work, self, name="energyCurve", heavy=True)
        job.progressed.connect(self._on_curve_progress)
        job.succeeded.connect(lambda curve, j=job: self._on_curve_ready(j, curve))
        job.failed.connect(lambda text, j=job: self._on_curve_failed(j, text))
        job.cancelled.connect(lambda j=job: self._on_curve_failed(j, None))
        self.job = job.start()

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
        from studio.core.export import rank_for_energy   # torch is imported inside its functions only

        start = rank_for_energy(curve, 0.99) if kept else 1
        if start >= current:
            start = max(1, current // 2)
        self.rank_spin.setValue(start)
        self._syncing = False
        self.stack.setCurrentIndex(1)
        self._update()

    def _on_curve_progress(self, message: str, fraction) -> None:
        self.progress_label.setText(message)
        if fraction is None:
            self.progress_bar.setRange(0, 0)
        else:
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(int(round(fraction * 1000)))

    def _on_curve_ready(self, job, curve: dict) -> None:
        if job is not self.job:
            return
        self.job = None
        self.set_curve(curve)

    def _on_curve_failed(self, job, text: str | None) -> None:
        if job is not self.job:
            return
        self.job = None
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_label.setText("cancelled" if text is None else "could not measure the adapter")
        if text:
            self.problem.setText(text)
            self.problem.show()

    def shutdown(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job.wait(60000)

    def reject(self) -> None:
        if self.job is not None:
            self.job.cancel()
        super().reject()

    # -- the choice --------------------------------------------------------------------------

    def kept(self) -> list[float]:
        return [float(k) for k in (self.curve or {}).get("kept") or []]

    def rank(self) -> int:
        """The rank the choice amounts to (for energy: the uniform rank reaching it)."""
        if self.by_energy.isChecked():
            from studio.core.export import rank_for_energy

            return rank_for_energy(self.curve, self.energy_spin.value() / 100.0) if self.kept() else 1
        return self.rank_spin.value()

    def kept_share(self) -> float | None:
        kept = self.kept()
        if not kept:
            return None
        return kept[min(self.rank(), len(kept)) - 1]

    def choice(self) -> dict:
        """The keyword for studio.core.export.resize: {"rank": r} or {"energy": share}."""
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
        size = _size(self.entry)
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


class ExportFolderDialog(QFileDialog):
    """Pick the folder an export writes: an existing folder, or the name of a new one typed in the
    name field (the export makes it). QFileDialog's own folder mode refuses a folder that does
    not exist yet (and so do the platforms' native pickers, hence Qt's own dialog here)."""

    def __init__(self, parent: QWidget | None, caption: str, start: str | Path = "", suggested: str = ""):
        super().__init__(parent, caption, str(start or ""))
        self.setObjectName("exportFolderDialog")
        self.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        self.setFileMode(QFileDialog.FileMode.Directory)
        self.setOption(QFileDialog.Option.ShowDirsOnly, True)
        self.setLabelText(QFileDialog.DialogLabel.FileName, "Folder:")
        self.setLabelText(QFileDialog.DialogLabel.Accept, "Export here")
        if suggested:
            self.selectFile(suggested)
        self.chosen = ""

    def accept(self) -> None:
        files = self.selectedFiles()
        path = Path(files[0]) if files else None
        if path is not None and not path.exists() and path.parent.is_dir():
            self.chosen = str(path)       # a new folder: QFileDialog.accept would refuse it
            QDialog.accept(self)
            return
        super().accept()
        if self.result() == QDialog.DialogCode.Accepted and files:
            self.chosen = files[0]
