"""What every chart shares: the ChartWidget base (a pyqtgraph GraphicsLayoutWidget, an empty-state
note, a row of controls, colours from the application palette, a hover label), an axis that
labels categories (layer names, steps) without overlapping, the colours and the EMA smoother.

Sizes: every plot keeps a data area of at least MIN_VIEW_HEIGHT px, and the chart's minimum height
is what its plots need, so a container too short for it scrolls instead of squashing the plots
flat. Titles never widen a plot: a title longer than its plot is elided (the full text is its
tooltip), so no plot is pushed out of the chart on the right.

A chart takes plain numpy data through one small `set_...()` method and exposes its plot items as
attributes, so a test checks `chart.some_curve.getData()` instead of a screenshot. Hover text
comes from `hover_text_at(x, y, plot)` in data coordinates; the mouse handler only maps the
mouse position and calls it, so tests call it directly.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPalette
from PySide6.QtWidgets import QHBoxLayout, QLabel, QStackedLayout, QVBoxLayout, QWidget

# Tableau-10: distinct hues that stay readable on light and dark backgrounds.
SERIES_COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                  "#9c755f", "#bab0ac"]

# Module types keep one colour across charts and runs; others take the remaining colours in order.
_TYPE_COLOURS = {
    "q_proj": "#4e79a7", "k_proj": "#76b7b2", "v_proj": "#59a14f", "o_proj": "#edc948",
    "gate_proj": "#f28e2b", "up_proj": "#e15759", "down_proj": "#b07aa1",
    "query": "#4e79a7", "key": "#76b7b2", "value": "#59a14f", "dense": "#edc948",
    "c_attn": "#4e79a7", "c_proj": "#edc948", "c_fc": "#f28e2b", "fc1": "#f28e2b", "fc2": "#b07aa1",
}
_EXTRA_COLOURS = ["#ff9da7", "#9c755f", "#17becf", "#bcbd22", "#8c564b", "#e377c2", "#7f7f7f"]

LEFT_AXIS_WIDTH = 64        # the step charts stacked in one tab share it, so their x axes line up

# The smallest data area (view box) of a plot: room for four y tick labels that do not overlap.
MIN_VIEW_HEIGHT = 90

# Long step curves: Qt rasterises a wide antialiased zig-zag (a peak-downsampled loss curve) about
# 50x slower than a 1-px one (20k steps: 800 ms against 15 ms a repaint), so past LONG_CURVE points
# curves are drawn 1 px wide.
LONG_CURVE = 1000
STEP_CURVE = {"antialias": True}

# Step curves are peak-downsampled (each bin keeps its min and max) to about this many bins of what
# is in view. The factor is ours, not pyqtgraph's auto mode: auto recomputes it from the view range
# while auto-range sets the view range from the downsampled data, a loop that at some lengths never
# settles (seen at 18,200 steps: the x range flipping between two values inside one paint, forever).
DOWNSAMPLE_BINS = 1500


def curve_width(n_points: int, width: float) -> float:
    """`width` for a short curve, 1 px for a long one (see LONG_CURVE)."""
    return width if n_points <= LONG_CURVE else 1.0


SHARED_COLOUR = "#9a9a9a"    # LoRA-drop's shared layers: grey, hatched


def type_colours(types: list[str]) -> dict[str, str]:
    """A colour per module type: the fixed one when known, else the next spare colour."""
    out, spare = {}, iter(_EXTRA_COLOURS * (1 + len(types) // len(_EXTRA_COLOURS)))
    for t in types:
        out[t] = _TYPE_COLOURS.get(t) or next(spare)
    return out


def colormap(name: str = "viridis") -> pg.ColorMap:
    return pg.colormap.get(name)


def ema(values: np.ndarray, weight: float, state: tuple | None = None) -> tuple[np.ndarray, tuple]:
    """TensorBoard's debiased exponential moving average; NaNs are skipped (they stay NaN).

    `state` continues a previous call on a prefix of `values`: (count done, last, n finite, check),
    so a live chart only smooths the new points. Returns (smoothed, state)."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    out = np.empty(n)
    done, last, count = 0, 0.0, 0
    if state is not None and state[0] <= n and state[3] == weight and (state[0] == 0 or
                                                                        _same(values[state[0] - 1], state[4])):
        done, last, count = state[0], state[1], state[2]
        out[:done] = state[5][:done]
    for i in range(done, n):            # sequential by nature; only new points on a live run
        v = values[i]
        if not math.isfinite(v):
            out[i] = math.nan
            continue
        last = last * weight + (1.0 - weight) * v
        count += 1
        out[i] = last / (1.0 - weight ** count) if weight > 0 else last
    return out, (n, last, count, weight, values[n - 1] if n else math.nan, out)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


class CategoryAxisItem(pg.AxisItem):
    """An axis whose ticks are categories (layer names, steps) at integer positions + `offset`.
    It labels every k-th one, k chosen from the axis length so the labels never overlap."""

    def __init__(self, orientation: str, offset: float = 0.0, **kwargs):
        super().__init__(orientation, **kwargs)
        self.enableAutoSIPrefix(False)          # positions are indices, not quantities
        self.labels: list[str] = []
        self.offset = offset
        self.period = 1

    def set_labels(self, labels: list[str], period: int = 1) -> None:
        """`period`: the labels repeat in blocks of this size (the module types of one transformer
        layer); when not every label fits, a stride that keeps step with the blocks is chosen."""
        self.labels = list(labels)
        self.period = max(1, int(period))
        self.picture = None
        self.update()

    def _stride(self, needed: int) -> int:
        p = self.period
        if needed <= 1 or p <= 1:
            return max(1, needed)
        if needed <= p:                          # the smallest divisor of the block size that fits
            return next(d for d in range(needed, p + 1) if p % d == 0)
        return math.ceil(needed / p) * p         # whole blocks

    def tickValues(self, minVal, maxVal, size):
        if not self.labels:
            return []
        lo = max(0, math.ceil(min(minVal, maxVal) - self.offset - 1e-9))
        hi = min(len(self.labels) - 1, math.floor(max(minVal, maxVal) - self.offset + 1e-9))
        if hi < lo:
            return []
        if self.orientation in ("left", "right"):
            per_label = 15.0                      # px of a line of tick text
        else:
            per_label = 7.0 * max(len(s) for s in self.labels[lo:hi + 1]) + 12.0
        stride = self._stride(math.ceil((hi - lo + 1) * per_label / max(size, 1.0)))
        first = (lo + stride - 1) // stride * stride
        return [(float(stride), [i + self.offset for i in range(first, hi + 1, stride)])]

    def tickStrings(self, values, scale, spacing):
        out = []
        for v in values:
            i = int(round(v - self.offset))
            out.append(self.labels[i] if 0 <= i < len(self.labels) else "")
        return out


class IntegerAxisItem(pg.AxisItem):
    """An axis of whole numbers (steps, singular-value indices): no ticks at 2.5."""

    def tickValues(self, minVal, maxVal, size):
        levels = [(spacing, [v for v in values if abs(v - round(v)) < 1e-9])
                  for spacing, values in super().tickValues(minVal, maxVal, size) if spacing >= 1]
        if levels:
            return levels
        lo, hi = math.ceil(min(minVal, maxVal)), math.floor(max(minVal, maxVal))
        return [(1.0, [float(v) for v in range(lo, hi + 1)])] if hi - lo < 1000 else []


class TitleLabel(pg.LabelItem):
    """A plot title that never widens its plot: each line (lines split at <br>) is elided to the
    width the layout gives it, the full text then being the tooltip. PlotItem's own title makes
    its text width the plot's minimum width, and a long title (a DoRA layer's spectrum) pushed the
    last plot of a row out of the chart."""

    def __init__(self, *args, **kwargs):
        self.full_text = ""
        self._fitting = False
        self._fitted_width = -1.0
        super().__init__(*args, **kwargs)

    def setText(self, text, **args):
        self.full_text = text
        self._fitted_width = -1.0
        self._set_fitted(**args)

    def _set_fitted(self, **args) -> None:
        self._fitting = True
        try:
            width = self.size().width()
            lines = self.full_text.split("<br>")
            fitted = [self._elide(line, width) for line in lines] if width > 0 else lines
            super().setText("<br>".join(fitted), **args)
            self.setToolTip("" if fitted == lines else "\n".join(lines))
            self._fitted_width = width
        finally:
            self._fitting = False

    def _elide(self, line: str, width: float) -> str:
        font = QFont(self.item.font())
        size = str(self.opts.get("size", ""))
        if size.endswith("pt"):
            font.setPointSizeF(float(size[:-2]))
        room = width - 2 * self.item.document().documentMargin() - 1.0
        return QFontMetricsF(font).elidedText(line, Qt.TextElideMode.ElideRight, max(room, 0.0))

    def updateMin(self):
        super().updateMin()
        height = self._sizeHint[Qt.SizeHint.MinimumSize][1]
        self.setMinimumWidth(0)
        self._sizeHint[Qt.SizeHint.MinimumSize] = (0, height)
        self._sizeHint[Qt.SizeHint.PreferredSize] = (0, height)

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        if not self._fitting and self.full_text and abs(self.size().width() - self._fitted_width) >= 1.0:
            self._set_fitted()


def use_title_label(plot: pg.PlotItem) -> TitleLabel:
    """Put a TitleLabel in `plot`'s title row instead of its own LabelItem."""
    old = plot.titleLabel
    plot.layout.removeItem(old)
    if old.scene() is not None:
        old.scene().removeItem(old)
    label = TitleLabel("", size="11pt", parent=plot)
    plot.layout.addItem(label, 0, 1)
    plot.titleLabel = label
    plot.setTitle(None)
    return label


class ChartGraphics(pg.GraphicsLayoutWidget):
    """The chart's graphics view, whose minimum height is what its plots need (pyqtgraph's view
    does not pass its items' minimum sizes on to the widget layouts around it)."""

    def __init__(self, *args, **kwargs):
        self._plots_height = 0
        super().__init__(*args, **kwargs)

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        return QSize(hint.width(), max(hint.height(), self._plots_height))

    def sync_minimum(self) -> None:
        """Take the plots' minimum height again (after plots, titles or axes changed) and tell the
        layouts around when it changed."""
        # the grid layout caches its items' size hints, and a plot's new minimum does not reach
        # that cache until the layout is invalidated
        self.ci.layout.invalidate()
        need = math.ceil(self.ci.effectiveSizeHint(Qt.SizeHint.MinimumSize).height())
        if need != self._plots_height:
            self._plots_height = need
            self.updateGeometry()


class ChartWidget(QWidget):
    """Base of every chart: graphics + empty-state note + controls, palette-aware, with hover."""

    empty_note = "No data yet"

    def __init__(self, object_name: str, accessible_name: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName(object_name)
        self.setAccessibleName(accessible_name)
        self.graphics = ChartGraphics()
        self.graphics.setObjectName(f"{object_name}Graphics")
        self.graphics.ci.setContentsMargins(4, 4, 8, 4)
        self.empty_label = QLabel(self.empty_note)
        self.empty_label.setObjectName(f"{object_name}EmptyNote")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.controls = QWidget()
        self.controls_layout = QHBoxLayout(self.controls)
        self.controls_layout.setContentsMargins(6, 2, 6, 0)
        self._stack = QStackedLayout()
        self._stack.addWidget(self.graphics)
        self._stack.addWidget(self.empty_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.controls)
        layout.addLayout(self._stack, 1)
        self._plots: dict[str, pg.PlotItem] = {}        # hoverable plots by key
        self._step_plots: dict[pg.PlotItem, int] = {}    # step plots -> their downsampling factor
        self._step_x = np.empty(0)
        self._titles: dict[pg.PlotItem, str] = {}
        self._legends: list[pg.LegendItem] = []
        self._colour_bars: list[pg.ColorBarItem] = []
        self._hover_labels: dict[str, pg.TextItem] = {}
        self.hover_text = ""                            # what the hover label says now ("" = hidden)
        self.graphics.scene().sigMouseMoved.connect(self._on_scene_mouse_moved)
        self.set_empty(True)

    # ---- building blocks for subclasses ------------------------------------------------------

    def add_plot(self, key: str, row: int, col: int, axis_items: dict | None = None, left_width: int = 0,
                 **kwargs) -> pg.PlotItem:
        """A plot with a hover label; `left_width` fixes the left axis width (stacked charts line up
        their x axes, and tick text is never clipped before the first relayout)."""
        plot = self.graphics.addPlot(row=row, col=col, axisItems=axis_items, **kwargs)
        use_title_label(plot)
        plot.vb.setMinimumHeight(MIN_VIEW_HEIGHT)
        if left_width:
            plot.getAxis("left").setWidth(left_width)
        plot.showGrid(x=True, y=True, alpha=0.15)
        for name in ("left", "bottom"):       # major and minor ticks: a third level doubles the grid's cost
            plot.getAxis(name).setStyle(maxTickLevel=1)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        label = pg.TextItem(anchor=(0, 1))
        label.setZValue(1000)
        label.hide()
        plot.addItem(label, ignoreBounds=True)
        self._plots[key] = plot
        self._hover_labels[key] = label
        return plot

    def make_step_plot(self, plot: pg.PlotItem) -> None:
        """A plot of curves against the step: peak-downsampled (see DOWNSAMPLE_BINS), clipped to the
        view; update_downsampling() after new data."""
        plot.setClipToView(True)
        plot.setDownsampling(ds=1, auto=False, mode="peak")
        plot.vb.sigRangeChangedManually.connect(self._on_step_view_changed_manually)
        self._step_plots[plot] = 1

    def update_downsampling(self, steps: np.ndarray) -> None:
        """Pick each step plot's downsampling factor from the number of steps in view."""
        self._step_x = steps
        for plot, current in self._step_plots.items():
            n = len(steps)
            if n and not plot.vb.autoRangeEnabled()[0]:       # zoomed in: what is in view
                x0, x1 = plot.vb.viewRange()[0]
                n = int(np.searchsorted(steps, x1, side="right") - np.searchsorted(steps, x0))
            ds = max(1, math.ceil(n / DOWNSAMPLE_BINS))
            if ds != current:
                self._step_plots[plot] = ds
                plot.setDownsampling(ds=ds, auto=False, mode="peak")

    def _on_step_view_changed_manually(self, *_) -> None:
        self.update_downsampling(self._step_x)

    def add_legend(self, plot: pg.PlotItem, **kwargs) -> pg.LegendItem:
        legend = plot.addLegend(offset=(-8, 8), **kwargs)
        self._legends.append(legend)
        return legend

    def add_colour_bar(self, bar: pg.ColorBarItem, titled: bool = True) -> pg.ColorBarItem:
        """Register a colour bar for palette changes; `titled`: the plot beside it has a title,
        so the bar gets a blank one of the same height and the two line up."""
        if titled:
            bar.setTitle(" ", size="9pt")
        self._colour_bars.append(bar)
        return bar

    def set_title(self, plot: pg.PlotItem, text: str) -> None:
        if self._titles.get(plot) == text:
            return      # the same title again (every repaint): setTitle lays the HTML out anew
        self._titles[plot] = text
        plot.setTitle(text, color=self._foreground().name(), size="9pt")
        self.graphics.sync_minimum()

    def add_control(self, widget: QWidget, stretch: int = 0) -> QWidget:
        self.controls_layout.addWidget(widget, stretch)
        return widget

    # ---- empty state -------------------------------------------------------------------------

    @property
    def is_empty(self) -> bool:
        return self._stack.currentWidget() is self.empty_label

    def set_empty(self, empty: bool, note: str | None = None) -> None:
        """Show the grey note instead of an empty frame (and hide the controls with it)."""
        if note is not None:
            self.empty_label.setText(note)
        elif empty:
            self.empty_label.setText(self.empty_note)
        self._stack.setCurrentWidget(self.empty_label if empty else self.graphics)
        self.controls.setVisible(not empty and self.controls_layout.count() > 0)
        self.graphics.sync_minimum()
        if empty:
            self._hide_hover()

    # ---- palette -----------------------------------------------------------------------------

    def _background(self) -> QColor:
        return self.palette().color(QPalette.ColorRole.Window)

    def _foreground(self) -> QColor:
        return self.palette().color(QPalette.ColorRole.WindowText)

    def _muted(self, alpha: int = 110) -> QColor:
        colour = QColor(self._foreground())
        colour.setAlpha(alpha)
        return colour

    def apply_palette(self) -> None:
        """Colours from the application palette: background = window, text/axes = window text."""
        bg, fg = self._background(), self._foreground()
        self.graphics.setBackground(bg)
        for plot in self._plots.values():
            for name in ("left", "bottom", "right", "top"):
                axis = plot.getAxis(name)
                axis.setPen(self._muted(160))
                axis.setTextPen(fg)
        for plot, text in self._titles.items():
            plot.setTitle(text, color=fg.name(), size="9pt")
        for legend in self._legends:
            legend.setLabelTextColor(fg)
            for _, label in legend.items:       # setLabelTextColor does not re-render existing labels
                label.setText(label.text)
            fill = QColor(bg)
            fill.setAlpha(210)
            legend.setBrush(fill)
            legend.setPen(self._muted(60))
        for bar in self._colour_bars:
            for name in ("left", "bottom", "right", "top"):   # the frame, the value axis, the label
                bar.getAxis(name).setPen(self._muted(160))
                bar.getAxis(name).setTextPen(fg)
        fill = QColor(bg)
        fill.setAlpha(225)
        for label in self._hover_labels.values():
            label.setColor(fg)
            label.fill = pg.mkBrush(fill)
            label.border = pg.mkPen(self._muted(90))
            label.update()
        grey = self.palette().color(QPalette.ColorRole.PlaceholderText)
        self.empty_label.setStyleSheet(f"color: {grey.name()}; font-size: 11pt; padding: 24px;")
        self.palette_changed()
        self.graphics.sync_minimum()          # each subclass ends its __init__ here, its plots built

    def palette_changed(self) -> None:
        """Subclasses recolour items that depend on the palette (faint curves, markers)."""

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self.apply_palette()
        super().changeEvent(event)

    # ---- hover -------------------------------------------------------------------------------

    def hover_text_at(self, x: float, y: float, plot: str | None = None) -> str:
        """The text for the data point (x, y) of plot `plot` (a key of self._plots); "" = nothing."""
        return ""

    def show_hover_at(self, x: float, y: float, plot: str | None = None) -> str:
        """Show the hover label for the data point (x, y); what the mouse handler does."""
        key = plot or next(iter(self._plots), None)
        text = self.hover_text_at(x, y, key) if key is not None else ""
        self._hide_hover()
        if text and key in self._hover_labels:
            label = self._hover_labels[key]
            label.setText(text)
            # keep the label inside the view: left of the point on the right half, below it on
            # the upper half (on screen: an inverted y axis flips which half is up)
            (x0, x1), (y0, y1) = self._plots[key].vb.viewRange()
            right = x > (x0 + x1) / 2
            upper = (y > (y0 + y1) / 2) != self._plots[key].vb.yInverted()
            label.setAnchor((1.0 if right else 0.0, 0.0 if upper else 1.0))
            label.setPos(QPointF(x, y))
            label.show()
        self.hover_text = text
        return text

    def _hide_hover(self) -> None:
        for label in self._hover_labels.values():
            label.hide()
        self.hover_text = ""

    def _on_scene_mouse_moved(self, scene_pos) -> None:
        if self.is_empty:
            return
        for key, plot in self._plots.items():
            if plot.isVisible() and plot.vb.sceneBoundingRect().contains(scene_pos):
                point = plot.vb.mapSceneToView(scene_pos)
                self.show_hover_at(point.x(), point.y(), key)
                return
        self._hide_hover()

    def leaveEvent(self, event) -> None:
        self._hide_hover()
        super().leaveEvent(event)


def nearest_index(sorted_x: np.ndarray, x: float) -> int:
    """Index of the value of ascending `sorted_x` nearest to x (-1 when empty)."""
    n = len(sorted_x)
    if n == 0 or not math.isfinite(x):
        return -1
    i = int(np.searchsorted(sorted_x, x))
    if i <= 0:
        return 0
    if i >= n:
        return n - 1
    return i if abs(sorted_x[i] - x) < abs(x - sorted_x[i - 1]) else i - 1


def fmt(value: float, digits: int = 4) -> str:
    """A number for a hover label: 4 significant digits, NaN as "—"."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}"
