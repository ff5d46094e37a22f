"""LossChart: training loss against optimizer step, raw (faint) and smoothed (debiased EMA), the
eval loss as points joined by a line, a log-scale toggle, and other runs' smoothed loss overlaid
for comparison (with a legend).

    chart.set_series(steps, loss, eval_steps, eval_loss)
    chart.set_overlays([("20250101-lora", steps, loss), ...])
    chart.raw_curve.getData(), chart.smooth_curve.getData(), chart.eval_curve.getData()
"""

from __future__ import annotations

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
        self.raw_curve = self.plot.plot(name="train loss", **STEP_CURVE)
        self.smooth_curve = self.plot.plot(name="train loss (smoothed)", **STEP_CURVE)
        self.eval_curve = self.plot.plot(name="eval loss", symbol="o", symbolSize=7, antialias=True)
        self.overlay_curves: list[pg.PlotDataItem] = []

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
        self.update_downsampling(self.steps)
        self.palette_changed()               # line widths depend on the length
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
        self._update_empty()

    def clear(self) -> None:
        self._ema_state = None
        self.set_overlays([])
        self.set_series([], [])

    def _update_empty(self) -> None:
        self.set_empty(len(self.steps) == 0 and not self.overlays)

    def palette_changed(self) -> None:
        faint = QColor(LOSS_COLOUR)
        faint.setAlpha(80)
        self.raw_curve.setPen(pg.mkPen(faint, width=1))
        self.smooth_curve.setPen(pg.mkPen(LOSS_COLOUR, width=curve_width(len(self.steps), 2.0)))
        self.eval_curve.setPen(pg.mkPen(EVAL_COLOUR, width=1.5))
        self.eval_curve.setSymbolBrush(pg.mkBrush(EVAL_COLOUR))
        self.eval_curve.setSymbolPen(pg.mkPen(self._background(), width=1))

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
