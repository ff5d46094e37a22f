"""ImportanceChart: one horizontal bar per adapted layer, its importance by the chosen method,
coloured by module type (q_proj, k_proj, ..., with a legend), in layer order or sorted by value.

Several methods may exist for one run (every variant reports the relative update ‖ΔW‖F/‖W0‖F;
AdaLoRA adds its sensitivity, LoRA-drop its build-time ‖BAx‖² selection): a combo picks one.
LoRA-drop's layers that lost their own pair (shared) are drawn hatched grey, the kept ones solid.

    chart.set_importance(history.importance, kept=history.kept)
    chart.bar_items["q_proj"].getData()        # (values, bar positions) as drawn
    chart.bar_data()                           # (layers top to bottom, values)
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QComboBox, QLabel, QSizePolicy, QWidget

from ..layernames import compact_name, layer_period, module_type, short_name
from ..runseries import ImportanceSnapshot
from .common import SHARED_COLOUR, CategoryAxisItem, ChartWidget, fmt, type_colours

SORT_MODES = {"layer": "Layer order", "type": "By module type", "value": "By value"}


class HorizontalBarItem(pg.BarGraphItem):
    """Horizontal bars whose getData() is what is drawn: (values along x, positions along y)."""

    def getData(self):
        return self.opts.get("width"), self.opts.get("y")


class ImportanceChart(ChartWidget):
    empty_note = "No importance yet — it arrives with the spectra, every telemetry.every steps"

    def __init__(self, parent: QWidget | None = None):
        super().__init__("importanceChart", "Importance chart", parent)
        self.layer_axis = CategoryAxisItem("left", offset=0.0)
        self.plot = self.add_plot("importance", 0, 0, axis_items={"left": self.layer_axis})
        self.plot.invertY(True)
        self.plot.showGrid(x=True, y=False, alpha=0.15)
        # the legend sits beside the plot: inside, it would cover the longest bars
        self.legend = pg.LegendItem()
        self.legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)   # not stretched to the plot
        self.graphics.addItem(self.legend, row=0, col=1)
        self.graphics.ci.layout.setAlignment(self.legend, Qt.AlignmentFlag.AlignTop)
        self._legends.append(self.legend)
        self.bar_items: dict[str, HorizontalBarItem] = {}     # kept (or all) layers, per module type
        self.shared_bar_item: HorizontalBarItem | None = None  # LoRA-drop's shared layers

        self.add_control(QLabel("Method"))
        self.method_combo = self.add_control(QComboBox(), 1)
        self.method_combo.setObjectName("importanceMethodCombo")
        self.method_combo.setAccessibleName("Importance method")
        self.add_control(QLabel("Order"))
        self.sort_combo = self.add_control(QComboBox())
        self.sort_combo.setObjectName("importanceSortCombo")
        self.sort_combo.setAccessibleName("Importance order")
        for key, text in SORT_MODES.items():
            self.sort_combo.addItem(text, key)

        self.snapshots: dict[str, ImportanceSnapshot] = {}
        self.kept: list[str] | None = None
        self.shared_layers: set[str] = set()
        self.method: str | None = None
        self.layers: list[str] = []          # as drawn, top to bottom
        self.values = np.empty(0)
        self.method_combo.currentIndexChanged.connect(self._on_method_combo_changed)
        self.sort_combo.currentIndexChanged.connect(self._on_sort_combo_changed)
        self.apply_palette()

    @property
    def sort_mode(self) -> str:
        return self.sort_combo.currentData() or "layer"

    def set_importance(self, snapshots: dict[str, ImportanceSnapshot], kept: list[str] | None = None) -> None:
        """The latest snapshot of each method; `kept`: LoRA-drop's layers with their own pair."""
        self.snapshots = dict(snapshots)
        self.kept = list(kept) if kept is not None else None
        methods = list(self.snapshots)
        self.method_combo.blockSignals(True)
        self.method_combo.clear()
        self.method_combo.addItems(methods)
        if self.method not in methods:
            # the variant's own measure first (AdaLoRA's sensitivity, LoRA-drop's selection)
            own = [m for m in methods if not m.startswith("relative update")]
            self.method = (own or methods or [None])[0]
        if self.method is not None:
            self.method_combo.setCurrentIndex(methods.index(self.method))
        self.method_combo.blockSignals(False)
        self.method_combo.setEnabled(len(methods) > 1)
        self._redraw()

    def set_method(self, method: str) -> None:
        self.method_combo.setCurrentIndex(list(self.snapshots).index(method))

    def set_sort(self, mode: str) -> None:
        """"layer" (model order), "type" (grouped by module type, each in model order) or "value"
        (largest first)."""
        self.sort_combo.setCurrentIndex(list(SORT_MODES).index(mode))

    def clear(self) -> None:
        self.method = None
        self.set_importance({})

    def bar_data(self) -> tuple[list[str], np.ndarray]:
        """(layers top to bottom, their values), as drawn."""
        return list(self.layers), self.values.copy()

    # ---- drawing -----------------------------------------------------------------------------

    def _redraw(self) -> None:
        for item in list(self.bar_items.values()) + ([self.shared_bar_item] if self.shared_bar_item else []):
            self.plot.removeItem(item)
        self.legend.clear()
        self.bar_items, self.shared_bar_item = {}, None
        snap = self.snapshots.get(self.method) if self.method else None
        if snap is None or not snap.layers:
            self.layers, self.values = [], np.empty(0)
            self.set_empty(True)
            return
        self.set_empty(False)
        layers, values = list(snap.layers), np.asarray(snap.values, dtype=float)
        types_in_order = list(dict.fromkeys(module_type(n) for n in layers))
        if self.sort_mode == "value":
            order = np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")
            layers, values = [layers[i] for i in order], values[order]
        elif self.sort_mode == "type":                # q_proj of every layer, then k_proj, ...
            order = sorted(range(len(layers)), key=lambda i: types_in_order.index(module_type(layers[i])))
            layers, values = [layers[i] for i in order], values[order]
        self.layers, self.values = layers, values
        kept = snap.kept if snap.kept is not None else self.kept
        self.shared_layers = set(layers) - set(kept) if kept is not None else set()

        positions = np.arange(len(layers), dtype=float)
        types = types_in_order
        colours = type_colours(types)
        drawn = np.nan_to_num(values, nan=0.0)
        for t in types:
            mask = np.array([module_type(n) == t and n not in self.shared_layers for n in layers])
            if not mask.any():
                continue
            item = HorizontalBarItem(x0=0.0, y=positions[mask], height=0.72, width=drawn[mask],
                                     brush=pg.mkBrush(colours[t]), pen=pg.mkPen(None), name=t)
            self.plot.addItem(item)
            self.legend.addItem(item, t)
            self.bar_items[t] = item
        if self.shared_layers:
            mask = np.array([n in self.shared_layers for n in layers])
            brush = QBrush(QColor(SHARED_COLOUR), Qt.BrushStyle.BDiagPattern)
            self.shared_bar_item = HorizontalBarItem(x0=0.0, y=positions[mask], height=0.72, width=drawn[mask],
                                                     brush=brush, pen=pg.mkPen(SHARED_COLOUR, width=1),
                                                     name="shared (no own pair)")
            self.plot.addItem(self.shared_bar_item)
            self.legend.addItem(self.shared_bar_item, "shared (no own pair)")

        if self.sort_mode == "layer":
            period = layer_period(layers)
        elif self.sort_mode == "type":
            period = sum(module_type(n) == types_in_order[0] for n in layers)
        else:
            period = 1
        self.layer_axis.set_labels([compact_name(n) for n in layers], period)
        self.plot.setLabel("bottom", snap.method)
        title = f"Importance per layer · {snap.method} · step {snap.step}"
        if kept is not None:
            title += f"<br>LoRA-drop: {len(layers) - len(self.shared_layers)} kept, {len(self.shared_layers)} shared"
            if snap.threshold is not None:
                title += f" · kept per type until their share reaches T = {fmt(float(snap.threshold), 3)}"
        self.set_title(self.plot, title)
        finite = drawn[np.isfinite(drawn)]
        hi = float(finite.max()) if len(finite) else 1.0
        lo = min(0.0, float(finite.min()) if len(finite) else 0.0)
        self.plot.vb.setRange(xRange=(lo, hi if hi > lo else lo + 1.0), yRange=(-0.6, len(layers) - 0.4),
                              padding=0.02)

    # ---- reading back ------------------------------------------------------------------------

    def hover_text_at(self, x: float, y: float, plot: str | None = None) -> str:
        if not self.layers or not math.isfinite(y):
            return ""
        i = int(round(y))
        if not 0 <= i < len(self.layers) or abs(y - i) > 0.4:
            return ""
        return self.describe(i)

    def describe(self, i: int) -> str:
        """Text for bar i (top to bottom): layer, type, value, method and step."""
        snap = self.snapshots[self.method]
        name = self.layers[i]
        text = f"{short_name(name)} ({module_type(name)})\n{snap.method} = {fmt(self.values[i])} at step {snap.step}"
        if self.shared_layers:
            text += "\nshared: uses its type's one pair" if name in self.shared_layers else "\nkept: own pair"
        return text

    # ---- handlers ----------------------------------------------------------------------------

    def _on_method_combo_changed(self, index: int) -> None:
        if index >= 0:
            self.method = self.method_combo.itemText(index)
            self._redraw()

    def _on_sort_combo_changed(self, index: int) -> None:
        self._redraw()
