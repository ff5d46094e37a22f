"""What the gallery's window tests share: a tiny run config, a real adapter trained once per test
module, a studio home and gallery per test, and a window on it that is stopped and shut down
cleanly. Test modules import the fixtures they use by name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from studio.core.config import RunConfig
from studio.core.gallery import Gallery

ROOT = Path(__file__).resolve().parents[2]   # (tests/ui/conftest.py shadows tests/conftest.py's names)
DATASETS = ROOT / "resources" / "datasets"
JOB_TIMEOUT = 120_000


def tiny_config(tiny_llama, out: Path, variant: dict | None = None, **train) -> RunConfig:
    raw = {"model": {"source": tiny_llama},
           "data": {"path": str(DATASETS / "chat_sample.jsonl"), "eval_fraction": 0.0, "max_seq_len": 64},
           "variant": variant or {"name": "lora", "r": 4},
           "train": {"output_dir": str(out), "max_steps": 2, "batch_size": 4, "learning_rate": 5e-3,
                     "save_every": 0, "eval_every": 0, "device": "cpu", "precision": "fp32", **train},
           "telemetry": {"every": 1, "budget": 0.0}}
    return RunConfig.from_dict(raw, "test")


def trained(tiny_llama, out: Path, name: str, variant: dict | None = None, **train) -> Path:
    """A real gallery entry folder, trained on the tiny Llama; tests copy it into their gallery."""
    from studio.core.training import Session

    result = Session(tiny_config(tiny_llama, out / "runs", variant, gallery=False, **train)).run(
        sink=lambda event: None)
    assert result.status == "completed", result.error
    return Gallery(out / "gallery").add_run(result.run_dir, name=name).path


@pytest.fixture(scope="module")
def real_adapter(tiny_llama, tmp_path_factory) -> Path:
    """One real gallery entry folder (a 2-step LoRA on the tiny Llama, with its telemetry), made
    once per module; tests copy it into their own gallery."""
    return trained(tiny_llama, tmp_path_factory.mktemp("real-run"), "tiny-real")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("LORA_STUDIO_HOME", str(path))
    return path


@pytest.fixture
def gallery(home) -> Gallery:
    return Gallery()


@pytest.fixture
def make_window(qtbot, home, tmp_path, tiny_llama):
    from studio.ui.app import open_window

    windows = []

    def make():
        config = tmp_path / "run.toml"
        config.write_text(tiny_config(tiny_llama, tmp_path / "runs").to_toml(), encoding="utf-8")
        window = open_window(config, settings=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
        qtbot.addWidget(window)
        window.gallery_dock.show()
        window.gallery_dock.raise_()
        windows.append(window)
        return window

    yield make
    for w in windows:
        if w.controller.is_running:
            w.controller.stop()
            qtbot.waitUntil(lambda w=w: not w.controller.is_running, timeout=JOB_TIMEOUT)
        w.gallery.shutdown()
        w.model_panel.shutdown()
        w.data_panel.shutdown()


@pytest.fixture
def plant_engine(monkeypatch, tmp_path):
    """plant_engine(code): the engine process (and a run's process) restarts with `code` run at its
    start (a sitecustomize module), to change the engine where the window cannot reach it; the
    engine restarts clean after the test."""
    from studio.core import engineclient, runprocess

    def plant(code: str) -> None:
        folder = tmp_path / "plant"
        folder.mkdir(exist_ok=True)
        (folder / "sitecustomize.py").write_text(code, encoding="utf-8")
        engineclient.shutdown_engine()
        runprocess.close_spare()
        monkeypatch.setenv("LORA_STUDIO_SPARE_RUN", "0")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))

    yield plant
    engineclient.shutdown_engine()
