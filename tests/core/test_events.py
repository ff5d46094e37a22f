"""The event protocol (studio/core/events.py): every event that real runs write matches its kind's
definition, every kind is written by some run, and describe() gives the window and the CLI one line."""

from __future__ import annotations

import threading

import pytest

from conftest import DATASETS
from studio.core.config import RunConfig
from studio.core.events import EVENT_KINDS, describe, problems
from studio.core.telemetry import read_events
from studio.core.training import RunControl, Session


def _config(tiny_llama, out, variant: dict, **train) -> RunConfig:
    raw = {
        "model": {"source": tiny_llama},
        "data": {"path": str(DATASETS / "chat_sample.jsonl"), "eval_fraction": 0.1, "max_seq_len": 64},
        "variant": variant,
        "train": {"output_dir": str(out), "max_steps": 4, "batch_size": 4, "learning_rate": 5e-3,
                  "save_every": 2, "eval_every": 2, "device": "cpu", "precision": "fp32", **train},
        "telemetry": {"every": 2, "budget": 0.0},
    }
    return RunConfig.from_dict(raw, "test")


@pytest.fixture(scope="module")
def written(tiny_llama, tmp_path_factory) -> list[dict]:
    """The events.jsonl of real runs: AdaLoRA (ranks, sensitivity), LoRA-drop (ties), DoRA
    (decomposition, magnitudes), and a LoRA run paused once and stopped."""
    out = tmp_path_factory.mktemp("event-runs")
    events: list[dict] = []
    for variant in ({"name": "adalora", "init_r": 6, "target_r": 4, "tinit": 1, "tfinal": 1, "deltaT": 1},
                    {"name": "lora-drop", "r": 4}, {"name": "dora", "r": 4}):
        result = Session(_config(tiny_llama, out / variant["name"], variant)).run(sink=lambda e: None)
        assert result.status == "completed", result.error
        events += read_events(result.run_dir / "events.jsonl")
    control = RunControl()

    def sink(event):
        if event["type"] == "step" and event["step"] == 1:
            control.pause()
        if event["type"] == "paused":     # resumed once the pause took effect, whatever a step takes
            threading.Timer(0.2, control.resume).start()
        if event["type"] == "step" and event["step"] == 3:
            control.stop()

    result = Session(_config(tiny_llama, out / "lora", {"name": "lora", "r": 4}, max_steps=8),
                     control=control).run(sink=sink)
    assert result.status == "stopped", result.error
    events += read_events(result.run_dir / "events.jsonl")
    return events


def test_every_written_event_matches_its_kind(written):
    found = [p for e in written for p in problems(e)]
    assert found == []


def test_every_kind_is_written_by_some_run(written):
    assert set(EVENT_KINDS) == {e["type"] for e in written}


def test_a_wrong_event_is_told_what_is_wrong():
    assert problems({"type": "launched", "step": 0, "time": 0.0}) == ["unknown event type 'launched'"]
    assert problems({"type": "checkpoint", "step": 2, "time": 1.0}) == ["checkpoint: missing path"]
    assert problems({"type": "step", "step": 2, "time": 1.0, "loss": "low"}) == ["step.loss: 'low' is not "
                                                                                 "Optional[float]"]
    assert problems({"type": "run_finished", "step": 2, "time": 1.0, "status": "exploded"})[0].startswith(
        "run_finished.status: 'exploded'")
    assert problems([1]) == ["an event is a JSON object, not list"]


def test_describe_is_the_one_line_of_the_window_and_the_cli(written):
    lines = {e["type"]: describe(e) for e in written}
    assert lines["step"] is None and lines["spectra"] is None           # the charts show these
    assert lines["checkpoint"].startswith("checkpoint: ") and "checkpoint-" in lines["checkpoint"]
    assert lines["eval"].startswith("eval at step ") and "loss " in lines["eval"]
    paused = next(e for e in written if e["type"] == "paused")
    assert lines["paused"] == f"paused at step {paused['step']}" and lines["resumed"].startswith("resumed at step ")
    started = next(e for e in written if e["type"] == "run_started")
    assert describe(started).startswith(f"{started['config']['variant']['name']}: ")
    assert "training examples on cpu (fp32)" in describe(started)
    assert describe({"type": "run_finished", "step": 3, "time": 0, "status": "failed", "error": "boom"}) == \
        "run failed at step 3: boom"
