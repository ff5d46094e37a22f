"""LossChart: training loss against optimizer step, raw (faint) and smoothed (debiased EMA), the
eval loss as points joined by a line, a log-scale toggle, and other runs' smoothed loss overlaid
for comparison (with a legend).

The legend sits in the plot's title row, right of the title or, in a narrow chart, under it, in as
many columns as fit (the row grows to hold it): inside the data area it covered the newest points.
It names the eval loss once there is an eval point (before, pyqtgraph drew a hidden curve's entry
as a black square).

    chart.set_series(steps, loss, eval_steps, eval_loss)
    chart.set_overlays([("20250101-lora", steps, loss), ...])
    chart.raw_curve.getData(), chart.smooth_curve.getData(), chart.eval_curve.getData()
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QCheckBox, QDoubleSpinBox, QLabel, QWidget

from .common import (LEFT_AXIS_WIDTH, SERIES_COLOURS, STEP_CURVE, ChartWidget, IntegerAxisItem, curve_width, ema,
                     fmt, nearest_index)

LOSS_COLOUR = SERIES_COLOURS[0]
EVAL_COLOUR = SERIES_COLOURS[1]
OVERLAY_COLOURS = SERIES_COLOURS[2:]

TITLE_ROW = 30          # px: PlotItem's title row
LEGEND_RIGHT = 4        # px from the plot's right edge
LEGEND_TOP = 2          # px from the plot's top
LEGEND_GAP = 10         # px at least between the title and the legend
LEGEND_SPACING = 5      # px between a legend entry's sample and label, and between entries


class LossChart(ChartWidget):
    empty_note = "No steps yet — the loss appears after the first optimizer step"

    def __init__(self, parent: QWidget | None = None):
        super().__init__("lossChart", "Loss chart", parent)
        self.plot = self.add_plot("loss", 0, 0, left_width=LEFT_AXIS_WIDTH,
                                  axis_items={"bottom": IntegerAxisItem("bottom")})
        self.set_title(self.plot, "Loss")
        self.plot.setLabel("bottom", "step")
        self.make_step_plot(self.plot)          # long runs: peak-downsampled, clipped to the view
        self.legend = self.add_legend(self.plot)
        self.legend.setParentItem(self.plot)            # over the title row, not the data (_fit_legend)
        self.plot.layout.setAlignment(self.plot.titleLabel, Qt.AlignmentFlag.AlignTop)   # in a taller row
        self.legend.layout.setHorizontalSpacing(LEGEND_SPACING)
        self.legend.layout.setContentsMargins(4, 1, 4, 1)
        self.legend_columns = 0
        self.raw_curve = self.plot.plot(name="train loss", **STEP_CURVE)
        self.smooth_curve = self.plot.plot(name="train loss (smoothed)", **STEP_CURVE)
        self.eval_curve = self.plot.plot(symbol="o", symbolSize=7, antialias=True)   # named by _sync_legend
        self.overlay_curves: list[pg.PlotDataItem] = []
        self.plot.vb.sigResized.connect(self._fit_legend)

        self.add_control(QLabel("Smoothing"))
        self.smoothing_spin = self.add_control(QDoubleSpinBox())
        self.smoothing_spin.setObjectName("lossSmoothingSpin")
        self.smoothing_spin.setAccessibleName("Loss smoothing")
        self.smoothing_spin.setRange(0.0, 0.99)
        self.smoothing_spin.setSingleStep(0.05)
        self.smoothing_spin.setDecimals(2)
        self.smoothing_spin.setValue(0.6)
        self.smoothing_spin.setToolTip("Exponential moving average weight: 0 = raw, 0.99 = very smooth")
        self.log_scale_check = self.add_control(QCheckBox("Log scale"))
        self.log_scale_check.setObjectName("lossLogScaleCheck")
        self.log_scale_check.setAccessibleName("Loss log scale")
        self.controls_layout.addStretch(1)

        self.steps = np.empty(0)
        self.loss = np.empty(0)
        self.smoothed = np.empty(0)
        self.eval_steps = np.empty(0)
        self.eval_loss = np.empty(0)
        self.overlays: list[tuple[str, np.ndarray, np.ndarray]] = []
        self._overlay_smoothed: list[np.ndarray] = []
        self._ema_state = None
        self.smoothing_spin.valueChanged.connect(self._on_smoothing_spin_changed)
        self.log_scale_check.toggled.connect(self._on_log_scale_check_toggled)
        self.apply_palette()

    @property
    def smoothing(self) -> float:
        return float(self.smoothing_spin.value())

    @property
    def log_scale(self) -> bool:
        return self.log_scale_check.isChecked()

    def set_series(self, steps, loss, eval_steps=(), eval_loss=()) -> None:
        """Train loss per step, and eval loss at the steps it was measured."""
        self.steps = np.asarray(steps, dtype=float)
        self.loss = np.asarray(loss, dtype=float)
        self.eval_steps = np.asarray(eval_steps, dtype=float)
        self.eval_loss = np.asarray(eval_loss, dtype=float)
        self.smoothed, self._ema_state = ema(self.loss, self.smoothing, self._ema_state)
        self.raw_curve.setData(self.steps, self.loss, connect="finite")
        self.smooth_curve.setData(self.steps, self.smoothed, connect="finite")
        self.eval_curve.setData(self.eval_steps, self.eval_loss, connect="finite")
        self.eval_curve.setVisible(len(self.eval_steps) > 0)
        self._sync_legend()
        self.update_downsampling(self.steps)
        width = curve_width(len(self.steps), 2.0)
        if width != getattr(self, "_width", None):   # line widths depend on the length (restyle when it moves)
            self._width = width
            self.palette_changed()
        self._update_empty()

    def set_smoothing(self, weight: float) -> None:
        self.smoothing_spin.setValue(weight)

    def set_log_scale(self, on: bool) -> None:
        self.log_scale_check.setChecked(on)

    def set_overlays(self, overlays) -> None:
        """Other runs' loss for comparison: [(name, steps, loss), ...], drawn smoothed, dashed."""
        for curve in self.overlay_curves:
            self.plot.removeItem(curve)
            self.legend.removeItem(curve)
        self.overlays = [(str(n), np.asarray(s, dtype=float), np.asarray(v, dtype=float)) for n, s, v in overlays]
        self.overlay_curves = []
        self._overlay_smoothed = []
        for i, (name, steps, loss) in enumerate(self.overlays):
            smoothed = ema(loss, self.smoothing)[0]
            colour = OVERLAY_COLOURS[i % len(OVERLAY_COLOURS)]
            pen = pg.mkPen(colour, width=curve_width(len(steps), 1.5), style=Qt.PenStyle.DashLine)
            curve = self.plot.plot(steps, smoothed, name=name, connect="finite", pen=pen, **STEP_CURVE)
            curve.setZValue(-5)
            self.overlay_curves.append(curve)
            self._overlay_smoothed.append(smoothed)
        self._sync_legend()
        self._update_empty()

    def clear(self) -> None:
        self._ema_state = None
        self.set_overlays([])
        self.set_series([], [])

    def _update_empty(self) -> None:
        self.set_empty(len(self.steps) == 0 and not self.overlays)

    # ---- legend ------------------------------------------------------------------------------

    def legend_entries(self) -> list[tuple[pg.PlotDataItem, str]]:
        """What the legend names, in order: the eval loss only once there is an eval point."""
        entries = [(self.raw_curve, "train loss"), (self.smooth_curve, "train loss (smoothed)")]
        if len(self.eval_steps):
            entries.append((self.eval_curve, "eval loss"))
        entries += [(curve, name) for curve, (name, _, _) in zip(self.overlay_curves, self.overlays)]
        return entries

    def _sync_legend(self) -> None:
        entries = self.legend_entries()
        if [(sample.item, label.text) for sample, label in self.legend.items] != entries:
            self._build_legend(entries, self.legend_columns or len(entries))
        self._fit_legend()

    def _build_legend(self, entries, columns: int) -> None:
        self.legend.clear()
        self.legend.columnCount = max(1, columns)
        self.legend.rowCount = 1
        for item, name in entries:
            self.legend.addItem(item, name)
        self.legend_columns = self.legend.columnCount

    def _legend_size(self, columns: int) -> tuple[float, float]:
        """(width, height) of the legend in `columns` columns."""
        samples = [sample.effectiveSizeHint(Qt.SizeHint.PreferredSize) for sample, _ in self.legend.items]
        labels = [label.effectiveSizeHint(Qt.SizeHint.PreferredSize) for _, label in self.legend.items]
        if not labels:
            return 0.0, 0.0
        margins = self.legend.layout.getContentsMargins()
        width = sum(max(s.width() for s in samples[j::columns]) + max(lb.width() for lb in labels[j::columns])
                    for j in range(min(columns, len(labels))))
        width += LEGEND_SPACING * (2 * min(columns, len(labels)) - 1) + margins[0] + margins[2]
        rows = math.ceil(len(labels) / columns)
        height = sum(max([s.height() for s in samples[r * columns:(r + 1) * columns]] +
                         [lb.height() for lb in labels[r * columns:(r + 1) * columns]]) for r in range(rows))
        return width, height + margins[1] + margins[3]

    def _fit_legend(self, *_) -> None:
        """The legend in the title row: right of the title, or under it where that makes the row
        shorter (a narrow chart), in the most columns that fit; the row as tall as it needs."""
        n = len(self.legend.items)
        self.legend.setVisible(n > 0)
        width = self.plot.size().width()
        if not n or width <= 0:                  # not laid out yet
            return
        vb = self.plot.vb.geometry()
        title = self.plot.titleLabel.item.boundingRect().width()
        beside = width - LEGEND_RIGHT - (vb.center().x() + title / 2 + LEGEND_GAP)
        below = width - LEGEND_RIGHT - vb.left()
        places = []                              # (title row height, columns, legend top)
        for room, top in ((beside, LEGEND_TOP), (below, TITLE_ROW)):
            columns = next((c for c in range(n, 0, -1) if self._legend_size(c)[0] <= room), 0)
            if columns:
                places.append((top + self._legend_size(columns)[1], columns, top))
        _, columns, top = min(places, default=(0, 1, TITLE_ROW))     # the shorter row; beside on a tie
        if columns != self.legend.columnCount:
            self._build_legend(self.legend_entries(), columns)
        size = self._legend_size(columns)
        self.legend.setGeometry(0, 0, *size)     # then anchored again: setGeometry moves it to 0, 0
        self.legend.anchor(itemPos=(1, 0), parentPos=(1, 0), offset=(-LEGEND_RIGHT, top))
        row = max(TITLE_ROW, math.ceil(top + size[1] + 2))
        if self.plot.layout.rowMinimumHeight(0) != row or self.plot.layout.rowMaximumHeight(0) != row:
            self.plot.layout.setRowFixedHeight(0, row)
            self.graphics.sync_minimum()

    def palette_changed(self) -> None:
        faint = QColor(LOSS_COLOUR)
        faint.setAlpha(80)
        self.raw_curve.setPen(pg.mkPen(faint, width=1))
        self.smooth_curve.setPen(pg.mkPen(LOSS_COLOUR, width=curve_width(len(self.steps), 2.0)))
        self.eval_curve.setPen(pg.mkPen(EVAL_COLOUR, width=1.5))
        self.eval_curve.setSymbolBrush(pg.mkBrush(EVAL_COLOUR))
        self.eval_curve.setSymbolPen(pg.mkPen(self._background(), width=1))
        self._fit_legend()                   # setTitle (apply_palette) put the title row back to 30 px

    def _on_smoothing_spin_changed(self, value: float) -> None:
        self._ema_state = None
        self.set_series(self.steps, self.loss, self.eval_steps, self.eval_loss)
        self.set_overlays(self.overlays)

    def _on_log_scale_check_toggled(self, on: bool) -> None:
        self.plot.setLogMode(y=on)

    def hover_text_at(self, x: float, y: float, plot: str | None = None) -> str:
        i = nearest_index(self.steps, x)
        lines = []
        if i >= 0:
            step = self.steps[i]
            lines.append(f"step {int(step)}: loss {fmt(self.loss[i])} (smoothed {fmt(self.smoothed[i])})")
            j = nearest_index(self.eval_steps, step)
            if j >= 0 and self.eval_steps[j] == step:
                lines.append(f"eval loss {fmt(self.eval_loss[j])}")
        else:
            step = x
        for (name, steps, _), smoothed in zip(self.overlays, self._overlay_smoothed):
            k = nearest_index(steps, step)
            if k >= 0 and steps[k] == round(step):
                lines.append(f"{name}: {fmt(smoothed[k])} (smoothed)")
        return "\n".join(lines)
