"""ThroughputChart: training tokens per second against optimizer step, with the median marked.

    chart.set_series(steps, tokens_per_s)
    chart.curve.getData(), chart.median_line.value()
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from .common import (LEFT_AXIS_WIDTH, SERIES_COLOURS, STEP_CURVE, ChartWidget, IntegerAxisItem, curve_width, fmt,
                     nearest_index)


class ThroughputChart(ChartWidget):
    empty_note = "No steps yet — throughput appears with the first step"

    def __init__(self, parent: QWidget | None = None):
        super().__init__("throughputChart", "Throughput chart", parent)
        self.plot = self.add_plot("tokens_per_s", 0, 0, left_width=LEFT_AXIS_WIDTH,
                                  axis_items={"bottom": IntegerAxisItem("bottom")})
        self.set_title(self.plot, "Throughput (tokens/s)")
        self.plot.setLabel("bottom", "step")
        self.make_step_plot(self.plot)
        self.curve = self.plot.plot(**STEP_CURVE)
        self.median_line = pg.InfiniteLine(angle=0, movable=False)
        self.median_line.hide()
        self.plot.addItem(self.median_line, ignoreBounds=True)
        self.steps = np.empty(0)
        self.tokens_per_s = np.empty(0)
        self.median = math.nan
        self.apply_palette()

    def set_series(self, steps, tokens_per_s) -> None:
        self.steps = np.asarray(steps, dtype=float)
        self.tokens_per_s = np.asarray(tokens_per_s, dtype=float)
        self.curve.setData(self.steps, self.tokens_per_s, connect="finite")
        self.update_downsampling(self.steps)
        finite = self.tokens_per_s[np.isfinite(self.tokens_per_s)]
        self.median = float(np.median(finite)) if len(finite) else math.nan
        self.median_line.setVisible(len(finite) > 0)
        if len(finite):
            self.median_line.setValue(self.median)
            self.set_title(self.plot, f"Throughput (tokens/s) · median {self.median:,.0f}")
        self.palette_changed()               # line width depends on the length
        self.set_empty(len(self.steps) == 0)

    def clear(self) -> None:
        self.set_series([], [])

    def palette_changed(self) -> None:
        self.curve.setPen(pg.mkPen(SERIES_COLOURS[3], width=curve_width(len(self.steps), 1.5)))
        self.median_line.setPen(pg.mkPen(self._muted(150), width=1, style=Qt.PenStyle.DashLine))

    def hover_text_at(self, x: float, y: float, plot: str | None = None) -> str:
        i = nearest_index(self.steps, x)
        if i < 0:
            return ""
        return f"step {int(self.steps[i])}: {fmt(self.tokens_per_s[i], 5)} tokens/s"
