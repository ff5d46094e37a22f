"""Issue 20, chart sizes and legends (usability test at 1280×800 and 1348×711), offscreen:

* the learning-rate and gradient-norm plots were squashed to a flat line; every plot of the
  Training tab now keeps a readable data area and the tab scrolls instead, while the panel's own
  minimum height stays small enough for a 1280×800 screen;
* the eval-loss legend entry was a black square before any eval;
* the loss legend covered the newest points;
* a DoRA layer's long spectrum title pushed the spectrum plot out of the chart on the right.
"""

from __future__ import annotations

import math

import pytest
from PySide6.QtCore import QPointF, QRectF
from PySide6.QtGui import QImage, QPainter

from studio.ui.charts import LossChart, OptimizerChart, RankChart, SpectrumChart, ThroughputChart
from studio.ui.charts.common import MIN_VIEW_HEIGHT
from studio.ui.charts.loss import EVAL_COLOUR
from studio.ui.charts_panel import ChartsPanel
from studio.ui.history import RunHistory
from test_charts import LAYERS, _ev, dora_like_events, lora_drop_events

READABLE_VIEW = 90          # px of data area: four y tick labels without overlap
READABLE_PLOT = 120         # px of a plot with its title and step axis


def step_history(n: int = 200, eval_every: int = 50) -> RunHistory:
    """A run of n steps: falling loss, warm-up learning rate, wavy gradient norm, evals."""
    h = RunHistory(name="sizes")
    h.add(_ev("run_started", 0, config={"variant": {"name": "lora"}}, adapted_layers=LAYERS))
    for s in range(1, n + 1):
        h.add(_ev("step", s, loss=3.0 * math.exp(-s / 50) + 0.5 + 0.05 * math.sin(s),
                  lr=2e-4 * min(1.0, s / 20), grad_norm=1.0 + 0.3 * math.cos(s / 7),
                  tokens_per_s=1500.0 + 20.0 * math.sin(s)))
        if eval_every and s % eval_every == 0:
            h.add(_ev("eval", s, eval_loss=3.0 * math.exp(-s / 50) + 0.6))
    return h


def _show(qtbot, widget, width: int, height: int):
    qtbot.addWidget(widget)
    widget.resize(width, height)
    widget.show()
    qtbot.waitExposed(widget)
    qtbot.wait(20)                      # the graphics layouts settle on posted events
    return widget


def _tick_texts(axis) -> list[tuple[QRectF, str]]:
    image = QImage(10, 10, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [] if specs is None else [(rect, text) for rect, _, text in specs[2]]


def _training_plots(panel: ChartsPanel):
    return {"loss": panel.loss_chart.plot, "lr": panel.optimizer_chart.lr_plot,
            "grad norm": panel.optimizer_chart.grad_plot, "throughput": panel.throughput_chart.plot}


# ---- 1. the Training tab ------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(880, 420), (880, 250)])
def test_training_plots_keep_a_readable_height_and_the_tab_scrolls(qtbot, size):
    """(880, 420): about the charts area of a 1280×800 window with a run open; (880, 250): far
    shorter."""
    assert MIN_VIEW_HEIGHT >= READABLE_VIEW
    panel = ChartsPanel()
    panel.show_history(step_history())
    assert panel.minimumSizeHint().height() < 300          # the panel never makes the window taller
    _show(qtbot, panel, *size)
    assert panel.height() == size[1]

    for name, plot in _training_plots(panel).items():
        assert plot.vb.height() >= READABLE_VIEW, name
        assert plot.height() >= READABLE_PLOT, name
        # all of it on the chart's canvas, none cut off below
        view = plot.getViewWidget()
        assert plot.sceneBoundingRect().bottom() <= view.viewport().height() + 0.5, name
        left = _tick_texts(plot.getAxis("left"))
        assert len(left) >= 2, name                        # a scale to read
        rects = sorted((rect for rect, _ in left), key=lambda r: r.top())
        assert all(a.bottom() <= b.top() + 0.5 for a, b in zip(rects, rects[1:])), (name, left)

    scroll = panel.tab_scrolls["Training"]
    splitter = panel.training_splitter
    assert splitter.height() >= splitter.minimumSizeHint().height()     # nothing squashed
    needed = splitter.minimumSizeHint().height() > scroll.viewport().height()
    assert needed                                          # both sizes are shorter than the charts
    assert scroll.verticalScrollBar().isVisible() and scroll.verticalScrollBar().maximum() > 0
    assert not scroll.horizontalScrollBar().isVisible()


def test_a_tall_training_tab_fills_without_scrolling(qtbot):
    panel = ChartsPanel()
    panel.show_history(step_history())
    _show(qtbot, panel, 880, 1000)
    scroll = panel.tab_scrolls["Training"]
    assert not scroll.verticalScrollBar().isVisible()
    assert panel.training_splitter.height() == scroll.viewport().height()
    loss, lr = panel.loss_chart.plot, panel.optimizer_chart.lr_plot
    assert loss.vb.height() > 1.5 * READABLE_VIEW and lr.vb.height() > READABLE_VIEW


@pytest.mark.parametrize("cls", [OptimizerChart, LossChart, ThroughputChart])
def test_a_chart_at_its_minimum_height_keeps_its_plots_readable(qtbot, cls):
    """The chart's minimum height is what its plots need (the optimizer chart: two plots)."""
    chart = cls()
    h = step_history(40, eval_every=10)
    if cls is OptimizerChart:
        chart.set_series(h.steps, h.lr, h.grad_norm)
    elif cls is LossChart:
        chart.set_series(h.steps, h.loss, h.eval_steps, h.eval_loss)
    else:
        chart.set_series(h.steps, h.tokens_per_s)
    _show(qtbot, chart, 700, 60)
    chart.resize(700, 60)                  # again, now that the legend has found its place
    qtbot.wait(20)
    assert chart.height() == chart.minimumSizeHint().height()    # a top-level widget: held at it
    for plot in chart._plots.values():
        assert plot.vb.height() >= READABLE_VIEW
        assert plot.sceneBoundingRect().bottom() <= chart.graphics.viewport().height() + 0.5


# ---- 2. and 3. the loss legend ----------------------------------------------------------------

def _legend(chart: LossChart) -> list[tuple[object, str]]:
    return [(sample.item, label.text) for sample, label in chart.legend.items]


def test_eval_loss_enters_the_legend_with_the_first_eval_point(qtbot):
    chart = LossChart()
    _show(qtbot, chart, 880, 300)
    chart.set_series([1, 2, 3], [3.0, 2.5, 2.2])
    assert [name for _, name in _legend(chart)] == ["train loss", "train loss (smoothed)"]
    # pyqtgraph draws a hidden curve's entry as an icon that showed as a black square
    assert all(item.isVisible() for item, _ in _legend(chart))

    chart.set_series([1, 2, 3, 4], [3.0, 2.5, 2.2, 2.0], [4], [2.4])
    assert _legend(chart)[2] == (chart.eval_curve, "eval loss")
    assert chart.eval_curve.isVisible() and chart.eval_curve.opts["symbol"] == "o"
    assert chart.eval_curve.opts["symbolBrush"].color().name() == EVAL_COLOUR

    chart.set_overlays([("run-b", [1, 2, 3], [4.0, 3.0, 2.5])])
    assert [name for _, name in _legend(chart)] == ["train loss", "train loss (smoothed)", "eval loss", "run-b"]
    chart.clear()                                           # a new run: no eval yet
    assert "eval loss" not in [name for _, name in _legend(chart)]
    assert all(item.isVisible() for item, _ in _legend(chart))


@pytest.mark.parametrize("width, overlays", [(880, 0), (880, 2), (520, 0), (420, 3)])
def test_loss_legend_stays_off_the_data(qtbot, width, overlays):
    """The legend sits in the title row, in as many rows as it needs, beside the title."""
    h = step_history()
    chart = LossChart()
    chart.set_series(h.steps, h.loss, h.eval_steps, h.eval_loss)
    others = [(f"20250101-run-{i}", h.steps, h.loss * (1.1 + 0.1 * i)) for i in range(overlays)]
    chart.set_overlays(others)
    _show(qtbot, chart, width, 320)

    legend = chart.legend.sceneBoundingRect()
    view = chart.plot.vb.sceneBoundingRect()
    assert legend.width() > 100 and len(chart.legend.items) == 3 + overlays
    assert not legend.intersects(view), (legend, view)
    canvas = chart.graphics.viewport().rect()
    assert 0 <= legend.left() and legend.right() <= canvas.width() and legend.bottom() <= canvas.height()
    assert not legend.intersects(chart.plot.titleLabel.item.sceneBoundingRect())
    # and so none of the points: the newest (right) nor the first (top left)
    x, y = chart.smooth_curve.getData()
    for i in (0, len(x) // 2, len(x) - 1):
        assert not legend.contains(chart.plot.vb.mapViewToScene(QPointF(x[i], y[i])))
    # every entry is inside the legend's box
    for sample, label in chart.legend.items:
        for item in (sample, label):
            box = item.sceneBoundingRect()
            assert legend.adjusted(-1, -1, 1, 1).contains(box), (item, box, legend)


# ---- 4. DoRA's spectrum panel -----------------------------------------------------------------

@pytest.mark.parametrize("width", [880, 700, 560])
def test_dora_spectrum_plots_fit_the_chart_width(qtbot, width):
    h = RunHistory()
    h.extend(dora_like_events())
    chart = SpectrumChart()
    chart.set_snapshots(h.spectra)
    chart.select_layer(LAYERS[1])                          # a DoRA layer: "... · magnitude mean 1.01"
    _show(qtbot, chart, width, 420)
    canvas = chart.graphics.viewport().width()
    assert canvas == width
    for item in (chart.heatmap_plot, chart.colour_bar, chart.spectrum_plot):
        box = item.sceneBoundingRect()
        assert 0 <= box.left() and box.right() <= canvas + 0.5, (item, box, canvas)
        if item is not chart.colour_bar:
            assert item.vb.width() > 100
    # a title longer than its plot is elided, the full text kept in the tooltip and _titles
    title = chart.spectrum_plot.titleLabel
    assert title.sceneBoundingRect().right() <= canvas + 0.5
    assert title.item.sceneBoundingRect().width() <= title.size().width() + 0.5
    full = chart._titles[chart.spectrum_plot]
    assert "magnitude mean 1.01" in full and "step 2" in full
    if "…" in title.text:
        assert title.toolTip() == full.replace("<br>", "\n")
    if width == 560:
        assert "…" in title.text                           # too narrow for the whole title


def test_a_title_that_fits_is_shown_whole(qtbot):
    chart = SpectrumChart()
    h = RunHistory()
    h.extend(dora_like_events())
    chart.set_snapshots(h.spectra)
    _show(qtbot, chart, 1600, 420)
    title = chart.spectrum_plot.titleLabel
    assert title.text == chart._titles[chart.spectrum_plot] and title.toolTip() == ""


def test_the_rank_chart_minimum_follows_its_budget_plot(qtbot):
    """The rank chart hides its budget plot for a run without a budget (LoRA-drop): its minimum
    height is then one plot's, not two, so a short Ranks tab does not scroll for nothing."""
    def minimum(events) -> int:
        h = RunHistory()
        h.extend(events)
        chart = RankChart()
        qtbot.addWidget(chart)
        chart.set_ranks(h.rank_steps, h.rank_layers, h.rank_matrix, h.budget, h.target_budget, h.kept, h.shared)
        return chart.minimumSizeHint().height()

    layers = {n: 4 for n in LAYERS}
    budget = [_ev("ranks", s, layers=layers, budget=24 - s, target_budget=12) for s in (2, 4)]
    with_budget, without = minimum(budget), minimum(lora_drop_events())
    assert with_budget >= 2 * READABLE_VIEW
    assert without < READABLE_VIEW + READABLE_PLOT <= with_budget


def test_a_constant_learning_rate_is_drawn_on_an_axis_from_zero(qtbot):
    """A constant rate (AdaLoRA's tour) was auto-ranged to value ± 0.5: a flat line at "0"."""
    from studio.ui.charts import OptimizerChart

    chart = OptimizerChart()
    qtbot.addWidget(chart)
    chart.set_series([1, 2, 3], [2e-4, 2e-4, 2e-4], [0.1, 0.2, 0.1])
    low, high = chart.lr_plot.vb.viewRange()[1]
    assert low == 0.0 and 2e-4 < high < 3e-4
