"""Bad input in the window: each reason appears next to what caused it, in one readable line, and
the window stays usable (nothing already loaded is lost, the next run trains)."""

from __future__ import annotations

import shutil

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QLineEdit, QPushButton

from test_window import make_window, ready, run_to_end, settings, tiny_config, write_config  # noqa: F401

RUN_TIMEOUT = 180_000


def test_a_damaged_model_file_is_shown_next_to_the_model(make_window, qtbot, tiny_llama, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 3])     # a copy cut short
    window = make_window(write_config(tmp_path / "run.toml", tiny_config(str(model), tmp_path / "runs")))
    error = window.findChild(QLabel, "modelError")
    qtbot.waitUntil(error.isVisible, timeout=60_000)
    assert "model.safetensors" in error.text() and "Traceback" not in error.text()
    assert not window.findChild(QPushButton, "trainButton").isEnabled()
    # pointing at a good model clears it and Train comes back
    window.model_panel.source_combo.setEditText(tiny_llama)
    ready(qtbot, window)
    assert not error.isVisible()


def test_pickled_weights_are_refused_next_to_the_model(make_window, qtbot, tiny_llama, tmp_path):
    import torch
    from safetensors.torch import load_file

    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    torch.save(load_file(str(model / "model.safetensors")), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    window = make_window(write_config(tmp_path / "run.toml", tiny_config(str(model), tmp_path / "runs")))
    error = window.findChild(QLabel, "modelError")
    qtbot.waitUntil(error.isVisible, timeout=60_000)
    assert "pickle" in error.text() and "safetensors" in error.text()


def test_target_modules_that_match_nothing_are_marked_on_the_field(make_window, qtbot, tiny_llama, tmp_path):
    config = tiny_config(tiny_llama, tmp_path / "runs", {"name": "lora", "r": 4, "target_modules": "qkv_fused"},
                         max_steps=2)
    window = make_window(write_config(tmp_path / "run.toml", config))
    result = run_to_end(qtbot, window)
    assert result["status"] == "failed"
    assert "variant.target_modules" in result["error"] and "q_proj" in result["error"]
    field_error = window.findChild(QLabel, "variant_target_modules_error")
    assert field_error.isVisible() and "matches no layer" in field_error.text()
    train = window.findChild(QPushButton, "trainButton")
    assert not train.isEnabled()
    # fixing the field clears the mark; the next run trains
    window.findChild(QLineEdit, "variant_target_modules").setText("q_proj,v_proj")
    qtbot.waitUntil(train.isEnabled)
    assert not field_error.isVisible()
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT) as blocker:
        qtbot.mouseClick(train, Qt.MouseButton.LeftButton)
    assert blocker.args[0]["status"] == "completed"


def test_a_rank_above_the_layer_size_is_marked_on_the_rank(make_window, qtbot, tiny_llama, tmp_path):
    config = tiny_config(tiny_llama, tmp_path / "runs", {"name": "lora", "r": 200}, max_steps=2)
    window = make_window(write_config(tmp_path / "run.toml", config))
    result = run_to_end(qtbot, window)
    assert result["status"] == "failed" and "variant.r: expected at most" in result["error"]
    assert "expected at most" in window.findChild(QLabel, "variant_r_error").text()


def test_a_malformed_config_keeps_what_was_open(make_window, qtbot, tiny_llama, tmp_path):
    good = write_config(tmp_path / "run.toml", tiny_config(tiny_llama, tmp_path / "runs"))
    window = make_window(good)
    ready(qtbot, window)
    before = window.raw_config()
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlearning_rate = nan\n", encoding="utf-8")
    assert window.load(bad) is False
    banner = window.findChild(QLabel, "errorBanner")
    assert banner.isVisible() and "bad.toml" in banner.text() and "learning_rate" in banner.text()
    assert "\n" not in banner.text().strip()
    assert window.raw_config() == before
    ready(qtbot, window)


def test_a_killed_run_opens_as_interrupted_and_resumes(make_window, qtbot, tiny_llama, tmp_path):
    """A run folder whose log stops without run_finished (the process was killed) and whose
    writer is gone: the window says so, and Resume run continues it from its checkpoint."""
    import json

    from studio.core.training import Session

    result = Session(tiny_config(tiny_llama, tmp_path / "runs", eval_every=0)).run()
    assert result.status == "completed"
    run_dir = result.run_dir
    shutil.rmtree(run_dir / "adapter")
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-8")
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if json.loads(line)["type"] == "checkpoint")
    torn = lines[cut + 1][: len(lines[cut + 1]) // 2]          # killed while writing a line
    (run_dir / "events.jsonl").write_text("".join(lines[: cut + 1]) + torn, encoding="utf-8")
    (run_dir / "run.lock").write_text(json.dumps({"pid": 2 ** 22 + 17, "host": __import__("socket").gethostname(),
                                                  "started": 1.0, "since": 1.0}), encoding="utf-8")
    window = make_window(run_dir)
    banner = window.findChild(QLabel, "errorBanner")
    assert banner.isVisible() and "interrupted at step 4" in banner.text() and "checkpoint-4" in banner.text()
    resume = window.findChild(QPushButton, "resumeRunButton")
    assert resume.isEnabled()
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT) as blocker:
        qtbot.mouseClick(resume, Qt.MouseButton.LeftButton)
    assert blocker.args[0]["status"] == "completed", blocker.args[0].get("error")
    from studio.core.telemetry import read_events

    events = list(read_events(run_dir / "events.jsonl"))
    for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines():
        json.loads(line)                                   # valid JSON lines again
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps[-4:] == [5, 6, 7, 8]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
