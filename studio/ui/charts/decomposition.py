"""DecompositionChart: the DoRA paper's magnitude/direction analysis, ΔD (direction change, x)
against ΔM (magnitude change, y), one point per layer per telemetry step, coloured by layer
index (or by step), with each layer's points joined faintly in step order so its path shows.

    chart.set_points(layer_index, step, dm, dd, layer_names)
    chart.scatter.getData()                      # (ΔD, ΔM)
    chart.trail_curve.getData()                  # the faint per-layer paths
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QCheckBox, QComboBox, QLabel, QWidget

from ..layernames import short_name
from .common import ChartWidget, colormap, fmt

COLOUR_MODES = {"layer": "Colour by layer", "step": "Colour by step"}


class DecompositionChart(ChartWidget):
    empty_note = "No decomposition yet — ΔM and ΔD arrive every telemetry.every steps"

    def __init__(self, parent: QWidget | None = None):
        super().__init__("decompositionChart", "Decomposition chart", parent)
        self.plot = self.add_plot("decomposition", 0, 0)
        self.set_title(self.plot, "Magnitude vs direction change per layer")
        self.plot.setLabel("bottom", "ΔD (direction change)")
        self.plot.setLabel("left", "ΔM (magnitude change)")
        self.trail_curve = self.plot.plot(antialias=True)
        self.scatter = pg.ScatterPlotItem(size=8, antialias=True)
        self.plot.addItem(self.scatter)
        self.colour_bar = self.add_colour_bar(pg.ColorBarItem(
            values=(0.0, 1.0), colorMap=colormap(), label="layer index", interactive=False, width=12))
        self.graphics.addItem(self.colour_bar, row=0, col=1)

        self.colour_combo = self.add_control(QComboBox())
        self.colour_combo.setObjectName("decompositionColourCombo")
        self.colour_combo.setAccessibleName("Decomposition colouring")
        for key, text in COLOUR_MODES.items():
            self.colour_combo.addItem(text, key)
        self.paths_check = self.add_control(QCheckBox("Paths"))
        self.paths_check.setObjectName("decompositionPathsCheck")
        self.paths_check.setAccessibleName("Decomposition paths")
        self.paths_check.setToolTip("Join each layer's points in step order")
        self.paths_check.setChecked(True)
        self.controls_layout.addStretch(1)
        self.hint_label = self.add_control(QLabel(""))

        self.layer_index = np.empty(0)
        self.step = np.empty(0)
        self.dm = np.empty(0)
        self.dd = np.empty(0)
        self.layer_names: list[str] = []
        self._brushes = [pg.mkBrush(c) for c in colormap().getLookupTable(nPts=128, mode="qcolor")]
        self._point_pen = pg.mkPen(None)
        self.colour_combo.currentIndexChanged.connect(self._on_colour_combo_changed)
        self.paths_check.toggled.connect(self._on_paths_check_toggled)
        self.apply_palette()

    @property
    def colour_mode(self) -> str:
        return self.colour_combo.currentData() or "layer"

    def set_colour_mode(self, mode: str) -> None:
        """"layer" or "step"."""
        self.colour_combo.setCurrentIndex(list(COLOUR_MODES).index(mode))

    def set_points(self, layer_index, step, dm, dd, layer_names: list[str]) -> None:
        """One point per (layer, step): its layer (index into layer_names), step, ΔM and ΔD."""
        self.layer_index = np.asarray(layer_index, dtype=float)
        self.step = np.asarray(step, dtype=float)
        self.dm = np.asarray(dm, dtype=float)
        self.dd = np.asarray(dd, dtype=float)
        self.layer_names = list(layer_names)
        if not len(self.dm):
            self.scatter.setData([], [])
            self.trail_curve.setData([], [])
            self.set_empty(True)
            return
        self.set_empty(False)
        # paths: points of one layer in step order, joined; no segment between two layers
        order = np.lexsort((self.step, self.layer_index))
        same_layer_next = np.r_[self.layer_index[order][1:] == self.layer_index[order][:-1], False]
        self.trail_curve.setData(self.dd[order], self.dm[order], connect=same_layer_next)
        self._recolour()
        steps = np.unique(self.step)
        n_layers = len(np.unique(self.layer_index))
        span = f"step {int(steps[0])}" if len(steps) == 1 else f"{len(steps)} steps ({int(steps[0])}–{int(steps[-1])})"
        self.hint_label.setText(f"{n_layers} layer{'s' if n_layers != 1 else ''} · {span}")

    def clear(self) -> None:
        self.set_points([], [], [], [], [])

    def _recolour(self) -> None:
        if not len(self.dm):
            return
        values = self.layer_index if self.colour_mode == "layer" else self.step
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        if hi <= lo:
            hi = lo + 1.0
        # shared brush objects: pyqtgraph renders one symbol per distinct brush *object*, so a brush
        # per point would render thousands (224 layers x 40 steps: 1.2 s); a LUT renders <= 128
        bins = np.clip(np.nan_to_num((values - lo) / (hi - lo)) * (len(self._brushes) - 1), 0, len(self._brushes) - 1)
        brushes = [self._brushes[i] for i in bins.round().astype(int)]
        self.scatter.setData(self.dd, self.dm, brush=brushes, pen=self._point_pen, data=np.arange(len(self.dm)))
        self.colour_bar.setLevels((lo, hi))
        self.colour_bar.getAxis("left").setLabel("layer index" if self.colour_mode == "layer" else "step")

    # ---- reading back ------------------------------------------------------------------------

    def point_at(self, x: float, y: float, tolerance: float = 0.03) -> int:
        """Index of the point nearest (x, y), measured in fractions of the view, within
        `tolerance`; -1 if none."""
        if not len(self.dm) or not (math.isfinite(x) and math.isfinite(y)):
            return -1
        (x0, x1), (y0, y1) = self.plot.vb.viewRange()
        sx, sy = max(x1 - x0, 1e-12), max(y1 - y0, 1e-12)
        distance = np.hypot((self.dd - x) / sx, (self.dm - y) / sy)
        distance[~np.isfinite(distance)] = np.inf
        i = int(np.argmin(distance))
        return i if distance[i] <= tolerance else -1

    def hover_text_at(self, x: float, y: float, plot: str | None = None) -> str:
        i = self.point_at(x, y)
        return self.describe(i) if i >= 0 else ""

    def describe(self, i: int) -> str:
        layer = int(self.layer_index[i])
        name = short_name(self.layer_names[layer]) if 0 <= layer < len(self.layer_names) else f"layer {layer}"
        return f"{name}\nstep {int(self.step[i])}: ΔD {fmt(self.dd[i])}, ΔM {fmt(self.dm[i])}"

    # ---- palette, handlers -------------------------------------------------------------------

    def palette_changed(self) -> None:
        self.trail_curve.setPen(pg.mkPen(self._muted(70), width=1))
        self._point_pen = pg.mkPen(self._background(), width=0.5)
        self._recolour()

    def _on_colour_combo_changed(self, index: int) -> None:
        self._recolour()

    def _on_paths_check_toggled(self, on: bool) -> None:
        self.trail_curve.setVisible(on)
