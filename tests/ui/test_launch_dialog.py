"""Run ▸ Export run as launch script…, driven through the window's stable names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from PySide6.QtCore import QSettings
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QCheckBox, QComboBox, QLabel, QLineEdit, QPushButton, QSpinBox

from studio.core.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def window(qtbot, tmp_path, tiny_llama):
    from studio.ui.app import open_window

    raw = {"model": {"source": tiny_llama},
           "data": {"path": str(ROOT / "resources" / "datasets" / "chat_sample.jsonl"), "max_seq_len": 64},
           "variant": {"name": "lora", "r": 4},
           "train": {"output_dir": str(tmp_path / "runs"), "batch_size": 4, "max_steps": 5}}
    path = tmp_path / "chat.toml"
    path.write_text(RunConfig.from_dict(raw, "test").to_toml(), encoding="utf-8")
    w = open_window(path, settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    yield w
    w.model_panel.shutdown()
    w.data_panel.shutdown()


def test_export_launch_script_from_the_run_menu(window, qtbot, tmp_path):
    from studio.ui.launch_dialog import LaunchScriptDialog

    action = window.findChild(QAction, "exportLaunchScriptAction")
    run_menu = next(m for m in window.menuBar().actions() if m.text() == "&Run").menu()
    assert action in run_menu.actions()
    action.trigger()

    dialog = window.findChild(LaunchScriptDialog, "launchScriptDialog")
    assert dialog is not None and dialog.isVisible()
    folder = dialog.findChild(QLineEdit, "launchFolder")
    assert Path(folder.text()) == tmp_path / "chat-launch"     # beside the config, named after it
    export = dialog.findChild(QPushButton, "launchExport")
    problem = dialog.findChild(QLabel, "launchProblem")

    dialog.findChild(QSpinBox, "launchProcesses").setValue(3)   # 4 examples do not split in 3
    assert not export.isEnabled() and "multiple of 3" in problem.text()
    dialog.findChild(QSpinBox, "launchProcesses").setValue(2)
    dialog.findChild(QSpinBox, "launchMachines").setValue(2)    # 4 in all: one example each
    assert export.isEnabled() and not problem.isVisible()
    strategy = dialog.findChild(QComboBox, "launchStrategy")
    strategy.setCurrentIndex(strategy.findData("fsdp"))
    dialog.findChild(QCheckBox, "launchCpu").setChecked(False)
    summary = dialog.findChild(QLabel, "launchSummary").text()
    assert "4 GPUs in all" in summary and "each 1" in summary

    export.click()
    assert not dialog.isVisible()
    out = tmp_path / "chat-launch"
    assert sorted(p.name for p in out.iterdir()) == ["accelerate.yaml", "launch.sh", "run.toml"]
    assert os.access(out / "launch.sh", os.X_OK)
    accel = yaml.safe_load((out / "accelerate.yaml").read_text())
    assert accel["distributed_type"] == "FSDP" and accel["num_processes"] == 4 and accel["num_machines"] == 2
    run = RunConfig.from_toml(out / "run.toml")
    assert run.model.source == window.current_config().model.source and run.train.max_steps == 5
    assert f"launch script: {out / 'launch.sh'}" in window.log_view.toPlainText()


def test_a_variant_fsdp_cannot_shard_keeps_export_disabled(window, qtbot):
    combo = window.findChild(QComboBox, "variantCombo")
    index = combo.findData("delta-lora")
    combo.setCurrentIndex(index if index >= 0 else combo.findText("delta-lora"))
    dialog = window.export_launch_script()
    strategy = dialog.findChild(QComboBox, "launchStrategy")
    strategy.setCurrentIndex(strategy.findData("fsdp"))
    problem = dialog.findChild(QLabel, "launchProblem")
    assert "delta-lora" in problem.text() and "FSDP" in problem.text()
    assert not dialog.findChild(QPushButton, "launchExport").isEnabled()
    strategy.setCurrentIndex(strategy.findData("ddp"))
    assert dialog.findChild(QPushButton, "launchExport").isEnabled()
    dialog.reject()
