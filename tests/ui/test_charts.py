"""The charts and the ChartsPanel, offscreen: each chart holds exactly the data of the events
(read back through its plot items' getData() / image arrays), hover text names the right layer
and step, the controls (smoothing, log scale, sorting, method, snapshot, colouring) do what they
say, charts without data show their note, colours follow the palette, and the panel draws only
the tab on screen. One real tiny AdaLoRA run (ranks, budget, two importance methods, rank-0
layers) feeds the panel; synthetic events cover DoRA's direction spectra, diverged layers and
LoRA-drop's kept/shared layers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QPalette

from background_run import finish_run, start_run, stop_run
from studio.ui.charts import (DecompositionChart, ImportanceChart, LossChart, OptimizerChart, RankChart,
                              SpectrumChart, ThroughputChart)
from studio.ui.charts.common import DOWNSAMPLE_BINS, CategoryAxisItem, ema
from studio.ui.charts.spectrum import log10_sigma
from studio.ui.charts_panel import TABS, ChartsPanel
from studio.ui.history import RunHistory
from studio.ui.layernames import short_name


LAYERS = [f"model.layers.{i}.{part}" for i in range(2)
          for part in ("self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj")]


def _ev(type_: str, step: int, **payload) -> dict:
    return {"type": type_, "step": step, "time": 1000.0 + step, **payload}


# ---- fixtures ------------------------------------------------------------------------------------

VARIANT = {"name": "adalora", "init_r": 6, "target_r": 2, "tinit": 2, "tfinal": 2}


@pytest.fixture(scope="module", autouse=True)
def _real_run(tmp_path_factory, studio_home):
    """Start the tiny AdaLoRA run (8 steps, telemetry every 2) when the module starts."""
    folder = tmp_path_factory.mktemp("adalora-run")
    proc = start_run(folder, VARIANT)
    yield folder, proc
    stop_run(proc)


@pytest.fixture(scope="module")
def adalora_run(_real_run):
    """(run folder, the events its sink received live)."""
    return finish_run(*_real_run)


@pytest.fixture
def history(adalora_run) -> RunHistory:
    return RunHistory.from_run_folder(adalora_run[0])


def of(events, kind):
    return [e for e in events if e["type"] == kind]


def dora_like_events() -> list[dict]:
    """Spectra of DoRA's direction part, one diverged layer, spectra of different lengths."""
    layers = {}
    for i, name in enumerate(LAYERS):
        n = 2 + i % 3
        layers[name] = {"sv": [2.0 ** -k * (i + 1) for k in range(n)], "k90": 1 + i % 2, "k99": n,
                        "kind": "direction", "magnitude": {"mean": 1.01, "min": 0.9, "max": 1.1}}
    layers[LAYERS[2]] = None
    return [_ev("run_started", 0, config={"variant": {"name": "dora"}}, adapted_layers=LAYERS),
            _ev("spectra", 2, layers=layers, final=False)]


def lora_drop_events() -> list[dict]:
    kept = [LAYERS[0], LAYERS[4], LAYERS[5]]
    shared = {"v_proj": [LAYERS[1]], "q_proj": [LAYERS[3]], "up_proj": [LAYERS[2]]}
    values = {n: 0.1 * (i + 1) for i, n in enumerate(LAYERS)}
    return [_ev("ranks", 0, layers={n: (4 if n in kept else 0) for n in LAYERS}, kept=kept, shared=shared),
            _ev("importance", 0, method="lora-drop ‖BAx‖²", layers=values, kept=kept, threshold=0.5,
                sample_rows=8),
            _ev("run_started", 0, config={"variant": {"name": "lora-drop"}}, adapted_layers=LAYERS)]


def _chart(qtbot, cls):
    chart = cls()
    qtbot.addWidget(chart)
    chart.resize(900, 600)
    return chart


def _nan_equal(a, b) -> bool:
    return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float), equal_nan=True)


def _count(curve) -> int:
    x = curve.getData()[0]
    return 0 if x is None else len(x)


def _ema_reference(values, weight):
    out, last, count = [], 0.0, 0
    for v in values:
        last = last * weight + (1 - weight) * v
        count += 1
        out.append(last / (1 - weight ** count))
    return np.array(out)


# ---- synthetic events (these run while the real run trains) ------------------------------------

def test_loss_smoothing_control_and_incremental_ema(qtbot):
    chart = _chart(qtbot, LossChart)
    loss = np.linspace(3.0, 1.0, 50) + np.sin(np.arange(50))
    steps = np.arange(1, 51, dtype=float)
    for n in (10, 11, 30, 50):                        # a live run: the EMA continues, equal to a full pass
        chart.set_series(steps[:n], loss[:n])
    np.testing.assert_allclose(chart.smooth_curve.getData()[1], _ema_reference(loss, 0.6))
    chart.smoothing_spin.setValue(0.0)
    np.testing.assert_allclose(chart.smooth_curve.getData()[1], loss)
    chart.set_smoothing(0.9)
    np.testing.assert_allclose(chart.smooth_curve.getData()[1], _ema_reference(loss, 0.9))
    assert chart.smoothing_spin.maximum() == pytest.approx(0.99)
    smoothed, _ = ema(np.array([1.0, np.nan, 3.0]), 0.5)        # a NaN loss stays a gap
    assert math.isnan(smoothed[1]) and smoothed[0] == 1.0


def test_long_runs_are_peak_downsampled_with_a_fixed_factor(qtbot):
    """pyqtgraph's auto factor and auto-range feed each other and can loop forever inside a paint
    (seen at 18,200 steps); the chart picks the factor from the steps in view instead."""
    chart = _chart(qtbot, OptimizerChart)
    chart.show()
    qtbot.waitExposed(chart)
    n = 18_200
    steps = np.arange(1, n + 1, dtype=float)
    grad = np.ones(n)
    grad[12_345] = 50.0                                               # a spike must survive
    chart.set_series(steps, np.full(n, 1e-4), grad)
    chart.grab()                                                      # paints (and settles) once
    ds = math.ceil(n / DOWNSAMPLE_BINS)
    assert set(chart._step_plots.values()) == {ds}
    x, y = chart.grad_norm_curve.getData()
    assert len(x) <= 2 * DOWNSAMPLE_BINS + 2 and y.max() == 50.0     # peak mode keeps the spike
    assert chart.lr_curve.getOriginalDataset()[0].size == n
    chart.lr_plot.vb.setXRange(1000, 2000, padding=0)                 # zoomed in: finer
    chart.lr_plot.vb.sigRangeChangedManually.emit([True, True])
    assert chart._step_plots[chart.lr_plot] == 1


def test_layer_labels_keep_step_with_transformer_layers():
    axis = CategoryAxisItem("left", offset=0.5)
    labels = [f"L{i} {t}" for i in range(32) for t in ("q", "k", "v", "o", "gate", "up", "down")]
    axis.set_labels(labels, period=7)
    (stride, values), = axis.tickValues(0, len(labels), 600)          # 224 rows in 600 px
    assert stride == 7 and [axis.labels[int(v)] for v in values[:2]] == ["L0 q", "L1 q"]
    (stride, values), = axis.tickValues(0, 14, 600)                   # two layers: every row
    assert stride == 1 and len(values) == 14
    axis.set_labels(labels, period=1)
    assert axis.tickValues(0, len(labels), 600)[0][0] == 6


def test_spectrum_direction_kind_diverged_layers_and_padding(qtbot):
    h = RunHistory()
    h.extend(dora_like_events())
    chart = _chart(qtbot, SpectrumChart)
    chart.set_snapshots(h.spectra)
    assert "direction" in chart._titles[chart.heatmap_plot]
    image = chart.heatmap_image.image                                # (σ index, layer)
    assert image.shape == (4, len(LAYERS))
    assert np.isnan(image[:, 2]).all()                               # the diverged layer: an empty row
    assert np.isnan(image[2:, 0]).all() and np.isfinite(image[:2, 0]).all()   # padded
    chart.select_layer(2)
    assert _count(chart.spectrum_curve) == 0
    assert "diverged" in chart._titles[chart.spectrum_plot] and chart.spectrum_note.isVisible()
    assert not chart.k90_line.isVisible()
    assert "diverged" in chart.hover_text_at(1, 2.5, "heatmap")
    chart.select_layer(LAYERS[1])
    title = chart._titles[chart.spectrum_plot]
    assert "direction" in title and "magnitude mean 1.01" in title


def test_importance_lora_drop_kept_and_shared(qtbot):
    h = RunHistory()
    h.extend(lora_drop_events())
    chart = _chart(qtbot, ImportanceChart)
    chart.set_importance(h.importance, kept=h.kept)
    assert chart.method == "lora-drop ‖BAx‖²" and not chart.method_combo.isEnabled()
    assert chart.shared_layers == {LAYERS[1], LAYERS[2], LAYERS[3]}
    widths, positions = chart.shared_bar_item.getData()
    assert [chart.layers[int(p)] for p in positions] == [LAYERS[1], LAYERS[2], LAYERS[3]]
    np.testing.assert_allclose(widths, [0.2, 0.3, 0.4])
    assert chart.shared_bar_item.opts["brush"].style() == Qt.BrushStyle.BDiagPattern       # hatched
    kept_positions = np.concatenate([item.getData()[1] for item in chart.bar_items.values()])
    assert sorted(chart.layers[int(p)] for p in kept_positions) == sorted(h.kept)
    title = chart._titles[chart.plot]
    assert "3 kept, 3 shared" in title and "T = 0.5" in title
    assert "shared" in chart.hover_text_at(0, 1) and "kept" in chart.hover_text_at(0, 0)


def test_rank_chart_lora_drop_column(qtbot):
    h = RunHistory()
    h.extend(lora_drop_events())
    chart = _chart(qtbot, RankChart)
    chart.set_ranks(h.rank_steps, h.rank_layers, h.rank_matrix, h.budget, h.target_budget, h.kept, h.shared)
    assert chart.rank_image.image.shape == (1, len(LAYERS))
    assert chart.rank_image.image[0].tolist() == [4, 0, 0, 0, 4, 4]
    assert not chart.budget_plot.isVisible()
    assert "3 layers keep their own pair" in chart._titles[chart.rank_plot]
    assert chart.hover_text_at(0, 1.5, "ranks").endswith("rank 0 (shared: group v_proj)")
    assert chart.hover_text_at(0, 0.5, "ranks").endswith("rank 4 (kept: own pair)")


@pytest.mark.parametrize("cls", [LossChart, OptimizerChart, ThroughputChart, SpectrumChart, ImportanceChart,
                                 RankChart, DecompositionChart])
def test_a_chart_without_data_shows_its_note(qtbot, cls):
    chart = _chart(qtbot, cls)
    chart.show()
    qtbot.waitExposed(chart)
    assert chart.is_empty and chart.empty_label.isVisible() and not chart.graphics.isVisible()
    assert chart.empty_label.text() == cls.empty_note and len(cls.empty_note) < 120
    assert not chart.controls.isVisible()
    grey = chart.palette().color(QPalette.ColorRole.PlaceholderText).name()
    assert grey in chart.empty_label.styleSheet()
    assert chart.hover_text_at(1, 1, None) == ""
    chart.clear()
    assert chart.is_empty
    if cls is SpectrumChart:
        assert "telemetry.every" in chart.empty_label.text()


def test_colours_follow_the_palette(qtbot):
    chart = _chart(qtbot, LossChart)
    chart.set_series([1, 2, 3], [3.0, 2.0, 1.5])
    dark = QPalette()
    dark.setColor(QPalette.ColorRole.Window, QColor("#202124"))
    dark.setColor(QPalette.ColorRole.WindowText, QColor("#e8eaed"))
    chart.setPalette(dark)                                           # sends a PaletteChange event
    assert chart.graphics.backgroundBrush().color().name() == "#202124"
    axis = chart.plot.getAxis("left")
    assert axis.textPen().color().name() == "#e8eaed"
    assert all("#e8eaed" in label.item.toHtml() for _, label in chart.legend.items)
    assert chart._hover_labels["loss"].color.name() == "#e8eaed"
    light = QPalette()
    light.setColor(QPalette.ColorRole.Window, QColor("#ffffff"))
    light.setColor(QPalette.ColorRole.WindowText, QColor("#000000"))
    chart.setPalette(light)
    assert chart.graphics.backgroundBrush().color().name() == "#ffffff"
    assert axis.textPen().color().name() == "#000000"


def test_panel_for_a_run_without_ranks_leaves_the_rank_tab_with_its_note(qtbot):
    h = RunHistory()
    h.extend(dora_like_events())
    panel = ChartsPanel()
    qtbot.addWidget(panel)
    panel.show_history(h)
    for title in TABS:
        panel.show_tab(title)
    assert panel.rank_chart.is_empty and "AdaLoRA" in panel.rank_chart.empty_label.text()
    assert panel.loss_chart.is_empty and not panel.spectrum_chart.is_empty


# ---- the real run -------------------------------------------------------------------------------

def test_loss_chart_holds_the_steps_and_evals(qtbot, adalora_run, history):
    _, events = adalora_run
    chart = _chart(qtbot, LossChart)
    assert chart.objectName() == "lossChart" and chart.accessibleName()
    chart.set_series(history.steps, history.loss, history.eval_steps, history.eval_loss)
    steps, evals = of(events, "step"), of(events, "eval")
    x, y = chart.raw_curve.getData()
    assert x.tolist() == [e["step"] for e in steps] and y.tolist() == [e["loss"] for e in steps]
    x, y = chart.eval_curve.getData()
    assert x.tolist() == [e["step"] for e in evals] and y.tolist() == [e["eval_loss"] for e in evals]
    x, y = chart.smooth_curve.getData()
    np.testing.assert_allclose(y, _ema_reference([e["loss"] for e in steps], chart.smoothing))
    assert not chart.is_empty


def test_loss_log_scale_toggle(qtbot, history):
    chart = _chart(qtbot, LossChart)
    chart.set_series(history.steps, history.loss)
    assert not chart.plot.getAxis("left").logMode
    chart.log_scale_check.click()
    assert chart.log_scale and chart.plot.getAxis("left").logMode
    np.testing.assert_allclose(chart.raw_curve.getData()[1], np.log10(history.loss))   # what is drawn
    np.testing.assert_array_equal(chart.raw_curve.getOriginalDataset()[1], history.loss)
    chart.set_log_scale(False)
    assert not chart.plot.getAxis("left").logMode
    np.testing.assert_array_equal(chart.raw_curve.getData()[1], history.loss)


def test_loss_overlays_of_other_runs_with_a_legend(qtbot, history):
    chart = _chart(qtbot, LossChart)
    chart.set_series(history.steps, history.loss)
    other = (np.arange(1, 21, dtype=float), np.linspace(4, 2, 20))
    chart.set_overlays([("run-b", *other), ("run-c", other[0][:5], other[1][:5])])
    assert len(chart.overlay_curves) == 2
    x, y = chart.overlay_curves[0].getData()
    np.testing.assert_array_equal(x, other[0])
    np.testing.assert_allclose(y, _ema_reference(other[1], chart.smoothing))
    names = [label.text for _, label in chart.legend.items]
    assert "run-b" in names and "run-c" in names and "train loss (smoothed)" in names
    assert "run-b" in chart.hover_text_at(3, 0)
    chart.set_overlays([])
    assert chart.overlay_curves == [] and "run-b" not in [label.text for _, label in chart.legend.items]
    # overlays alone are something to show
    empty = _chart(qtbot, LossChart)
    empty.set_overlays([("run-b", *other)])
    assert not empty.is_empty


def test_optimizer_and_throughput_charts_hold_the_steps(qtbot, adalora_run, history):
    _, events = adalora_run
    steps = of(events, "step")
    optimizer = _chart(qtbot, OptimizerChart)
    optimizer.set_series(history.steps, history.lr, history.grad_norm)
    assert optimizer.objectName() == "optimizerChart"
    assert optimizer.lr_curve.getData()[1].tolist() == [e["lr"] for e in steps]
    assert optimizer.grad_norm_curve.getData()[1].tolist() == [e["grad_norm"] for e in steps]
    assert optimizer.hover_text_at(3.2, 0) == (f"step 3: lr {steps[2]['lr']:.3g}, "
                                                 f"grad norm {steps[2]['grad_norm']:.4g}")
    throughput = _chart(qtbot, ThroughputChart)
    throughput.set_series(history.steps, history.tokens_per_s)
    assert throughput.objectName() == "throughputChart"
    x, y = throughput.curve.getData()
    assert x.tolist() == [e["step"] for e in steps] and y.tolist() == [e["tokens_per_s"] for e in steps]
    assert throughput.median_line.value() == pytest.approx(np.median(y))
    assert throughput.hover_text_at(8, 0).startswith("step 8: ")


def test_loss_hover_names_step_and_values(qtbot, history):
    chart = _chart(qtbot, LossChart)
    chart.set_series(history.steps, history.loss, history.eval_steps, history.eval_loss)
    text = chart.hover_text_at(3.7, 0.0)
    assert text.startswith(f"step 4: loss {history.loss[3]:.4g}")
    assert f"eval loss {history.eval_loss[0]:.4g}" in text          # eval at step 4
    assert "eval" not in chart.hover_text_at(3.0, 0.0)


def test_hover_through_the_mouse_handler(qtbot, history):
    """The mouse handler maps the scene position to data and shows hover_text_at's text."""
    chart = _chart(qtbot, LossChart)
    chart.set_series(history.steps, history.loss)
    chart.show()
    qtbot.waitExposed(chart)
    chart.plot.vb.setRange(xRange=(0, 9), yRange=(history.loss.min(), history.loss.max()), padding=0)
    scene_pos = chart.plot.vb.mapViewToScene(QPointF(5.1, float(history.loss[4])))
    chart._on_scene_mouse_moved(scene_pos)
    assert chart.hover_text.startswith("step 5: ")
    label = chart._hover_labels["loss"]
    assert label.isVisible() and label.toPlainText() == chart.hover_text
    chart._on_scene_mouse_moved(QPointF(-100, -100))                 # outside the plot
    assert chart.hover_text == "" and not label.isVisible()


def test_spectrum_chart_shows_the_latest_snapshot(qtbot, adalora_run, history):
    _, events = adalora_run
    chart = _chart(qtbot, SpectrumChart)
    assert chart.objectName() == "spectrumChart"
    chart.set_snapshots(history.spectra)
    last = of(events, "spectra")[-1]
    assert chart.snapshot_index == len(of(events, "spectra")) - 1
    assert chart.step_slider.value() == chart.step_slider.maximum() == chart.snapshot_index
    assert chart.layers == list(last["layers"])
    width = max(len(v["sv"]) for v in last["layers"].values())
    expected = np.full((len(chart.layers), width), np.nan)
    for row, name in enumerate(chart.layers):
        sv = last["layers"][name]["sv"]
        expected[row, :len(sv)] = sv
    assert _nan_equal(chart.heatmap_image.image, log10_sigma(expected).T)   # (σ index, layer)
    levels = chart.colour_bar.levels()
    assert levels[0] == pytest.approx(np.nanmin(log10_sigma(expected)))

    # the selected layer's spectrum, with k90 / k99
    row = next(i for i, n in enumerate(chart.layers) if len(last["layers"][n]["sv"]) >= 2)
    chart.layer_combo.setCurrentIndex(row)
    name = chart.layers[row]
    assert chart.selected_layer == name
    x, y = chart.spectrum_curve.getOriginalDataset()
    entry = last["layers"][name]
    assert y.tolist() == [v for v in entry["sv"] if v > 0] and x.tolist() == list(range(1, len(y) + 1))
    assert chart.k90_line.value() == entry["k90"] and chart.k99_line.value() == entry["k99"]
    assert chart.k90_line.isVisible() and "k90 = " in chart.k90_line.label.toPlainText()


def test_spectrum_step_selector_goes_back_and_stays(qtbot, adalora_run, history):
    _, events = adalora_run
    chart = _chart(qtbot, SpectrumChart)
    chart.set_snapshots(history.spectra[:2])
    assert chart.snapshot_index == 1                                 # latest by default
    chart.set_snapshots(history.spectra[:3])
    assert chart.snapshot_index == 2                                 # ... and it follows new ones
    chart.step_slider.setValue(0)
    first = of(events, "spectra")[0]
    assert chart.current_snapshot.step == first["step"]
    assert "step 2" in chart.step_label.text()
    row = chart.layers.index(chart.selected_layer)
    np.testing.assert_array_equal(chart.matrix[row, :len(first["layers"][chart.selected_layer]["sv"])],
                                  first["layers"][chart.selected_layer]["sv"])
    chart.set_snapshots(history.spectra)                             # more arrive: the past one stays
    assert chart.snapshot_index == 0 and chart.current_snapshot.step == first["step"]
    chart.show_snapshot(-1)
    assert chart.current_snapshot is history.spectra[-1]


def test_spectrum_hover_and_click_name_the_layer(qtbot, history):
    chart = _chart(qtbot, SpectrumChart)
    chart.set_snapshots(history.spectra)
    snap = history.spectra[-1]
    row = next(i for i, s in enumerate(snap.sv) if s is not None and len(s) >= 2)
    text = chart.hover_text_at(2.1, row + 0.4, "heatmap")
    assert text.startswith(f"{short_name(snap.layers[row])} · step {snap.step}")
    assert f"σ2 = {snap.sv[row][1]:.4g}" in text
    assert chart.hover_text_at(2, -3, "heatmap") == ""
    # a click on a heatmap row selects that layer
    chart.show()
    qtbot.waitExposed(chart)
    view_point = QPointF(1.0, row + 0.5)
    pixel = chart.graphics.mapFromScene(chart.heatmap_plot.vb.mapViewToScene(view_point))
    qtbot.mouseClick(chart.graphics.viewport(), Qt.MouseButton.LeftButton, pos=pixel)
    assert chart.selected_layer == snap.layers[row] and chart.layer_combo.currentIndex() == row
    assert chart.hover_text_at(1, 0, "spectrum").startswith(short_name(snap.layers[row]))


def test_importance_chart_bars_sorting_and_methods(qtbot, adalora_run, history):
    _, events = adalora_run
    chart = _chart(qtbot, ImportanceChart)
    assert chart.objectName() == "importanceChart"
    chart.set_importance(history.importance, kept=history.kept)
    methods = list(dict.fromkeys(e["method"] for e in of(events, "importance")))
    assert [chart.method_combo.itemText(i) for i in range(chart.method_combo.count())] == methods
    assert chart.method.startswith("adalora") and chart.method_combo.isEnabled()
    last = [e for e in of(events, "importance") if e["method"] == chart.method][-1]

    layers, values = chart.bar_data()
    assert layers == list(last["layers"]) and values.tolist() == list(last["layers"].values())
    # one bar item per module type, holding that type's values at the layers' positions
    for module_type, item in chart.bar_items.items():
        widths, positions = item.getData()
        assert [layers[int(p)] for p in positions] == [n for n in layers if n.endswith(module_type)]
        assert widths.tolist() == [last["layers"][layers[int(p)]] for p in positions]
    assert [label.text for _, label in chart.legend.items] == list(chart.bar_items)

    chart.set_sort("value")
    layers, values = chart.bar_data()
    assert values.tolist() == sorted(last["layers"].values(), reverse=True)
    assert [last["layers"][n] for n in layers] == values.tolist()
    assert chart.hover_text_at(0, 0).startswith(short_name(layers[0]))
    assert f"at step {last['step']}" in chart.hover_text_at(0, 0.2)
    chart.set_sort("type")                                           # q_proj of every layer, then k_proj...
    layers, values = chart.bar_data()
    types = list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in last["layers"]))
    assert layers == sorted(last["layers"], key=lambda n: types.index(n.rsplit(".", 1)[-1]))
    assert values.tolist() == [last["layers"][n] for n in layers]
    chart.sort_combo.setCurrentIndex(0)
    assert chart.bar_data()[0] == list(last["layers"])

    chart.set_method(methods[0])
    relative = [e for e in of(events, "importance") if e["method"] == methods[0]][-1]
    assert chart.bar_data()[1].tolist() == list(relative["layers"].values())
    assert methods[0] in chart.describe(0)


def test_rank_chart_heatmap_and_budget(qtbot, adalora_run, history):
    _, events = adalora_run
    chart = _chart(qtbot, RankChart)
    assert chart.objectName() == "rankChart"
    chart.set_ranks(history.rank_steps, history.rank_layers, history.rank_matrix, history.budget,
                    history.target_budget, history.kept, history.shared)
    ranks = of(events, "ranks")
    expected = np.array([[e["layers"][n] for e in ranks] for n in history.rank_layers], dtype=float)
    assert _nan_equal(chart.rank_image.image, expected.T)                  # (time, layer)
    x, y = chart.budget_curve.getData()
    assert x.tolist() == list(range(len(ranks))) and y.tolist() == [e["budget"] for e in ranks]
    assert chart.target_line.value() == ranks[-1]["target_budget"] and chart.budget_plot.isVisible()
    assert chart.step_axis.labels == [str(e["step"]) for e in ranks]
    row, col = 1, len(ranks) - 1
    text = chart.hover_text_at(col, row + 0.5, "ranks")
    assert text == (f"{short_name(history.rank_layers[row])}\nstep {ranks[col]['step']}: "
                    f"rank {ranks[col]['layers'][history.rank_layers[row]]}")
    assert chart.hover_text_at(0, 0, "budget") == (f"step {ranks[0]['step']}: budget {ranks[0]['budget']} "
                                                   f"(target {ranks[0]['target_budget']})")


def test_decomposition_chart_points_colours_and_hover(qtbot, adalora_run, history):
    _, events = adalora_run
    chart = _chart(qtbot, DecompositionChart)
    assert chart.objectName() == "decompositionChart"
    chart.set_points(history.decomposition_layer, history.decomposition_step, history.decomposition_dm,
                     history.decomposition_dd, history.layers)
    decomposition = of(events, "decomposition")
    expected = [(e["layers"][n]["dD"], e["layers"][n]["dM"]) for e in decomposition for n in e["layers"]]
    x, y = chart.scatter.getData()
    assert sorted(zip(x.tolist(), y.tolist())) == sorted(expected)
    trail_x, _ = chart.trail_curve.getData()
    assert len(trail_x) == len(expected)

    by_layer = [b.color().name() for b in chart.scatter.data["brush"]]
    assert len(set(by_layer)) == len(history.layers)               # one colour per layer
    chart.set_colour_mode("step")
    by_step = [b.color().name() for b in chart.scatter.data["brush"]]
    assert len(set(by_step)) == len(decomposition)                 # one colour per step
    assert chart.colour_bar.levels() == (min(history.decomposition_step), max(history.decomposition_step))

    chart.paths_check.setChecked(False)
    assert not chart.trail_curve.isVisible()
    # a point no other shares (layers AdaLoRA pruned to rank 0 all sit at ΔD 0, ΔM 0)
    i = max(range(len(x)), key=lambda j: (x[j], y[j]))
    chart.plot.vb.setRange(xRange=(x.min(), x.max()), yRange=(y.min(), y.max()))
    text = chart.hover_text_at(x[i], y[i])
    layer = history.layers[int(history.decomposition_layer[i])]
    assert text == (f"{short_name(layer)}\nstep {int(history.decomposition_step[i])}: "
                    f"ΔD {x[i]:.4g}, ΔM {y[i]:.4g}")
    assert chart.hover_text_at(x.max() * 10, y.max() * 10) == ""


def test_panel_draws_the_visible_tab_and_marks_the_others_dirty(qtbot, history):
    panel = ChartsPanel()
    qtbot.addWidget(panel)
    assert panel.objectName() == "chartsPanel"
    assert [panel.tabs.tabText(i) for i in range(panel.tabs.count())] == list(TABS)
    panel.show_history(history)
    assert panel.tabs.currentIndex() == 0
    assert panel.loss_chart.raw_curve.getData()[1].tolist() == history.loss.tolist()
    assert panel.optimizer_chart.lr_curve.getData()[1].tolist() == history.lr.tolist()
    assert panel.dirty == {"spectrum", "importance", "rank", "decomposition"}
    assert panel.spectrum_chart.is_empty                             # not drawn yet
    assert "adalora" in panel.status_label.text() and "completed" in panel.status_label.text()

    panel.show_tab("Spectra")
    assert "spectrum" not in panel.dirty and not panel.spectrum_chart.is_empty
    assert panel.spectrum_chart.current_snapshot is history.spectra[-1]
    # a change in a hidden group only marks it dirty; the visible one redraws at once
    panel.show_history(history, {"loss", "ranks", "spectra"})
    assert {"loss", "rank"} <= panel.dirty and "spectrum" not in panel.dirty
    panel.show_tab("Training")
    assert "loss" not in panel.dirty

    panel.set_overlays([history])
    assert len(panel.loss_chart.overlay_curves) == 1
    panel.clear()
    assert panel.history is None and _count(panel.loss_chart.raw_curve) == 0
    assert panel.spectrum_chart.is_empty and panel.status_label.text() == ""
    assert len(panel.loss_chart.overlay_curves) == 1                 # overlays outlive the run shown


def test_panel_fed_live_matches_the_run_folder(qtbot, adalora_run):
    run_dir, events = adalora_run
    live_panel, folder_panel = ChartsPanel(), ChartsPanel()
    qtbot.addWidget(live_panel)
    qtbot.addWidget(folder_panel)
    live = RunHistory(name=run_dir.name)
    for event in events:                                             # one repaint per event: the worst case
        live_panel.show_history(live, live.add(event))
    folder_panel.show_history(RunHistory.from_run_folder(run_dir))
    for title in TABS:
        live_panel.show_tab(title)
        folder_panel.show_tab(title)
    assert not live_panel.dirty and not folder_panel.dirty
    pairs = [(p.loss_chart.raw_curve, p.loss_chart.smooth_curve, p.loss_chart.eval_curve, p.optimizer_chart.lr_curve,
              p.optimizer_chart.grad_norm_curve, p.throughput_chart.curve, p.spectrum_chart.spectrum_curve,
              p.rank_chart.budget_curve, p.decomposition_chart.scatter) for p in (live_panel, folder_panel)]
    for a, b in zip(*pairs):
        for u, v in zip(a.getData(), b.getData()):
            assert _nan_equal(u, v)
    for attr in ("heatmap_image",):
        assert _nan_equal(getattr(live_panel.spectrum_chart, attr).image,
                          getattr(folder_panel.spectrum_chart, attr).image)
    assert _nan_equal(live_panel.rank_chart.rank_image.image, folder_panel.rank_chart.rank_image.image)
    assert live_panel.importance_chart.bar_data()[0] == folder_panel.importance_chart.bar_data()[0]
    assert live_panel.status_label.text() == folder_panel.status_label.text()


def test_decomposition_hint_counts_in_words(qtbot):
    """Issue 20 (polish): one measured step read "1 steps (6–6)"."""
    chart = _chart(qtbot, DecompositionChart)
    chart.set_points([0, 1], [6, 6], [0.1, 0.2], [0.01, 0.02], ["q", "k"])
    assert chart.hint_label.text() == "2 layers · step 6"
    chart.set_points([0, 0], [4, 6], [0.1, 0.2], [0.01, 0.02], ["q"])
    assert chart.hint_label.text() == "1 layer · 2 steps (4–6)"
