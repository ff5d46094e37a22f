"""RankChart: each adapted layer's rank over the run, as a layers × time heatmap (one column per
`ranks` event, labelled by its step), and AdaLoRA's total rank budget over time with its target
below it. LoRA-drop reports one column at build time: its kept layers at rank r, the shared at 0.

    chart.set_ranks(steps, layers, matrix, budget, target_budget, kept, shared)
    chart.rank_image.image                       # (time, layer): the rank, NaN where not reported
    chart.budget_curve.getData()                 # (column index, budget)
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtWidgets import QWidget

from ..layernames import compact_name, layer_period, short_name
from .common import SERIES_COLOURS, CategoryAxisItem, ChartWidget, colormap, fmt


RANK_AXIS_WIDTH = 96     # room for "L31 gate_proj"; the budget plot below uses the same


class RankChart(ChartWidget):
    empty_note = ("No ranks for this run — AdaLoRA reallocates ranks as it trains, "
                  "LoRA-drop shows which layers kept their own pair")

    def __init__(self, parent: QWidget | None = None):
        super().__init__("rankChart", "Rank chart", parent)
        self.layer_axis = CategoryAxisItem("left", offset=0.5)
        self.step_axis = CategoryAxisItem("bottom", offset=0.0)
        self.budget_step_axis = CategoryAxisItem("bottom", offset=0.0)
        self.rank_plot = self.add_plot("ranks", 0, 0, axis_items={"left": self.layer_axis, "bottom": self.step_axis},
                                       left_width=RANK_AXIS_WIDTH)
        self.rank_plot.invertY(True)
        self.rank_plot.showGrid(x=False, y=False)
        self.rank_plot.setLabel("bottom", "step")
        self.rank_image = pg.ImageItem(axisOrder="col-major")
        self.rank_plot.addItem(self.rank_image)
        self.colour_bar = self.add_colour_bar(pg.ColorBarItem(
            values=(0.0, 1.0), colorMap=colormap(), label="rank", interactive=False, width=12))
        self.colour_bar.setImageItem(self.rank_image)
        self.graphics.addItem(self.colour_bar, row=0, col=1)

        self.budget_plot = self.add_plot("budget", 1, 0, axis_items={"bottom": self.budget_step_axis},
                                         left_width=RANK_AXIS_WIDTH)
        self.budget_plot.setXLink(self.rank_plot)
        self.budget_plot.setLabel("bottom", "step")
        self.budget_curve = self.budget_plot.plot(symbol="o", symbolSize=6, antialias=True)
        self.target_line = pg.InfiniteLine(angle=0, movable=False, label="target {value:.0f}",
                                           labelOpts={"position": 0.95, "anchors": [(1, 1), (1, 1)]})
        self.budget_plot.addItem(self.target_line, ignoreBounds=True)
        self.graphics.ci.layout.setRowStretchFactor(0, 3)
        self.graphics.ci.layout.setRowStretchFactor(1, 1)

        self.steps = np.empty(0)
        self.layers: list[str] = []
        self.matrix = np.empty((0, 0))
        self.budget = np.empty(0)
        self.target_budget: float | None = None
        self.kept: list[str] | None = None
        self.shared: dict[str, list[str]] | None = None
        self.apply_palette()

    @property
    def has_budget(self) -> bool:
        return bool(np.isfinite(self.budget).any())

    def set_ranks(self, steps, layers, matrix, budget=None, target_budget=None, kept=None, shared=None) -> None:
        """Ranks at each `ranks` event: steps (T), layers (L), matrix (L × T, NaN = not reported);
        AdaLoRA's budget (T) and target; LoRA-drop's kept list and shared groups."""
        self.steps = np.asarray(steps, dtype=float)
        self.layers = list(layers)
        self.matrix = np.asarray(matrix, dtype=float).reshape(len(self.layers), len(self.steps))
        self.budget = np.full(len(self.steps), np.nan) if budget is None else np.asarray(budget, dtype=float)
        self.target_budget = target_budget
        self.kept, self.shared = kept, shared
        if not len(self.steps) or not self.layers:
            self.set_empty(True)
            return
        self.set_empty(False)
        n_steps, n_layers = len(self.steps), len(self.layers)
        self.rank_image.setImage(self.matrix.T, autoLevels=False)
        finite = self.matrix[np.isfinite(self.matrix)]
        hi = float(finite.max()) if len(finite) else 1.0
        self.colour_bar.setLevels((0.0, hi if hi > 0 else 1.0))
        self.rank_image.setRect(QRectF(-0.5, 0.0, n_steps, n_layers))
        self.rank_plot.vb.setRange(xRange=(-0.5, n_steps - 0.5), yRange=(0, n_layers), padding=0)
        self.layer_axis.set_labels([compact_name(n) for n in self.layers], layer_period(self.layers))
        step_labels = [str(int(s)) for s in self.steps]
        self.step_axis.set_labels(step_labels)
        self.budget_step_axis.set_labels(step_labels)

        title = "Rank per layer over training"
        if kept is not None:
            n_shared = sum(len(v) for v in (shared or {}).values())
            title = (f"LoRA-drop: {len(kept)} layers keep their own pair, "
                     f"{n_shared} share one per type (rank 0 here)")
        elif self.has_budget:
            title += f" · budget {fmt(self.budget[np.isfinite(self.budget)][-1])}"
            if target_budget is not None:
                title += f" → target {fmt(float(target_budget))}"
        self.set_title(self.rank_plot, title)

        self._show_budget(self.has_budget)
        self.budget_curve.setData(np.arange(n_steps, dtype=float), self.budget, connect="finite")
        self.target_line.setVisible(target_budget is not None)
        if target_budget is not None:
            self.target_line.setValue(float(target_budget))
        if self.has_budget:
            self.set_title(self.budget_plot, "Total rank budget")
            values = [v for v in list(self.budget[np.isfinite(self.budget)]) + [target_budget] if v is not None]
            self.budget_plot.vb.setYRange(0, max(values) * 1.08, padding=0)

    def clear(self) -> None:
        self.set_ranks([], [], np.empty((0, 0)))

    def _show_budget(self, shown: bool) -> None:
        # a hidden item keeps its row in a GraphicsLayout: collapse it so the heatmap gets the room
        self.budget_plot.setVisible(shown)
        self.budget_plot.setMaximumHeight(16777215 if shown else 0)
        self.graphics.ci.layout.setRowStretchFactor(1, 1 if shown else 0)
        self.graphics.sync_minimum()            # the chart's minimum height with or without it

    # ---- reading back ------------------------------------------------------------------------

    def cell_at(self, x: float, y: float) -> tuple[int, int]:
        """(layer row, time column) under the heatmap point (x, y), or (-1, -1)."""
        if not (math.isfinite(x) and math.isfinite(y)):
            return -1, -1
        col, row = int(round(x)), int(math.floor(y))
        if 0 <= row < len(self.layers) and 0 <= col < len(self.steps):
            return row, col
        return -1, -1

    def hover_text_at(self, x: float, y: float, plot: str | None = None) -> str:
        if plot == "budget":
            col = int(round(x)) if math.isfinite(x) else -1
            if not 0 <= col < len(self.steps) or not math.isfinite(self.budget[col]):
                return ""
            target = f" (target {fmt(float(self.target_budget))})" if self.target_budget is not None else ""
            return f"step {int(self.steps[col])}: budget {fmt(self.budget[col])}{target}"
        row, col = self.cell_at(x, y)
        if row < 0:
            return ""
        return self.describe(row, col)

    def describe(self, row: int, col: int) -> str:
        name = self.layers[row]
        rank = self.matrix[row, col]
        text = f"{short_name(name)}\nstep {int(self.steps[col])}: rank {fmt(rank) if math.isfinite(rank) else '—'}"
        if self.kept is not None:
            if name in self.kept:
                text += " (kept: own pair)"
            else:
                group = next((g for g, names in (self.shared or {}).items() if name in names), None)
                text += f" (shared{': group ' + group if group else ''})"
        return text

    def palette_changed(self) -> None:
        self.budget_curve.setPen(pg.mkPen(SERIES_COLOURS[4], width=2))
        self.budget_curve.setSymbolBrush(pg.mkBrush(SERIES_COLOURS[4]))
        self.budget_curve.setSymbolPen(pg.mkPen(self._background()))
        self.target_line.setPen(pg.mkPen(SERIES_COLOURS[2], width=1.5, style=Qt.PenStyle.DashLine))
        self.target_line.label.setColor(SERIES_COLOURS[2])
