"""The studio window, driven the way a person drives it: through its stable names (objectName),
offscreen, with real runs of a tiny random model on the worker thread.

Every test waits on signals (never sleeps), and the conftest fails any test that leaves a QThread
running, so a run that does not stop cleanly cannot pass.
"""

from __future__ import annotations

import json
from html import escape
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QComboBox, QLabel, QLineEdit, QPushButton, QSpinBox

from studio.core.config import RunConfig
from studio.core.telemetry import read_events
from studio.core.variants import REGISTRY

from gallery_fixtures import plant_engine  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[2]   # (tests/ui/conftest.py shadows tests/conftest.py's names)
DATASETS = ROOT / "resources" / "datasets"
RUN_TIMEOUT = 180_000
STABLE_NAMES = ("trainButton", "stopButton", "variantCombo", "lossChart", "spectrumChart", "importanceChart",
                "rankChart", "decompositionChart")


def tiny_config(tiny_llama, out: Path, variant: dict | None = None, **train) -> RunConfig:
    raw = {
        "model": {"source": tiny_llama},
        "data": {"path": str(DATASETS / "chat_sample.jsonl"), "eval_fraction": 0.1, "max_seq_len": 64},
        "variant": variant or {"name": "lora", "r": 4},
        "train": {"output_dir": str(out), "max_steps": 8, "batch_size": 4, "learning_rate": 5e-3,
                  "save_every": 4, "eval_every": 4, "device": "cpu", "precision": "fp32", **train},
        "telemetry": {"every": 2, "budget": 0.0},
    }
    return RunConfig.from_dict(raw, "test")


def write_config(path: Path, config: RunConfig) -> Path:
    path.write_text(config.to_toml(), encoding="utf-8")
    return path


@pytest.fixture
def settings(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def make_window(qtbot, settings):
    from studio.ui.app import open_window

    windows = []

    def make(path=None):
        window = open_window(path, settings=settings)
        windows.append(window)   # closed below, after its run: not qtbot.addWidget, whose close
        return window            # comes first and deletes the controller a failed test's run reports to

    yield make
    for w in windows:   # never leave a run behind: stop, wait for the thread, then close
        if w.controller.is_running:
            if w.controller.state == "paused":
                w.controller.resume()
            w.controller.stop()
            qtbot.waitUntil(lambda w=w: not w.controller.is_running, timeout=RUN_TIMEOUT)
        w.model_panel.shutdown()
        w.data_panel.shutdown()
        w.close()
        w.deleteLater()


def ready(qtbot, window):
    """Wait until the model was described and the run config checked: Train is enabled."""
    button = window.findChild(QPushButton, "trainButton")
    qtbot.waitUntil(button.isEnabled, timeout=60_000)
    return button


def run_to_end(qtbot, window, button_name="trainButton") -> dict:
    button = ready(qtbot, window) if button_name == "trainButton" else window.findChild(QPushButton, button_name)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT) as blocker:
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    return blocker.args[0]


# -- the window itself -----------------------------------------------------------------------------

def test_stable_names_and_default_run_loaded(make_window):
    window = make_window()
    for name in STABLE_NAMES:
        widget = window.findChild(object, name)
        assert widget is not None, name
        assert widget.accessibleName(), f"{name} has no accessible name"
    combo = window.findChild(QComboBox, "variantCombo")
    assert [combo.itemText(i) for i in range(combo.count())] == list(REGISTRY)
    assert window.raw_config()["model"]["source"] == "bundled:smollm2-135m-instruct"
    assert window.raw_config()["data"]["path"].endswith("chat_sample.jsonl")
    menus = [a.text().replace("&", "") for a in window.menuBar().actions()]
    assert menus == ["File", "Run", "Gallery", "View", "Help"]


def test_variant_form_is_built_from_the_dataclass_fields(make_window):
    import dataclasses

    window = make_window()
    combo = window.findChild(QComboBox, "variantCombo")
    for name, variant in REGISTRY.items():
        combo.setCurrentText(name)
        form = window.variant_panel.form
        assert list(form.editors) == [f.name for f in dataclasses.fields(variant.options_cls)]
        assert form.values() == dataclasses.asdict(variant.options_cls())
        assert escape(variant.description) in window.findChild(QLabel, "variantDescription").text()


def test_variant_switch_keeps_changed_common_options(make_window):
    window = make_window()
    window.findChild(QLineEdit, "variant_alpha").setText("8")
    window.findChild(QComboBox, "variantCombo").setCurrentText("dora")
    assert window.variant_panel.values()["alpha"] == 8.0
    window.findChild(QComboBox, "variantCombo").setCurrentText("vera")
    assert window.variant_panel.values()["r"] == REGISTRY["vera"].options_cls().r


def test_fractions_of_the_run_are_shown_in_steps(make_window, qtbot, tiny_llama, tmp_path):
    """AdaLoRA's schedule is given as fractions of the run; the form says what they come to in
    steps once the dataset has been read, and follows the training options."""
    from studio.core.training import planned_steps

    config = tiny_config(tiny_llama, tmp_path / "runs", {"name": "adalora", "tinit": 0.25, "tfinal": 3},
                         max_steps=0, epochs=2.0)
    window = make_window(write_config(tmp_path / "run.toml", config))
    ready(qtbot, window)
    qtbot.waitUntil(lambda: window.data_panel.preview is not None, timeout=60_000)
    total = planned_steps(window.data_panel.preview["train_examples"], 4, 1, 2.0, 0)
    tinit = window.findChild(QLabel, "variant_tinit_steps")
    tfinal = window.findChild(QLabel, "variant_tfinal_steps")
    qtbot.waitUntil(lambda: f"of this run's {total} steps" in tinit.text())
    assert tinit.text() == f"= {int(0.25 * total)} of this run's {total} steps"
    assert tfinal.text() == f"= 3 of this run's {total} steps"
    window.findChild(object, "train_max_steps").setValue(40)
    qtbot.waitUntil(lambda: tinit.text() == "= 10 of this run's 40 steps")
    window.findChild(QLineEdit, "variant_tinit").setText("0.5")
    assert tinit.text() == "= 20 of this run's 40 steps"
    # another variant has no such field; coming back shows the steps at once
    window.findChild(QComboBox, "variantCombo").setCurrentText("lora")
    assert not window.variant_panel.form.step_labels
    window.findChild(QComboBox, "variantCombo").setCurrentText("adalora")
    assert window.variant_panel.form.step_labels["tinit"].text().endswith("of this run's 40 steps")


def test_invalid_values_are_marked_and_train_stays_disabled(make_window, qtbot, tiny_llama, tmp_path):
    window = make_window(write_config(tmp_path / "run.toml", tiny_config(tiny_llama, tmp_path / "runs")))
    train = ready(qtbot, window)
    lr = window.findChild(QLineEdit, "train_learning_rate")
    lr.setText("fast")
    qtbot.waitUntil(lambda: not train.isEnabled())
    error = window.findChild(QLabel, "train_learning_rate_error")
    assert error.isVisible() and "expected a number" in error.text() and "'fast'" in error.text()
    lr.setText("-1")
    qtbot.waitUntil(lambda: "-1" in error.text())
    lr.setText("1e-3")
    qtbot.waitUntil(train.isEnabled)
    assert not error.isVisible()
    # a data file that does not exist: the reason next to the path, Train disabled
    window.findChild(QLineEdit, "dataPath").setText(str(tmp_path / "missing.jsonl"))
    qtbot.waitUntil(lambda: not train.isEnabled())
    # the data panel's own check runs in the background and may report after Train is disabled
    qtbot.waitUntil(lambda: "no such file" in window.findChild(QLabel, "dataError").text())
    # a cross-field rule (epochs 0 with max_steps 0) lands next to its field
    window.findChild(QLineEdit, "dataPath").setText(str(DATASETS / "chat_sample.jsonl"))
    window.findChild(object, "train_max_steps").setValue(0)
    window.findChild(QLineEdit, "train_epochs").setText("0")
    qtbot.waitUntil(lambda: "epochs" in window.findChild(QLabel, "validationLabel").text())
    assert not train.isEnabled()


def test_model_panel_describes_the_model_and_rejects_a_bad_path(make_window, qtbot, tiny_llama, tmp_path):
    window = make_window(write_config(tmp_path / "run.toml", tiny_config(tiny_llama, tmp_path / "runs")))
    info = window.findChild(QLabel, "modelInfo")
    qtbot.waitUntil(lambda: "Llama" in info.text(), timeout=30_000)
    window.model_panel.source_combo.setEditText(str(tmp_path / "nowhere"))
    error = window.findChild(QLabel, "modelError")
    qtbot.waitUntil(error.isVisible, timeout=30_000)
    assert "nowhere" in error.text()
    qtbot.waitUntil(lambda: not window.findChild(QPushButton, "trainButton").isEnabled())


# -- runs --------------------------------------------------------------------------------------

def test_train_to_completion_fills_every_chart_from_the_events(make_window, qtbot, tiny_llama, tmp_path):
    window = make_window(write_config(tmp_path / "run.toml",
                                      tiny_config(tiny_llama, tmp_path / "runs", {"name": "adalora", "r": 4,
                                                                                 "target_r": 2})))
    result = run_to_end(qtbot, window)
    assert result["status"] == "completed", result
    run_dir = Path(result["run_dir"])
    events = list(read_events(run_dir / "events.jsonl"))
    check_charts_match_events(window, events)
    assert window.findChild(QLabel, "stepStatus").text() == "step 8/8"
    assert not window.banner.isVisible()
    assert window.findChild(QPushButton, "trainButton").isEnabled()


def check_charts_match_events(window, events: list[dict]) -> None:
    """Every chart holds the data of the events: read back through the plot items."""
    from studio.ui.charts.spectrum import log10_sigma
    from studio.ui.history import RunHistory

    charts = window.charts
    for tab in range(charts.tabs.count()):        # hidden tabs repaint when they are shown
        charts.tabs.setCurrentIndex(tab)
    steps = [e for e in events if e["type"] == "step"]
    x, y = charts.loss_chart.raw_curve.getData()
    np.testing.assert_array_equal(x, [e["step"] for e in steps])
    np.testing.assert_allclose(y, [e["loss"] for e in steps])
    x, y = charts.optimizer_chart.lr_curve.getData()
    np.testing.assert_allclose(y, [e["lr"] for e in steps])
    evals = [e for e in events if e["type"] == "eval"]
    if evals:
        ex, ey = charts.loss_chart.eval_curve.getData()
        np.testing.assert_array_equal(ex, [e["step"] for e in evals])
        np.testing.assert_allclose(ey, [e["eval_loss"] for e in evals])
    spectra = [e for e in events if e["type"] == "spectra"]
    assert spectra
    last = spectra[-1]["layers"]
    chart = charts.spectrum_chart
    assert chart.layers == list(last)
    for row, name in enumerate(chart.layers):
        sv = last[name]["sv"] if last[name] else []
        np.testing.assert_allclose(chart.matrix[row, :len(sv)], sv)
        assert np.isnan(chart.matrix[row, len(sv):]).all()
    np.testing.assert_allclose(chart.heatmap_image.image, log10_sigma(chart.matrix).T, equal_nan=True)
    expected = RunHistory()
    expected.extend(events)
    ranks = [e for e in events if e["type"] == "ranks"]
    if ranks:
        np.testing.assert_array_equal(charts.rank_chart.rank_image.image, expected.rank_matrix.T)
        assert charts.rank_chart.rank_image.image.shape == (len(ranks), len(expected.rank_layers))
    decomposition = [e for e in events if e["type"] == "decomposition"]
    assert decomposition
    dd, dm = charts.decomposition_chart.scatter.getData()
    latest = {(e["step"], name): (v["dD"], v["dM"]) for e in decomposition for name, v in e["layers"].items()}
    want = sorted(latest.values())      # a final measurement at the last step replaces that step's
    np.testing.assert_allclose(sorted(zip(dd, dm)), want)
    importance = [e for e in events if e["type"] == "importance"]
    assert importance
    layers, values = charts.importance_chart.bar_data()
    latest = [e for e in importance if e["method"] == charts.importance_chart.method][-1]
    assert dict(zip(layers, values)) == pytest.approx(latest["layers"])


def test_stop_mid_run_keeps_the_adapter_and_the_window(make_window, qtbot, tiny_llama, tmp_path):
    window = make_window(write_config(tmp_path / "run.toml",
                                      tiny_config(tiny_llama, tmp_path / "runs", max_steps=2000, save_every=0,
                                                  eval_every=0)))
    ready(qtbot, window).click()
    qtbot.waitUntil(lambda: len(window.history.steps) >= 3, timeout=RUN_TIMEOUT)
    stop = window.findChild(QPushButton, "stopButton")
    assert stop.isEnabled()
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT) as blocker:
        qtbot.mouseClick(stop, Qt.MouseButton.LeftButton)
    result = blocker.args[0]
    assert result["status"] == "stopped"
    assert (Path(result["adapter_path"]) / "adapter_model.safetensors").is_file()
    assert len(window.history.steps) < 2000
    assert window.findChild(QPushButton, "trainButton").isEnabled()
    assert window.resume_run_action.isEnabled()      # stopped with a checkpoint: resumable


def test_pause_and_resume_between_steps(make_window, qtbot, tiny_llama, tmp_path):
    window = make_window(write_config(tmp_path / "run.toml",
                                      tiny_config(tiny_llama, tmp_path / "runs", max_steps=12, save_every=0,
                                                  eval_every=0)))
    ready(qtbot, window).click()
    qtbot.waitUntil(lambda: len(window.history.steps) >= 2, timeout=RUN_TIMEOUT)
    pause = window.findChild(QPushButton, "pauseButton")
    pause.click()
    qtbot.waitUntil(lambda: window.history.status.get("state") == "paused", timeout=RUN_TIMEOUT)
    held = len(window.history.steps)
    qtbot.wait(300)     # paused: no step may arrive (a bounded wait on purpose, not a sync)
    assert len(window.history.steps) == held
    assert pause.text() == "Resume"
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT) as blocker:
        pause.click()
    assert blocker.args[0]["status"] == "completed"
    assert len(window.history.steps) == 12


def test_a_run_that_raises_fails_readably_and_the_window_stays(make_window, qtbot, tiny_llama, tmp_path,
                                                                monkeypatch, plant_engine):
    # the run trains in a child process: the fault is planted there, at its start, in a fresh
    # child (no spare made before the plant)
    plant_engine("from studio.core.variants import lora\n"
                 "def explode(self, model, opts, ctx):\n"
                 "    raise RuntimeError('adapter construction exploded\\nsecond line of detail')\n"
                 "lora.Lora.build = explode\n")
    window = make_window(write_config(tmp_path / "run.toml", tiny_config(tiny_llama, tmp_path / "runs")))
    result = run_to_end(qtbot, window)
    assert result["status"] == "failed"
    banner = window.findChild(QLabel, "errorBanner")
    assert banner.isVisible()
    assert "RuntimeError: adapter construction exploded" in banner.text()
    assert "Traceback" not in banner.text() and "second line" not in banner.text()
    assert window.history.status["state"] == "failed"
    monkeypatch.undo()
    # the window is still usable: the next run trains
    result = run_to_end(qtbot, window)
    assert result["status"] == "completed"
    assert not banner.isVisible()


def test_bad_dataset_fails_with_the_file_and_line(make_window, qtbot, tiny_llama, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{not json\n', encoding="utf-8")
    config = tiny_config(tiny_llama, tmp_path / "runs")
    config.data.path = str(bad)
    window = make_window(write_config(tmp_path / "run.toml", config))
    error = window.findChild(QLabel, "dataError")
    qtbot.waitUntil(error.isVisible, timeout=60_000)
    assert "bad.jsonl" in error.text() and "line 2" in error.text()
    qtbot.waitUntil(lambda: not window.findChild(QPushButton, "trainButton").isEnabled())


def test_reopening_the_run_folder_gives_the_same_chart_data(make_window, qtbot, tiny_llama, tmp_path):
    window = make_window(write_config(tmp_path / "run.toml",
                                      tiny_config(tiny_llama, tmp_path / "runs", {"name": "dora", "r": 4})))
    result = run_to_end(qtbot, window)
    assert result["status"] == "completed"
    live = chart_data(window)
    reopened = make_window(result["run_dir"])
    again = chart_data(reopened)
    assert live.keys() == again.keys()
    for key in live:
        np.testing.assert_array_equal(live[key], again[key], err_msg=key)
    assert reopened.raw_config()["variant"]["name"] == "dora"
    check_charts_match_events(reopened, list(read_events(Path(result["run_dir"]) / "events.jsonl")))


def chart_data(window) -> dict:
    c = window.charts
    for tab in range(c.tabs.count()):        # hidden tabs repaint when shown
        c.tabs.setCurrentIndex(tab)
    out = {}
    out["loss_x"], out["loss_y"] = c.loss_chart.raw_curve.getData()
    out["smoothed"] = c.loss_chart.smooth_curve.getData()[1]
    out["grad_norm"] = c.optimizer_chart.grad_norm_curve.getData()[1]
    out["spectra"] = c.spectrum_chart.heatmap_image.image
    out["spectrum"] = c.spectrum_chart.spectrum_curve.getData()[1]
    out["dD"], out["dM"] = c.decomposition_chart.scatter.getData()
    out["importance"] = c.importance_chart.bar_data()[1]
    return out


def test_overlay_compares_runs_and_resume_continues(make_window, qtbot, tiny_llama, tmp_path):
    runs = tmp_path / "runs"
    window = make_window(write_config(tmp_path / "run.toml",
                                      tiny_config(tiny_llama, runs, max_steps=2000, save_every=2, eval_every=0)))
    ready(qtbot, window).click()
    qtbot.waitUntil(lambda: len(window.history.steps) >= 4, timeout=RUN_TIMEOUT)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT):
        window.findChild(QPushButton, "stopButton").click()
    stopped_dir = window.run_dir
    stopped_at = int(window.history.steps[-1])
    # a second, short run with another variant
    window.findChild(QComboBox, "variantCombo").setCurrentText("lora-fa")
    window.findChild(object, "train_max_steps").setValue(4)
    result = run_to_end(qtbot, window)
    assert result["status"] == "completed"
    view = window.runs_view
    window.refresh_runs()
    assert view.count() == 2
    for i in range(view.count()):
        view.item(i).setCheckState(Qt.CheckState.Checked)
    overlays = window.charts.loss_chart.overlay_curves
    assert len(overlays) == 2
    for curve in overlays:
        assert len(curve.getData()[0]) > 0
    # resume the stopped run from its last checkpoint: the same folder, its loss curve continued
    assert window.open_run_folder(stopped_dir)
    assert window.resume_run_action.isEnabled()
    window.findChild(QPushButton, "resumeRunButton")  # the Runs dock's button
    # shorten the resumed run: its config asks for 2000 steps
    cfg = (stopped_dir / "config.toml").read_text().replace("max_steps = 2000", f"max_steps = {stopped_at + 2}")
    (stopped_dir / "config.toml").write_text(cfg)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT) as blocker:
        window.findChild(QPushButton, "resumeRunButton").click()
    assert blocker.args[0]["status"] == "completed", blocker.args[0]
    steps = window.history.steps
    assert steps[-1] == stopped_at + 2
    assert Path(blocker.args[0]["run_dir"]) == stopped_dir


def test_closing_during_a_run_asks_then_stops_cleanly(make_window, qtbot, tiny_llama, tmp_path):
    window = make_window(write_config(tmp_path / "run.toml",
                                      tiny_config(tiny_llama, tmp_path / "runs", max_steps=2000, save_every=0,
                                                  eval_every=0)))
    asked = []
    window.prompts.confirm = lambda title, text: asked.append(title) or False
    ready(qtbot, window).click()
    qtbot.waitUntil(lambda: len(window.history.steps) >= 2, timeout=RUN_TIMEOUT)
    window.close()
    assert asked and window.isVisible() and window.controller.is_running   # "no": keeps training
    window.prompts.confirm = lambda title, text: asked.append(title) or True
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT) as blocker:
        window.close()
    assert blocker.args[0]["status"] == "stopped"
    qtbot.waitUntil(lambda: not window.isVisible())
    assert (Path(blocker.args[0]["adapter_path"]) / "adapter_config.json").is_file()


def test_stop_during_preparation_cancels_without_a_folder(make_window, qtbot, tiny_llama, tmp_path):
    window = make_window(write_config(tmp_path / "run.toml", tiny_config(tiny_llama, tmp_path / "runs")))
    ready(qtbot, window)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT) as blocker:
        window.train()
        window.stop()           # before the first step: the run ends at the next phase boundary
    assert blocker.args[0]["status"] == "stopped"
    assert blocker.args[0]["run_dir"] is None
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# -- files, settings, entry points -----------------------------------------------------------------

def test_config_round_trip_through_the_window(make_window, qtbot, tiny_llama, tmp_path):
    source = write_config(tmp_path / "run.toml", tiny_config(tiny_llama, tmp_path / "runs",
                                                             {"name": "lora-plus", "r": 8, "lr_ratio": 4.0}))
    window = make_window(source)
    assert window.raw_config()["variant"]["lr_ratio"] == 4.0
    window.findChild(QLineEdit, "train_learning_rate").setText("3e-4")
    target = tmp_path / "saved.toml"
    window.prompts.ask_save_file = lambda caption, flt: str(target)
    assert window.save_config_as()
    saved = RunConfig.from_toml(target)
    assert saved.train.learning_rate == 3e-4 and saved.variant["lr_ratio"] == 4.0
    assert str(target.resolve()) in window.recent()
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nbatch_size = 'four'\n", encoding="utf-8")
    assert not window.open_config(bad)
    banner = window.findChild(QLabel, "errorBanner")
    assert "train.batch_size" in banner.text() and "bad.toml" in banner.text()
    assert window.raw_config()["train"]["learning_rate"] == 3e-4    # nothing lost


def test_layout_is_remembered_between_launches(make_window, qtbot):
    window = make_window()
    window.splitter.setSizes([520, 300])
    sizes = window.splitter.sizes()
    window.log_dock.hide()
    window.findChild(object, "themeDarkAction").trigger()
    window.close()
    again = make_window()
    assert again.splitter.sizes() == sizes and sizes[0] != make_window_default_splitter()
    assert not again.log_dock.isVisible() and again.runs_dock.isVisible()
    assert again.findChild(object, "themeDarkAction").isChecked()
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QApplication

    assert QApplication.instance().palette().color(QPalette.ColorRole.Window).lightness() < 128
    again.set_theme("light")
    assert QApplication.instance().palette().color(QPalette.ColorRole.Window).lightness() > 128


def make_window_default_splitter() -> int:
    return 420      # MainWindow's first splitter size before anything is remembered


def test_cli_opens_the_window_with_a_config_or_a_run(qtbot, tiny_llama, tmp_path, monkeypatch):
    from studio import cli
    from studio.ui import app

    config = write_config(tmp_path / "run.toml", tiny_config(tiny_llama, tmp_path / "runs",
                                                             {"name": "vera", "r": 16}))
    monkeypatch.setattr(app, "_OPEN", [])
    monkeypatch.setattr(app, "open_window", _with_settings(app.open_window, tmp_path))
    assert cli.main([str(config)]) == 0
    window = app._OPEN[-1]
    qtbot.addWidget(window)
    assert window.isVisible()
    assert window.raw_config()["variant"]["name"] == "vera"
    assert cli.main([str(tmp_path / "nothing-here")]) == 2
    window.model_panel.shutdown()
    window.data_panel.shutdown()


def _with_settings(open_window, tmp_path):
    def opener(path=None, settings=None):
        return open_window(path, settings=QSettings(str(tmp_path / "cli.ini"), QSettings.Format.IniFormat))
    return opener


def test_window_opens_without_importing_torch(tmp_path):
    code = ("import sys; from PySide6.QtCore import QSettings; from studio.ui.app import open_window; "
            f"w = open_window(None, settings=QSettings({str(tmp_path / 's.ini')!r}, QSettings.Format.IniFormat)); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules)); "
            "from studio.ui.app import dispose; dispose(w)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen",
                              "LORA_STUDIO_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"')) == []


def test_qt_binding_keeps_python_singletons_alive(qapp):
    """PySide6 6.12.0 under Python 3.11 took a reference from None on every Qt call returning
    nothing, and the window aborted after a few thousand repaints ("none_dealloc"); pyproject
    pins below it. This fails on any binding that brings that back."""
    from PySide6.QtWidgets import QLabel

    label = QLabel()
    before = sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)
    for _ in range(2000):
        label.setText("x")
        label.setObjectName("y")
        label.setVisible(False)
    after = sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)
    assert all(a >= b - 50 for a, b in zip(after, before)), (before, after)


def _wheel(widget, steps: int = -3) -> None:
    """A mouse wheel turned over the middle of `widget` (negative: towards the person, scrolling down)."""
    from PySide6.QtCore import QPoint, QPointF
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    pos = QPointF(widget.width() / 2, widget.height() / 2)
    for _ in range(abs(steps)):
        event = QWheelEvent(pos, QPointF(widget.mapToGlobal(pos.toPoint())), QPoint(0, 0),
                            QPoint(0, 120 if steps > 0 else -120), Qt.MouseButton.NoButton,
                            Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(widget, event)


def test_the_wheel_over_the_setup_column_scrolls_it_and_changes_no_value(make_window, qtbot):
    """Issue 20: scrolling the set-up column walked the variant adalora -> dora -> delta-lora and
    r 16 -> 12 as the boxes passed under the pointer."""
    from PySide6.QtWidgets import QAbstractSpinBox

    window = make_window()
    window.resize(1280, 800)
    window.show()
    qtbot.waitExposed(window)
    combo = window.findChild(QComboBox, "variantCombo")
    combo.setCurrentText("adalora")
    rank = window.variant_panel.form.editors["init_r"]
    assert isinstance(rank, QAbstractSpinBox)
    before = (combo.currentText(), rank.value())
    bar = window.setup_scroll.verticalScrollBar()
    bar.setValue(0)
    window.setFocus()
    _wheel(combo)
    _wheel(rank)
    assert (combo.currentText(), rank.value()) == before
    assert bar.value() > 0, "the column scrolled instead"
    # a box the person clicked into takes the wheel as usual
    rank.setFocus()
    qtbot.waitUntil(rank.hasFocus)
    _wheel(rank, steps=1)
    assert rank.value() == before[1] + 1


def test_a_model_error_names_its_field_once(make_window, qtbot, tmp_path):
    """Issue 20: the banner said "model.source: model.source: ...: no such folder or file"."""
    window = make_window()
    missing = tmp_path / "no-such-model"
    window.model_panel.source_combo.setEditText(str(missing))
    qtbot.waitUntil(lambda: "no such folder or file" in window.validation_label.text(), timeout=10_000)
    text = window.validation_label.text()
    assert text.startswith(f"model.source: {missing}") and text.count("model.source:") == 1, text


def test_pressing_preview_brings_the_preview_to_the_front(make_window, qtbot, tiny_llama, tmp_path):
    """Issue 20: Preview filled the Data preview tab while the Runs tab stayed in front. (The
    window's own check of the data, after an edit, leaves the tabs as they are.)"""
    window = make_window(write_config(tmp_path / "run.toml", tiny_config(tiny_llama, tmp_path / "runs")))
    window.resize(1280, 800)
    window.show()
    qtbot.waitExposed(window)
    ready(qtbot, window)
    qtbot.waitUntil(lambda: window.data_panel.preview is not None, timeout=60_000)
    window.runs_dock.raise_()
    qtbot.waitUntil(lambda: window.preview_dock.visibleRegion().isEmpty(), timeout=5_000)
    with qtbot.waitSignal(window.data_panel.preview_ready, timeout=60_000):
        qtbot.mouseClick(window.data_panel.preview_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.preview_dock.visibleRegion().isEmpty(), timeout=5_000)


def test_a_first_launch_fits_the_screen_frame_included(make_window, qtbot):
    """Issue 20: a fresh window was the screen's size plus its title bar, its status bar off-screen."""
    window = make_window()
    window.show()
    qtbot.waitExposed(window)
    room = window.screen().availableGeometry()
    # top to bottom, title bar to status bar (the width needs item 1: no label may set the minimum width)
    qtbot.waitUntil(lambda: room.top() <= window.frameGeometry().top()
                    and window.frameGeometry().bottom() <= room.bottom(), timeout=3_000)


def test_returning_to_a_variant_brings_its_own_defaults_back(make_window):
    """Issue 20: LoRA -> VeRA -> LoRA left r = 256 (VeRA's default), and LoRA -> DoRA -> LoRA left
    DoRA's init; a value the person changed is kept."""
    window = make_window()
    combo = window.findChild(QComboBox, "variantCombo")
    lora = window.variant_panel.values()
    for other in ("vera", "dora", "adalora", "lora-fa"):
        combo.setCurrentText(other)
        combo.setCurrentText("lora")
        assert window.variant_panel.values() == lora, other
    window.findChild(QLineEdit, "variant_alpha").setText("8")
    combo.setCurrentText("vera")
    combo.setCurrentText("lora")
    assert window.variant_panel.values() == {**lora, "alpha": 8.0}


def test_status_texts_follow_the_run_state(make_window):
    """Issue 20: after Resume the status bar still said "Paused — press Resume to continue", and the
    ETA stayed after Stop."""
    import time as _time

    window = make_window()
    window.session.on_controller_state("paused")
    assert window.statusBar().currentMessage().startswith("Paused")
    window.session.on_controller_state("running")
    assert window.statusBar().currentMessage() == ""
    # a run that has ended (no run going on) shows no ETA, whatever its last step said
    window.session.status.update(step=3, total=6, first_step=0)
    window.session.run_started_at = _time.monotonic() - 30
    window.session.update_status_bar()
    assert window.status_labels["eta"].text() == "ETA –"


def test_an_out_of_range_number_is_marked_not_replaced(make_window, qtbot):
    """Issue 20: typing r = 0 silently went back to 16, and 5000 silently became 500."""
    window = make_window()
    qtbot.waitUntil(lambda: window.validation_label.text() == "", timeout=30_000)
    r = window.findChild(QSpinBox, "variant_r")
    for typed in ("0", "5000"):
        r.lineEdit().selectAll()
        qtbot.keyClicks(r.lineEdit(), typed)
        qtbot.keyClick(r.lineEdit(), Qt.Key.Key_Return)
        assert r.value() == int(typed)
        window.validate()
        assert window.variant_panel.values()["r"] == int(typed)
        assert window.findChild(QLabel, "variant_r_error").isVisibleTo(window), typed
        assert "variant.r" in window.validation_label.text() and not window.train_button.isEnabled()
    r.lineEdit().selectAll()
    qtbot.keyClicks(r.lineEdit(), "16")
    qtbot.keyClick(r.lineEdit(), Qt.Key.Key_Return)
    window.validate()
    assert not window.findChild(QLabel, "variant_r_error").isVisibleTo(window)


def test_a_rank_the_model_cannot_take_is_refused_before_train(make_window, qtbot, tiny_llama, tmp_path):
    """Issue 20: r = 500 on a 576-wide model passed the form, and the run failed ~30 s later after
    loading the model, with the message three times. The layers' sizes come from the file headers."""
    window = make_window(write_config(tmp_path / "run.toml", tiny_config(tiny_llama, tmp_path / "runs")))
    ready(qtbot, window)
    r = window.findChild(QSpinBox, "variant_r")
    r.setValue(300)
    qtbot.waitUntil(lambda: "expected at most" in window.validation_label.text(), timeout=30_000)
    assert window.validation_label.text().startswith("variant.r: expected at most")
    assert not window.train_button.isEnabled()
    assert window.findChild(QLabel, "variant_r_error").isVisibleTo(window)
    r.setValue(4)
    qtbot.waitUntil(lambda: window.train_button.isEnabled(), timeout=30_000)


def _fits_1280(window, qtbot, when: str) -> None:
    """The window's minimum width (what its labels and docks ask) leaves it inside a 1280 px screen,
    and it has not widened itself."""
    from PySide6.QtWidgets import QApplication

    QApplication.processEvents()
    frame = window.frameGeometry().width() - window.geometry().width()
    assert window.minimumSizeHint().width() + frame <= 1280, (when, window.minimumSizeHint())
    assert window.minimumWidth() + frame <= 1280, (when, window.minimumWidth())
    assert window.width() <= 1280, (when, window.width())


def test_long_texts_never_widen_the_window_and_every_status_follows_the_run(make_window, qtbot, tiny_llama,
                                                                             tmp_path):
    """Issue 20, items 1 and 7: the one-line run summary and the status texts grew the window's
    minimum width (1280 -> 1369 px after opening a past run, 1500 px after a resume), and the header
    said "running" after Pause and "stopped" while a resume loaded."""
    runs = tmp_path / ("a-folder-with-a-long-descriptive-name-for-this-experiment-" * 3)
    window = make_window(write_config(tmp_path / "run.toml",
                                      tiny_config(tiny_llama, runs, max_steps=2000, save_every=2, eval_every=0)))
    window.resize(1280, 800)
    window.show()
    qtbot.waitExposed(window)
    _fits_1280(window, qtbot, "before a run")

    def header() -> str:
        return window.run_title.text() + " | " + window.charts.status_label.text()

    ready(qtbot, window).click()
    qtbot.waitUntil(lambda: len(window.history.steps) >= 3, timeout=RUN_TIMEOUT)
    _fits_1280(window, qtbot, "during a run")
    summary = window.charts.status_label
    assert summary.is_elided() and summary.toolTip() == summary.full_text()   # shortened; whole in the tooltip

    qtbot.mouseClick(window.pause_button, Qt.MouseButton.LeftButton)
    window.session.repaint()
    assert "running" not in header(), header()                        # pausing: not "running" any more
    qtbot.waitUntil(lambda: window.history.status.get("state") == "paused", timeout=RUN_TIMEOUT)
    window.session.repaint()
    assert "paused" in window.run_title.text() and "paused" in window.charts.status_label.full_text()
    qtbot.mouseClick(window.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.history.status.get("state") == "running", timeout=RUN_TIMEOUT)
    qtbot.waitUntil(lambda: "running" in window.run_title.text(), timeout=5_000)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT):
        window.stop_button.click()
    assert "stopped" in window.run_title.text()
    assert window.status_labels["eta"].text() == "ETA –"
    _fits_1280(window, qtbot, "after the run")
    stopped_dir, stopped_at = window.run_dir, int(window.history.steps[-1])

    window.train()   # another run, so that the stopped one is a past run to open
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT):
        qtbot.waitUntil(lambda: len(window.history.steps) >= 1, timeout=RUN_TIMEOUT)
        window.stop_button.click()
    assert window.open_run_folder(stopped_dir)
    _fits_1280(window, qtbot, "after opening a past run")
    assert "stopped" in window.run_title.text()

    cfg = (stopped_dir / "config.toml").read_text().replace("max_steps = 2000", f"max_steps = {stopped_at + 2}")
    (stopped_dir / "config.toml").write_text(cfg)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT) as blocker:
        qtbot.mouseClick(window.resume_button, Qt.MouseButton.LeftButton)
        window.session.repaint()
        assert "stopped" not in header(), header()                    # loading the resumed run
        _fits_1280(window, qtbot, "while a resume loads")
    assert blocker.args[0]["status"] == "completed", blocker.args[0]
    assert "completed" in window.run_title.text()
    _fits_1280(window, qtbot, "after a resume")


def test_dark_theme_shows_the_overlay_boxes_and_every_dialog_follows_it(make_window, qtbot):
    """Issue 20, item 13: under the dark theme the Runs list's overlay check boxes were nearly
    invisible (their outline was the dark base's colour), and the About box stayed light: a desktop's
    platform theme gives some widget classes palettes of their own, which the application palette
    does not replace (stood in for here by a light palette set for the message box classes)."""
    from PySide6.QtGui import QColor, QPalette
    from PySide6.QtWidgets import QApplication, QListWidgetItem

    from studio.ui.theme import apply_theme

    app = QApplication.instance()
    light = QPalette(app.style().standardPalette())
    for name in ("QMessageBox", "QMessageBoxLabel", "QLabel"):
        app.setPalette(light, name)
    window = make_window()
    try:
        apply_theme(app, "dark")
        view = window.runs_view
        view.clear()
        item = QListWidgetItem("20261207-101010-lora · completed")
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Unchecked)
        view.addItem(item)
        view.resize(300, 120)
        view.show()
        qtbot.waitExposed(view)
        image = view.viewport().grab().toImage()
        rect = view.visualItemRect(item)
        base = view.palette().color(QPalette.ColorRole.Base)
        assert base.lightness() < 80
        box = [QColor(image.pixel(x, y)) for x in range(rect.left(), rect.left() + 26)
               for y in range(rect.top(), rect.bottom())]
        contrast = max(abs(c.lightness() - base.lightness()) for c in box)
        assert contrast >= 60, contrast          # the empty box's edge stands out from the list

        about = window.about()
        qtbot.addWidget(about)
        assert about.palette().color(QPalette.ColorRole.Window).lightness() < 80
        label = about.findChild(QLabel, "qt_msgbox_label")
        assert label.palette().color(QPalette.ColorRole.WindowText).lightness() > 170
        about.close()
    finally:
        apply_theme(app, "light")


def test_help_lists_the_shortcuts_and_opens_the_guide(make_window, qtbot):
    """Issue 20 (polish): the Help menu had only About."""
    window = make_window()
    help_menu = window.findChild(object, "helpMenu")
    names = [a.objectName() for a in help_menu.actions() if a.objectName()]
    assert names == ["docsAction", "shortcutsAction", "aboutAction"]
    window.findChild(object, "shortcutsAction").trigger()
    dialog = window.help_dialog
    qtbot.addWidget(dialog)
    table = dialog.findChild(object, "shortcutsTable")
    rows = {table.item(i, 1).text(): table.item(i, 2).text() for i in range(table.rowCount())}
    assert rows[window.train_action.text().replace("&", "").rstrip("…. ")] == \
        window.train_action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
    assert len(rows) >= 8
    dialog.close()
    window.findChild(object, "docsAction").trigger()
    docs = window.help_dialog
    qtbot.addWidget(docs)
    text = docs.findChild(object, "docsView").toPlainText()
    assert "LoRA Studio" in text and "Run the tests" in text
    docs.close()


def test_model_and_dataset_fields_show_the_start_of_their_text(make_window, tiny_llama, tmp_path):
    """Issue 20 (polish): the fields showed the end of their text, cut at the start
    ("led:smollm2-135m-instruct"); the whole text is in the tooltip."""
    window = make_window(write_config(tmp_path / "run.toml", tiny_config(tiny_llama, tmp_path / "runs")))
    model = window.model_panel.source_combo.lineEdit()
    data = window.findChild(QLineEdit, "dataPath")
    for edit in (model, data):
        assert len(edit.text()) > 20
        assert edit.cursorPosition() == 0 and edit.toolTip() == edit.text()


def test_the_status_bar_shows_its_texts_at_launch(qtbot, settings):
    """The status labels once got 12 px at launch and showed nothing: a label laid out narrow shows
    "" before and after its text is set, so QLabel never asked its layout for more room."""
    from studio.ui.main_window import MainWindow

    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.show()
    window.resize(1280, 800)
    qtbot.waitExposed(window)
    for key, label in window.status_labels.items():
        qtbot.waitUntil(lambda label=label: label.shown_text() == label.full_text() != "", timeout=5_000)
    window.model_panel.shutdown()
    window.data_panel.shutdown()
