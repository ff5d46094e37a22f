"""OptimizerChart: the learning rate (top) and the gradient norm (bottom) against optimizer step,
two plots sharing the step axis (numbered under the gradient norm only), each at least
MIN_VIEW_HEIGHT tall (see common.py).

    chart.set_series(steps, lr, grad_norm)
    chart.lr_curve.getData(), chart.grad_norm_curve.getData()
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QWidget

from .common import (LEFT_AXIS_WIDTH, SERIES_COLOURS, STEP_CURVE, ChartWidget, IntegerAxisItem, curve_width, fmt,
                     nearest_index)


class OptimizerChart(ChartWidget):
    empty_note = "No steps yet — learning rate and gradient norm appear with the first step"

    def __init__(self, parent: QWidget | None = None):
        super().__init__("optimizerChart", "Optimizer chart", parent)
        self.lr_plot = self.add_plot("lr", 0, 0, left_width=LEFT_AXIS_WIDTH,
                                     axis_items={"bottom": IntegerAxisItem("bottom")})
        self.grad_plot = self.add_plot("grad_norm", 1, 0, left_width=LEFT_AXIS_WIDTH,
                                       axis_items={"bottom": IntegerAxisItem("bottom")})
        self.set_title(self.lr_plot, "Learning rate")
        self.set_title(self.grad_plot, "Gradient norm")
        self.grad_plot.setLabel("bottom", "step")
        self.grad_plot.setXLink(self.lr_plot)
        # the two plots share the step axis: its numbers once, under the gradient norm, leave the
        # learning rate's data area the room they took
        self.lr_plot.getAxis("bottom").setStyle(showValues=False)
        self.lr_plot.getAxis("left").enableAutoSIPrefix(False)   # 2e-4 as such, not "200" and a hidden µ
        for plot in (self.lr_plot, self.grad_plot):
            self.make_step_plot(plot)
        self.lr_curve = self.lr_plot.plot(**STEP_CURVE)
        self.grad_norm_curve = self.grad_plot.plot(**STEP_CURVE)
        self.steps = np.empty(0)
        self.lr = np.empty(0)
        self.grad_norm = np.empty(0)
        self.apply_palette()

    def set_series(self, steps, lr, grad_norm) -> None:
        self.steps = np.asarray(steps, dtype=float)
        self.lr = np.asarray(lr, dtype=float)
        self.grad_norm = np.asarray(grad_norm, dtype=float)
        self.lr_curve.setData(self.steps, self.lr, connect="finite")
        self.grad_norm_curve.setData(self.steps, self.grad_norm, connect="finite")
        # the gradient plot follows this x range (setXLink): settle it now, not at the next paint,
        # so the linked plot neither clips its new points to a stale range nor downsamples for it
        self.lr_plot.vb.updateAutoRange()
        # a learning rate is never negative: its axis runs from 0 (a constant rate auto-ranged to
        # value ± 0.5, a flat line at "0" between -0.4 and 0.4)
        finite = self.lr[np.isfinite(self.lr)]
        if len(finite) and finite.max() > 0:
            top = float(finite.max()) * 1.1
            if self.lr_plot.vb.state["autoRange"][1] or self.lr_plot.vb.viewRange()[1] != [0.0, top]:
                self.lr_plot.setYRange(0.0, top, padding=0)   # (only when it moves: a range change relays out)
        else:
            self.lr_plot.enableAutoRange(axis="y")
        self.update_downsampling(self.steps)
        width = curve_width(len(self.steps), 2.0)
        if width != getattr(self, "_width", None):   # line widths depend on the length (restyle when it moves)
            self._width = width
            self.palette_changed()
        self.set_empty(len(self.steps) == 0)

    def clear(self) -> None:
        self.set_series([], [], [])

    def palette_changed(self) -> None:
        n = len(self.steps)
        self.lr_curve.setPen(pg.mkPen(SERIES_COLOURS[4], width=curve_width(n, 2.0)))
        self.grad_norm_curve.setPen(pg.mkPen(SERIES_COLOURS[6], width=curve_width(n, 1.5)))

    def hover_text_at(self, x: float, y: float, plot: str | None = None) -> str:
        i = nearest_index(self.steps, x)
        if i < 0:
            return ""
        return f"step {int(self.steps[i])}: lr {fmt(self.lr[i], 3)}, grad norm {fmt(self.grad_norm[i])}"
