"""The model picker (studio/ui/model_picker.py) opened from the model panel on a fake Hugging Face
cache: the listing arrives from its background job, a filter narrows it, a pick fills the source."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLineEdit, QPushButton, QTableWidget

from studio.core import modelcache

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def cache_model(cache: Path, repo_id: str, model_type: str, repo_type: str = "model") -> Path:
    """A repo laid out as huggingface_hub does (blobs, refs/main, snapshot symlinks); its snapshot."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    files = {"config.json": json.dumps({"model_type": model_type}).encode(), "model.safetensors": b"\0" * 64}
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    return snapshot


@pytest.fixture
def fake_cache(tmp_path, monkeypatch) -> dict:
    cache = tmp_path / "hub"
    snapshots = {name: cache_model(cache, name, kind) for name, kind in
                 (("org/alpha-llama", "llama"), ("org/beta-bert", "bert"), ("org/gamma-qwen", "qwen2"))}
    cache_model(cache, "org/a-dataset", "none", repo_type="dataset")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("LORA_STUDIO_HOME", str(tmp_path / "home"))   # no added folders
    return snapshots


@pytest.fixture
def panel(qtbot):
    from studio.ui.panels import ModelPanel

    panel = ModelPanel()
    qtbot.addWidget(panel)
    yield panel
    panel.shutdown()


def visible_names(table: QTableWidget) -> list[str]:
    return [table.item(r, 0).text() for r in range(table.rowCount()) if not table.isRowHidden(r)]


def open_picker(qtbot, panel):
    qtbot.mouseClick(panel.findChild(QPushButton, "modelBrowseButton"), Qt.MouseButton.LeftButton)
    picker = panel.picker
    assert picker is not None and picker.isVisible()
    qtbot.waitUntil(lambda: not picker.loading and picker.table.rowCount() > 0, timeout=20_000)
    return picker


def test_picking_a_cached_model_fills_the_source(qtbot, panel, fake_cache):
    picker = open_picker(qtbot, panel)
    table = picker.findChild(QTableWidget, "modelPickerTable")
    assert visible_names(table) == ["org/alpha-llama", "org/beta-bert", "org/gamma-qwen"]   # no dataset
    assert picker.findChild(QPushButton, "modelPickerOkButton").isEnabled() is False

    qtbot.keyClicks(picker.findChild(QLineEdit, "modelPickerFilter"), "BERT")
    assert visible_names(table) == ["org/beta-bert"]
    assert "1 of 3" in picker.status.text()
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).text() == "org/beta-bert")
    table.selectRow(row)
    assert table.item(row, 3).text() == f"{COMMIT[:8]} (main)"
    assert table.item(row, 4).text() == "Hugging Face cache"
    ok = picker.findChild(QPushButton, "modelPickerOkButton")
    assert ok.isEnabled()
    with qtbot.waitSignal(panel.source_combo.currentTextChanged, timeout=5000):
        qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)
    assert not picker.isVisible()
    assert panel.source_combo.currentText() == str(fake_cache["org/beta-bert"])
    # the panel's own check runs on the chosen source: a local folder, described without the hub
    qtbot.waitUntil(lambda: not panel.busy, timeout=30_000)
    assert panel.values()["source"] == str(fake_cache["org/beta-bert"])


def test_double_click_picks_and_an_added_folder_is_listed(qtbot, panel, fake_cache, tmp_path):
    folder = tmp_path / "mine"
    (folder / "my-model").mkdir(parents=True)
    (folder / "my-model" / "config.json").write_text('{"model_type": "gpt2"}')
    (folder / "my-model" / "model.safetensors").write_bytes(b"\0" * 8)
    picker = open_picker(qtbot, panel)
    assert picker.add_folder(str(tmp_path / "nowhere")) is False
    assert picker.error.isVisible() and "no such folder" in picker.error.text()
    assert picker.add_folder(str(folder)) is True
    assert not picker.error.isVisible()
    qtbot.waitUntil(lambda: not picker.loading and "my-model" in visible_names(picker.table), timeout=20_000)
    assert modelcache.added_folders() == [str(folder)]
    assert picker.remove_button.isEnabled() and [a.text() for a in picker.remove_menu.actions()] == [str(folder)]

    picker.filter_edit.setText("gpt2")
    assert visible_names(picker.table) == ["my-model"]
    row = next(r for r in range(picker.table.rowCount()) if not picker.table.isRowHidden(r))
    rect = picker.table.visualItemRect(picker.table.item(row, 0))
    qtbot.mouseClick(picker.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())   # as a person does
    qtbot.mouseDClick(picker.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert panel.source_combo.currentText() == str(folder / "my-model")
    assert not picker.isVisible()

    picker.remove_menu.actions()[0].trigger()
    assert modelcache.added_folders() == []
    qtbot.waitUntil(lambda: not picker.loading and "my-model" not in [m["name"] for m in picker.models],
                    timeout=20_000)
    picker.reject()
