"""SpectrumChart: the singular values of every adapted layer's update ΔW, as a layers × σ-index
heatmap of log10 σ (with a colour bar), and the selected layer's spectrum on a log scale with the
ranks holding 90% and 99% of ‖ΔW‖² marked (k90, k99).

A layer is selected by clicking its heatmap row or from the layer combo; the step slider goes
through every `spectra` snapshot of the run (the latest by default, and it follows new ones while
it is at the end). Diverged layers are empty rows, shorter spectra are padded, and DoRA's
"direction" spectra say so in the titles.

    chart.set_snapshots(history.spectra)         # SpectraSnapshot list (studio.ui.runseries)
    chart.heatmap_image.image                    # (σ index, layer): log10 σ, NaN where none
    chart.spectrum_curve.getOriginalDataset()    # (1..n, σ) of the selected layer
    chart.k90_line.value(), chart.k99_line.value()
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtWidgets import QComboBox, QLabel, QSlider, QWidget

from ..layernames import compact_name, layer_period, short_name
from ..runseries import SpectraSnapshot
from .common import SERIES_COLOURS, CategoryAxisItem, ChartWidget, IntegerAxisItem, colormap, fmt

_KIND_TEXT = {"exact": "ΔW", "direction": "ΔW's direction part (DoRA)"}


def log10_sigma(matrix: np.ndarray) -> np.ndarray:
    """log10 σ, NaN where σ is missing or not positive (a zero singular value has no log)."""
    out = np.full(matrix.shape, np.nan)
    positive = np.isfinite(matrix) & (matrix > 0)
    out[positive] = np.log10(matrix[positive])
    return out


class SpectrumChart(ChartWidget):
    empty_note = "No spectra yet — they arrive every telemetry.every steps"

    def __init__(self, parent: QWidget | None = None):
        super().__init__("spectrumChart", "Spectrum chart", parent)
        self.layer_axis = CategoryAxisItem("left", offset=0.5)
        self.heatmap_plot = self.add_plot("heatmap", 0, 0, axis_items={"left": self.layer_axis,
                                                                  "bottom": IntegerAxisItem("bottom")})
        self.heatmap_plot.invertY(True)
        self.heatmap_plot.setLabel("bottom", "singular value index")
        self.heatmap_plot.showGrid(x=False, y=False)
        self.heatmap_image = pg.ImageItem(axisOrder="col-major")
        self.heatmap_plot.addItem(self.heatmap_image)
        self.selection_box = pg.PlotDataItem()
        self.heatmap_plot.addItem(self.selection_box)
        self.colour_bar = self.add_colour_bar(pg.ColorBarItem(
            values=(0.0, 1.0), colorMap=colormap(), label="log10 σ", interactive=False, width=12))
        self.colour_bar.setImageItem(self.heatmap_image)
        self.graphics.addItem(self.colour_bar, row=0, col=1)

        self.spectrum_plot = self.add_plot("spectrum", 0, 2, axis_items={"bottom": IntegerAxisItem("bottom")})
        self.spectrum_plot.setLogMode(y=True)
        self.spectrum_plot.getAxis("left").enableAutoSIPrefix(False)   # a log axis says 10⁻³ itself
        self.spectrum_note = pg.TextItem(anchor=(0.5, 0.5))            # "no update (rank 0)", "diverged"
        self.spectrum_note.hide()
        self.spectrum_plot.addItem(self.spectrum_note, ignoreBounds=True)
        self.spectrum_plot.setLabel("bottom", "singular value index")
        self.spectrum_plot.setLabel("left", "σ")
        self.spectrum_curve = self.spectrum_plot.plot(symbol="o", symbolSize=5, antialias=True)
        self.k90_line = pg.InfiniteLine(angle=90, movable=False, label="k90 = {value:.0f}",
                                        labelOpts={"position": 0.93, "anchors": [(0, 0.5), (0, 0.5)]})
        # the k99 label sits lower than k90's, so the two stay readable when k90 == k99
        self.k99_line = pg.InfiniteLine(angle=90, movable=False, label="k99 = {value:.0f}",
                                        labelOpts={"position": 0.80, "anchors": [(0, 0.5), (0, 0.5)]})
        for line in (self.k90_line, self.k99_line):
            line.hide()
            self.spectrum_plot.addItem(line, ignoreBounds=True)
        layout = self.graphics.ci.layout
        layout.setColumnStretchFactor(0, 5)
        layout.setColumnStretchFactor(2, 4)

        self.add_control(QLabel("Snapshot"))
        self.step_slider = self.add_control(QSlider(Qt.Orientation.Horizontal), 1)
        self.step_slider.setObjectName("spectrumStepSlider")
        self.step_slider.setAccessibleName("Spectra snapshot")
        self.step_slider.setPageStep(1)
        self.step_label = self.add_control(QLabel(""))
        self.step_label.setObjectName("spectrumStepLabel")
        self.step_label.setMinimumWidth(120)
        self.add_control(QLabel("Layer"))
        self.layer_combo = self.add_control(QComboBox(), 1)
        self.layer_combo.setObjectName("spectrumLayerCombo")
        self.layer_combo.setAccessibleName("Spectrum layer")
        self.layer_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)

        self.snapshots: list[SpectraSnapshot] = []
        self.snapshot_index = -1
        self.layers: list[str] = []
        self.matrix = np.empty((0, 0))          # layers × σ index, the shown snapshot's σ
        self.selected_layer: str | None = None
        self.step_slider.valueChanged.connect(self._on_step_slider_changed)
        self.layer_combo.currentIndexChanged.connect(self._on_layer_combo_changed)
        self.graphics.scene().sigMouseClicked.connect(self._on_scene_mouse_clicked)
        self.apply_palette()

    # ---- data in ---------------------------------------------------------------------------

    def set_snapshots(self, snapshots: list[SpectraSnapshot]) -> None:
        """Every spectra snapshot of the run, in order. Shows the latest unless an earlier one is
        being looked at."""
        following = self.snapshot_index < 0 or self.snapshot_index >= len(self.snapshots) - 1
        self.snapshots = list(snapshots)
        n = len(self.snapshots)
        self.step_slider.blockSignals(True)
        self.step_slider.setRange(0, max(n - 1, 0))
        self.step_slider.blockSignals(False)
        if n == 0:
            self.snapshot_index = -1
            self.layers, self.matrix = [], np.empty((0, 0))
            self.set_empty(True)
            return
        self.set_empty(False)
        self.show_snapshot(n - 1 if following else min(self.snapshot_index, n - 1))

    def show_snapshot(self, index: int) -> None:
        """Draw snapshot `index` (negative counts from the end)."""
        if not self.snapshots:
            return
        index = index % len(self.snapshots)
        self.snapshot_index = index
        if self.step_slider.value() != index:
            self.step_slider.blockSignals(True)
            self.step_slider.setValue(index)
            self.step_slider.blockSignals(False)
        snap = self.snapshots[index]
        label = snap.label() + (f" · {snap.postponed} postponed" if snap.postponed else "")
        self.step_label.setText(f"{label}  ({index + 1}/{len(self.snapshots)})")

        self.layers = list(snap.layers)
        self.matrix = snap.matrix()
        width, height = self.matrix.shape[1], len(self.layers)
        image = log10_sigma(self.matrix)
        finite = image[np.isfinite(image)]
        lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        self.heatmap_image.setImage(image.T if width else np.full((1, max(height, 1)), np.nan),
                                    autoLevels=False)
        self.colour_bar.setLevels((lo, hi))
        self.heatmap_image.setRect(QRectF(0.5, 0.0, max(width, 1), max(height, 1)))
        self.heatmap_plot.vb.setRange(xRange=(0.5, max(width, 1) + 0.5), yRange=(0, max(height, 1)), padding=0)
        self.layer_axis.set_labels([compact_name(n) for n in self.layers], layer_period(self.layers))
        self.set_title(self.heatmap_plot, f"log10 σ of {self._kind_text(snap.kind)} per layer · {snap.label()}")

        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems([short_name(n) for n in self.layers])
        self.layer_combo.blockSignals(False)
        keep = self.selected_layer if self.selected_layer in self.layers else (self.layers[0] if self.layers else None)
        self.select_layer(keep)

    def select_layer(self, layer: int | str | None) -> None:
        """Show one layer's spectrum: by row index or module name."""
        if layer is None or not self.layers:
            self.selected_layer = None
            self.spectrum_curve.setData([], [])
            return
        row = layer if isinstance(layer, int) else self.layers.index(layer)
        self.selected_layer = self.layers[row]
        if self.layer_combo.currentIndex() != row:
            self.layer_combo.blockSignals(True)
            self.layer_combo.setCurrentIndex(row)
            self.layer_combo.blockSignals(False)
        snap = self.snapshots[self.snapshot_index]
        sv = snap.sv[row]
        name = short_name(self.selected_layer)
        if sv is None:
            x, y, what = np.empty(0), np.empty(0), "diverged: no spectrum"
        elif len(sv) == 0:
            x, y, what = np.empty(0), np.empty(0), "no update (rank 0)"
        else:
            x = np.arange(1, len(sv) + 1, dtype=float)
            keep = np.isfinite(sv) & (sv > 0)      # a log axis cannot show σ = 0
            x, y = x[keep], np.asarray(sv, dtype=float)[keep]
            what = f"σ of {self._kind_text(snap.kinds[row])}"
            magnitude = snap.magnitude[row]
            if isinstance(magnitude, dict) and magnitude.get("mean") is not None:
                what += f" · magnitude mean {fmt(magnitude['mean'], 3)}"
        self.spectrum_curve.setData(x, y)
        self.spectrum_note.setVisible(not len(x))
        if not len(x):
            self.spectrum_note.setText(what)
            self.spectrum_plot.vb.setRange(xRange=(0.5, 1.5), yRange=(-1.0, 0.0), padding=0)
            self.spectrum_note.setPos(1.0, -0.5)
        # the short facts first: a title too long for the plot loses the end of its lines
        self.set_title(self.spectrum_plot, f"{name} · {snap.label()}<br>{what}")
        for line, value in ((self.k90_line, snap.k90[row]), (self.k99_line, snap.k99[row])):
            shown = bool(sv is not None and len(sv) > 0 and math.isfinite(value) and value > 0)
            line.setVisible(shown)
            if shown:
                line.setValue(float(value))
                # the label goes right of the line, or left of it in the right half of the plot
                side = 1.0 if value > (len(sv) + 1) / 2 else 0.0
                line.label.anchors = [(side, 0.5), (side, 0.5)]
                line.label.updatePosition()
        if len(x):
            self.spectrum_plot.vb.setRange(xRange=(0.5, len(sv) + 0.5), padding=0.02)
            self.spectrum_plot.enableAutoRange(axis="y")
        self._draw_selection_box(row)

    def clear(self) -> None:
        self.selected_layer = None
        self.set_snapshots([])

    # ---- reading back ------------------------------------------------------------------------

    @property
    def current_snapshot(self) -> SpectraSnapshot | None:
        return self.snapshots[self.snapshot_index] if self.snapshot_index >= 0 else None

    def layer_at(self, x: float, y: float) -> int:
        """Heatmap row under the data point (x, y), or -1."""
        if not self.layers or not math.isfinite(y) or not 0.5 <= x <= self.matrix.shape[1] + 0.5:
            return -1
        row = int(math.floor(y))
        return row if 0 <= row < len(self.layers) else -1

    def hover_text_at(self, x: float, y: float, plot: str | None = None) -> str:
        snap = self.current_snapshot
        if snap is None:
            return ""
        if plot == "spectrum":
            if self.selected_layer is None:
                return ""
            row = self.layers.index(self.selected_layer)
            return self._describe(snap, row, int(round(x)))
        row = self.layer_at(x, y)
        if row < 0:
            return ""
        return self._describe(snap, row, int(round(x)))

    def _describe(self, snap: SpectraSnapshot, row: int, k: int) -> str:
        head = f"{short_name(snap.layers[row])} · {snap.label()}"
        sv = snap.sv[row]
        if sv is None:
            return f"{head}\ndiverged: no spectrum"
        if not 1 <= k <= max(len(sv), 1):
            return head
        if k > len(sv):
            return f"{head}\nno update (rank 0)"
        value = sv[k - 1]
        log = f" (log10 {fmt(math.log10(value), 3)})" if value > 0 else ""
        return (f"{head}\nσ{k} = {fmt(value)}{log}\n"
                f"k90 = {fmt(snap.k90[row])}, k99 = {fmt(snap.k99[row])}")

    # ---- drawing -----------------------------------------------------------------------------

    @staticmethod
    def _kind_text(kind: str | None) -> str:
        if kind == "mixed":
            return "ΔW (some layers: DoRA's direction part)"
        return _KIND_TEXT.get(kind or "exact", f"ΔW ({kind})")

    def _draw_selection_box(self, row: int) -> None:
        width = max(self.matrix.shape[1], 1)
        self.selection_box.setData([0.5, width + 0.5, width + 0.5, 0.5, 0.5], [row, row, row + 1, row + 1, row])

    def palette_changed(self) -> None:
        self.spectrum_curve.setPen(pg.mkPen(SERIES_COLOURS[0], width=2))
        self.spectrum_curve.setSymbolBrush(pg.mkBrush(SERIES_COLOURS[0]))
        self.spectrum_curve.setSymbolPen(pg.mkPen(self._background()))
        self.selection_box.setPen(pg.mkPen(self._foreground(), width=2))
        self.spectrum_note.setColor(self._muted(160))
        fill = self._background()
        fill.setAlpha(200)
        for line, colour in ((self.k90_line, SERIES_COLOURS[1]), (self.k99_line, SERIES_COLOURS[2])):
            line.setPen(pg.mkPen(colour, width=1.5, style=Qt.PenStyle.DashLine))
            line.label.setColor(colour)
            line.label.fill = pg.mkBrush(fill)

    # ---- handlers ----------------------------------------------------------------------------

    def _on_step_slider_changed(self, value: int) -> None:
        self.show_snapshot(value)

    def _on_layer_combo_changed(self, index: int) -> None:
        if index >= 0:
            self.select_layer(index)

    def _on_scene_mouse_clicked(self, event) -> None:
        if self.is_empty or event.button() != Qt.MouseButton.LeftButton:
            return
        if self.heatmap_plot.vb.sceneBoundingRect().contains(event.scenePos()):
            point = self.heatmap_plot.vb.mapSceneToView(event.scenePos())
            row = self.layer_at(point.x(), point.y())
            if row >= 0:
                self.select_layer(row)
