"""Runs from the window train in a child process (issue 22): a child killed while it prepares,
trains or saves a checkpoint ends its run as `interrupted` with the signal named, the window
stays up and answers, the run folder stays resumable, and Resume from the window ends with the
losses of an uninterrupted run. A child whose window process is killed stops by itself, saving
a checkpoint. The window's own process never imports torch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QLabel, QPushButton

from studio.core.telemetry import read_events

from run_events import curve as events_curve
from gallery_fixtures import ROOT, plant_engine, tiny_config  # noqa: F401 (a fixture)

RUN_TIMEOUT = 180_000
STEPS = 6


@pytest.fixture
def make_window(qtbot, tmp_path):
    from studio.ui.app import open_window

    windows = []

    def make(config):
        path = tmp_path / f"run{len(windows)}.toml"
        path.write_text(config.to_toml(), encoding="utf-8")
        window = open_window(path, settings=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
        window.run_results, window.results_taken = [], 0
        window.run_finished.connect(window.run_results.append)
        windows.append(window)
        return window

    yield make
    for w in windows:
        if w.controller.is_running:
            w.controller.kill()
            qtbot.waitUntil(lambda w=w: not w.controller.is_running, timeout=RUN_TIMEOUT)
        w.model_panel.shutdown()
        w.data_panel.shutdown()
        w.close()
        w.deleteLater()


def config(tiny_llama, out: Path):
    return tiny_config(tiny_llama, out, max_steps=STEPS, save_every=2, seed=0)


def curve(run_dir: Path) -> dict[int, float]:
    return events_curve(list(read_events(run_dir / "events.jsonl")))


def train(qtbot, window):
    button = window.findChild(QPushButton, "trainButton")
    qtbot.waitUntil(button.isEnabled, timeout=60_000)
    button.click()


def finished(qtbot, window) -> dict:
    """The next run's result. Results are collected from the window's start (make_window), so a
    run that ends before the test asks is not missed."""
    qtbot.waitUntil(lambda: len(window.run_results) > window.results_taken, timeout=RUN_TIMEOUT)
    window.results_taken += 1
    return window.run_results[window.results_taken - 1]


@pytest.fixture(scope="module")
def reference(tiny_llama, tmp_path_factory) -> dict[int, float]:
    """An uninterrupted run's loss curve (the engine, in a subprocess: torch stays out of here)."""
    out = tmp_path_factory.mktemp("reference")
    toml = out / "run.toml"
    toml.write_text(config(tiny_llama, out / "runs").to_toml(), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "studio", "train", str(toml)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = [p for p in (out / "runs").iterdir() if p.is_dir()]
    return curve(run_dir)


def kill_when(qtbot, window, ready) -> int:
    """SIGKILL the run's process once `ready(history)` holds; returns the step it had reached."""
    qtbot.waitUntil(lambda: window.controller.child_pid is not None and ready(window.history), timeout=RUN_TIMEOUT)
    os.kill(window.controller.child_pid, signal.SIGKILL)
    return len(window.history.steps)


@pytest.mark.parametrize("point", ["preparing", "training"])
def test_a_killed_run_is_interrupted_the_window_stays_and_resume_matches(point, make_window, qtbot, tiny_llama,
                                                                          tmp_path, reference):
    window = make_window(config(tiny_llama, tmp_path / "runs"))
    train(qtbot, window)
    if point == "preparing":     # the child reports its preparation (a progress line), no step yet
        kill_when(qtbot, window, lambda h: bool(h.status.get("message")) and len(h.steps) == 0)
    else:                        # past the first checkpoint (step 2)
        kill_when(qtbot, window, lambda h: len(h.steps) >= 3)
    result = finished(qtbot, window)
    assert result["status"] == "interrupted"
    assert "SIGKILL" in result["error"] and "\n" not in result["error"]
    banner = window.findChild(QLabel, "errorBanner")
    assert banner.isVisible() and "SIGKILL" in banner.text()
    assert window.findChild(QPushButton, "trainButton").isEnabled()     # the window answers
    run_dir = window.session.run_dir
    if run_dir is None:          # killed before the run folder was made: the next run starts normally
        assert point == "preparing"
        train(qtbot, window)
        assert finished(qtbot, window)["status"] == "completed"
        return
    assert window.session.resume_run(run_dir)
    result = finished(qtbot, window)
    assert result["status"] == "completed", result
    got = curve(run_dir)
    assert sorted(got) == sorted(reference)
    for step, loss in reference.items():
        assert got[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), step


def test_a_run_killed_while_saving_a_checkpoint_resumes_from_the_one_before(make_window, qtbot, tiny_llama,
                                                                            tmp_path, reference, monkeypatch,
                                                                            plant_engine):
    # the child announces the second checkpoint's save, then holds it long enough to be killed in it
    marker = tmp_path / "saving"
    plant_engine(
        "import os, time\n"
        "from transformers import Trainer\n"
        "original = Trainer._save_checkpoint\n"
        "def slow(self, *args, **kwargs):\n"
        "    if self.state.global_step == 4:\n"
        f"        open({str(marker)!r}, 'w').close()\n"
        "        time.sleep(60)\n"
        "    return original(self, *args, **kwargs)\n"
        "Trainer._save_checkpoint = slow\n")
    window = make_window(config(tiny_llama, tmp_path / "runs"))
    train(qtbot, window)
    kill_when(qtbot, window, lambda h: marker.exists())
    result = finished(qtbot, window)
    assert result["status"] == "interrupted" and "SIGKILL" in result["error"]
    monkeypatch.undo()
    run_dir = window.session.run_dir
    from studio.core.runfolder import last_checkpoint

    assert last_checkpoint(run_dir).name == "checkpoint-2"
    assert window.session.resume_run(run_dir)
    assert finished(qtbot, window)["status"] == "completed"
    got = curve(run_dir)
    for step, loss in reference.items():
        assert got[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), step


ORPHAN = r"""
import json, os, sys, time
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtCore import QCoreApplication, QTimer
from studio.core.config import RunConfig
from studio.ui.worker import RunController
app = QCoreApplication([])
config = RunConfig.from_toml(sys.argv[1])
controller = RunController()
def on_events(events):
    if any(e["type"] == "step" for e in events) and not getattr(app, "told", False):
        app.told = True
        run_dir = next((e["run_dir"] for e in events if e["type"] == "run_started"), None)
        print(json.dumps({"child": controller.child_pid}), flush=True)
controller.events_arrived.connect(on_events)
controller.start(config)
app.exec()
"""


def test_a_run_whose_window_dies_stops_by_itself_and_saves(tiny_llama, tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(tiny_config(tiny_llama, tmp_path / "runs", max_steps=100_000, save_every=100_000).to_toml(),
                    encoding="utf-8")
    env = {**os.environ, "LORA_STUDIO_SPARE_RUN": "0", "PYTHONPATH": str(ROOT)}
    window = subprocess.Popen([sys.executable, "-c", ORPHAN, str(toml)], stdout=subprocess.PIPE, text=True,
                              env=env, cwd=ROOT)
    try:
        child = json.loads(window.stdout.readline())["child"]
    finally:
        window.kill()           # the window process dies at once, mid-run
        window.wait()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:     # gone, or a zombie nobody reaps (its parent died): either way it has stopped
            if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.5)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the run's process went on after its window died")
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    events = list(read_events(run_dir / "events.jsonl"))
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "stopped"
    from studio.core.runfolder import last_checkpoint

    assert last_checkpoint(run_dir) is not None       # Resume continues from where it stopped
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


SESSION = r"""
import json, os, sys, time
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QPushButton
from studio.ui.app import application, open_window
app = application()
out = sys.argv[2]
window = open_window(sys.argv[1], settings=QSettings(os.path.join(out, "s.ini"), QSettings.Format.IniFormat))

def wait(condition, what, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        app.processEvents()
        time.sleep(0.01)

done = []
window.run_finished.connect(done.append)
train = window.findChild(QPushButton, "trainButton")
wait(train.isEnabled, "Train enabled")
wait(lambda: window.data_panel.preview is not None, "the dataset preview")
train.click()
wait(lambda: done, "the run")
entry = done[0]["gallery_entry"]
window.gallery_view.select(entry)
jobs = []
window.gallery.job_finished.connect(lambda outcome, value: jobs.append(outcome))
window.gallery.ask_export_folder = lambda caption, suggested: os.path.join(out, "exported")
window.findChild(object, "exportAdapterAction").trigger()
wait(lambda: jobs, "the export")
window.gallery.open_playground()
dialog = window.gallery.playground
answers = []
dialog.generated.connect(answers.append)
dialog.prompt.setPlainText("Hello")
dialog.max_tokens.setValue(4)
dialog.generate()
wait(lambda: answers, "the playground")
print(json.dumps({"run": done[0]["status"], "export": jobs[0], "answers": sorted(answers[0]),
                  "heavy": sorted(m for m in ("torch", "transformers", "peft", "datasets", "accelerate")
                                  if m in sys.modules)}))
dialog.release(wait=True)
window.close()
"""


def test_the_window_process_never_imports_torch(tiny_llama, tmp_path):
    """Train, export and the playground, through the real window: the heavy libraries load in the
    run's process and the engine process only."""
    toml = tmp_path / "run.toml"
    toml.write_text(tiny_config(tiny_llama, tmp_path / "runs").to_toml(), encoding="utf-8")
    env = {**os.environ, "LORA_STUDIO_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SESSION, str(toml), str(tmp_path)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["run"] == "completed" and report["export"] == "ok" and report["answers"] == ["adapted", "base"]
    assert report["heavy"] == []
    assert (tmp_path / "exported" / "adapter_model.safetensors").is_file()


def test_a_run_that_stops_answering_is_reported_and_then_goes_on(make_window, qtbot, tiny_llama, tmp_path,
                                                                  monkeypatch):
    from studio.ui import worker

    monkeypatch.setattr(worker, "UNRESPONSIVE_S", 3.0)
    window = make_window(tiny_config(tiny_llama, tmp_path / "runs", max_steps=40))
    silences = []
    window.controller.unresponsive.connect(silences.append)
    train(qtbot, window)
    qtbot.waitUntil(lambda: len(window.history.steps) >= 2, timeout=RUN_TIMEOUT)
    pid = window.controller.child_pid
    silences.clear()
    os.kill(pid, signal.SIGSTOP)            # the process hangs: no step, no heartbeat
    try:
        qtbot.waitUntil(lambda: any(s >= 3.0 for s in silences), timeout=30_000)
        assert "not answering for" in window.session.run_title.text()
    finally:
        os.kill(pid, signal.SIGCONT)
    qtbot.waitUntil(lambda: silences[-1] == 0.0, timeout=30_000)
    assert "not answering" not in window.session.run_title.text()
    assert finished(qtbot, window)["status"] == "completed"


def test_closing_during_a_run_stops_it_and_a_second_close_ends_its_process(make_window, qtbot, tiny_llama,
                                                                           tmp_path):
    window = make_window(tiny_config(tiny_llama, tmp_path / "runs", max_steps=100_000, save_every=100_000))
    window.show()
    asked = []
    window.prompts.confirm = lambda title, text: asked.append(title) or True
    train(qtbot, window)
    qtbot.waitUntil(lambda: len(window.history.steps) >= 1, timeout=RUN_TIMEOUT)
    pid = window.controller.child_pid
    os.kill(pid, signal.SIGSTOP)            # a stop the run cannot honour (it hangs)
    window.close()
    assert window.isVisible() and window.controller.state == "stopping"
    window.close()                          # asked again: end the process now
    assert asked == ["A run is in progress", "The run is still stopping"]
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=RUN_TIMEOUT)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_child_that_cannot_start_says_why_in_one_line(make_window, qtbot, tiny_llama, tmp_path, plant_engine):
    """A broken install (torch cannot load a library): the run fails with that line, not with an
    exit code, and so does the dataset preview in the engine process."""
    plant_engine("import studio.core.imports as imports\n"
                 "def broken():\n"
                 "    raise ImportError('libcudnn.so.9: cannot open shared object file')\n"
                 "imports.heavy_imports = broken\n")
    window = make_window(config(tiny_llama, tmp_path / "runs"))
    error = window.findChild(QLabel, "dataError")
    qtbot.waitUntil(error.isVisible, timeout=RUN_TIMEOUT)
    assert "libcudnn.so.9" in error.text() and "\n" not in error.text()
    done = []
    window.run_finished.connect(done.append)
    window.session.start(config(tiny_llama, tmp_path / "runs"), None)
    qtbot.waitUntil(lambda: bool(done), timeout=RUN_TIMEOUT)
    assert done[0]["status"] == "failed" and done[0]["error"] == (
        "ImportError: libcudnn.so.9: cannot open shared object file"), done
    assert window.banner.isVisible() and "libcudnn.so.9" in window.banner.text()


def test_a_stop_right_after_train_stops_the_run(make_window, qtbot, tiny_llama, tmp_path):
    window = make_window(config(tiny_llama, tmp_path / "runs"))
    done = []
    window.run_finished.connect(done.append)
    train(qtbot, window)
    window.controller.stop()                 # before the child has even read its run
    qtbot.waitUntil(lambda: bool(done), timeout=RUN_TIMEOUT)
    assert done[0]["status"] == "stopped" and not done[0]["error"], done[0]
