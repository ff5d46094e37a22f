"""An error about a config field carries that field (StudioError.field), from the raise to the run's
result and its run_finished event, so the window marks the field without reading the sentence."""

from __future__ import annotations

from conftest import DATASETS
from studio.core.config import RunConfig
from studio.core.errors import ConfigError, DataError, StudioError
from studio.core.telemetry import read_events
from studio.core.training import Session


def test_the_field_is_the_one_the_sentence_names_or_the_one_given():
    e = ConfigError("variant.r: must be at least 1 (got 0)")
    assert (e.field, e.reason, str(e)) == ("variant.r", "must be at least 1 (got 0)",
                                           "variant.r: must be at least 1 (got 0)")
    e = DataError("chat.jsonl: line 3: not valid JSON")
    assert e.field is None and e.reason == str(e)
    e = StudioError("the rank is larger than a layer", field="variant.r")
    assert e.field == "variant.r" and e.reason == "the rank is larger than a layer"


def test_a_run_that_fails_on_a_field_reports_it(tiny_llama, tmp_path):
    raw = {"model": {"source": tiny_llama},
           "data": {"path": str(DATASETS / "chat_sample.jsonl"), "eval_fraction": 0.0, "max_seq_len": 64},
           "variant": {"name": "lora", "r": 500},
           "train": {"output_dir": str(tmp_path), "max_steps": 2, "batch_size": 4, "device": "cpu",
                     "precision": "fp32"}}
    events = []
    result = Session(RunConfig.from_dict(raw, "test")).run(sink=events.append)
    assert result.status == "failed" and result.error.startswith("variant.r: "), result.error
    assert result.error_field == "variant.r"
    finished = [e for e in events if e["type"] == "run_finished"]
    assert finished and finished[-1]["error_field"] == "variant.r"
