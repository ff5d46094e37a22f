"""Every variant through the same checks (PEFT's test_custom_models pattern): built on a tiny
random Llama (chat data, causal LM) and a tiny random BERT (classification), trained a few steps
by a real Session, saved, reloaded with stock PEFT on the original base, and compared.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import DATASETS
from studio.core.config import RunConfig
from studio.core.export import export_adapter, export_merged
from studio.core.gallery import Gallery
from studio.core.training import Session
from studio.core.variants import variant_names

# variant name -> options for a short run (K and budgets scaled to 6 steps)
VARIANT_CASES = {
    "lora": {"r": 4, "alpha": 8},
    "lora-plus": {"r": 4, "alpha": 8, "lr_ratio": 16.0},
    "vera": {"r": 32, "d_initial": 0.1},
    "lora-fa": {"r": 4, "alpha": 8},
    "lora-drop": {"r": 4, "alpha": 8, "sample_fraction": 0.1, "threshold": 0.9},
    "adalora": {"init_r": 6, "target_r": 2, "alpha": 8, "tinit": 1, "tfinal": 1},
    "dora": {"r": 4, "alpha": 8},
    "delta-lora": {"r": 4, "alpha": 8, "start_step": 2, "update_ratio": 2.0},
}
TASKS = {
    "llama": ("causal-lm", "chat_sample.jsonl"),
    "bert": ("sequence-classification", "classification_sample.csv"),
}
STEPS = 6


def test_every_registered_variant_has_a_case():
    assert sorted(VARIANT_CASES) == sorted(variant_names())


def _config(source: str, task: str, data: str, variant: str, out) -> RunConfig:
    raw = {
        "model": {"source": source, "task": task},
        "data": {"path": str(DATASETS / data), "eval_fraction": 0.0, "max_seq_len": 64},
        "variant": {"name": variant, **VARIANT_CASES[variant]},
        "train": {"output_dir": str(out), "max_steps": STEPS, "batch_size": 4, "learning_rate": 5e-3,
                  "save_every": 0, "eval_every": 0, "seed": 0, "device": "cpu", "precision": "fp32"},
    }
    return RunConfig.from_dict(raw, "test")


def _batch(session: Session, task: str):
    texts = ["The capital of France is Paris.", "Convert 3 kilometres to metres, please!"]
    enc = session.tokenizer(texts, return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@pytest.mark.parametrize("model_kind", list(TASKS))
@pytest.mark.parametrize("variant", list(VARIANT_CASES))
def test_variant_trains_saves_and_reloads_in_stock_peft(variant, model_kind, tiny_llama, tiny_bert, tmp_path,
                                                       recorder):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    task, data = TASKS[model_kind]
    source = tiny_llama if model_kind == "llama" else tiny_bert
    session = Session(_config(source, task, data, variant, tmp_path))
    result = session.run(sink=recorder)
    assert result.status == "completed", result.error
    assert result.exit_code == 0

    # a real run: finite loss that moves, events in order, the run folder as the README's "The run folder" describes it
    losses = [e["loss"] for e in recorder.of("step")]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    assert max(losses) - min(losses) > 1e-4
    started = recorder.of("run_started")[0]
    assert started["trainable_params"] > 0 and started["adapted_layers"]
    assert recorder.events[-1]["type"] == "run_finished"
    for name in ("config.toml", "events.jsonl", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        assert (result.run_dir / name).is_file(), name
    logged = [json.loads(line)["type"] for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    assert logged[-1] == "run_finished" and "run_started" in logged

    # stock PEFT on the original base reproduces the trained model
    batch = _batch(session, task)
    trained = session.model.eval()
    with torch.no_grad():
        expected = trained(**batch).logits
    if task == "causal-lm":
        base = AutoModelForCausalLM.from_pretrained(source)
    else:
        labels = trained.config.id2label
        base = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=len(labels), id2label=labels, label2id={v: k for k, v in labels.items()})
    reloaded = PeftModel.from_pretrained(base, str(result.adapter_path)).eval()
    with torch.no_grad():
        got = reloaded(**batch).logits
    assert (got - expected).abs().max().item() <= 1e-5

    # the run joined the gallery; exported from there, the adapter alone (stock PEFT) and the
    # merged model (stock transformers, no PEFT) both give the trained model's logits
    entry = Gallery().get(result.gallery_entry)
    assert entry.variant == variant
    alone = export_adapter(entry, tmp_path / "exported-adapter")
    auto = AutoModelForCausalLM if task == "causal-lm" else AutoModelForSequenceClassification
    base = auto.from_pretrained(source) if task == "causal-lm" else auto.from_pretrained(
        source, num_labels=len(labels), id2label=labels, label2id={v: k for k, v in labels.items()})
    with torch.no_grad():
        got = PeftModel.from_pretrained(base, str(alone)).eval()(**batch).logits
    assert (got - expected).abs().max().item() <= 1e-4
    merged_dir = export_merged(entry, tmp_path / "merged")
    assert not (merged_dir / "adapter_config.json").exists()
    with torch.no_grad():
        got = auto.from_pretrained(str(merged_dir)).eval()(**batch).logits
    assert (got - expected).abs().max().item() <= 1e-4


def test_adalora_rank_count_reaches_budget_in_a_session(tiny_llama, tmp_path, recorder):
    """AdaLoRA inside a real Session: the callback prunes to target_r per module by the end."""
    cfg = _config(tiny_llama, "causal-lm", "chat_sample.jsonl", "adalora", tmp_path)
    session = Session(cfg)
    assert session.run(sink=recorder).status == "completed"
    model = session.model
    n_modules = len(recorder.of("run_started")[0]["adapted_layers"])
    pattern = model.peft_config["default"].rank_pattern
    kept = sum(sum(bool(x) for x in mask) for mask in pattern.values())
    assert kept == VARIANT_CASES["adalora"]["target_r"] * n_modules
