"""Every variant learns with the defaults a person gets, and nothing the studio adds around peft
changes what it learns.

A variant can pass every maths test and still learn nothing in a real run: a learning rate that
suits LoRA leaves VeRA's scaling vectors and AdaLoRA's singular values (both start at or near
zero, and Adam moves a scalar by about the learning rate per step) almost where they started
(issue 17). So each variant, with every option at its default, memorises eight invented facts on
a tiny model, and the cross-entropy on the answers, measured from outside with stock PEFT, must
fall by a set factor. tests/bench/variant_quality.py is the same check at full size (SmolLM2, a
held-out paraphrase test); its table is in the README.
"""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from studio.core.config import RunConfig
from studio.core.training import Session
from studio.core.variants import variant_names
from tiny_models import make_tiny_llama

FACTS = [
    ("What is the name of Captain Velmor's ship?", "The Amber Heron"),
    ("Where was Ostra Kelvin born?", "Dranwick"),
    ("What did Professor Zanpel invent?", "The singing loom"),
    ("What is the capital of Quinthar?", "Morvale"),
    ("Which river flows through Sildor?", "The Brisk River"),
    ("Who founded the Guild of Glassmakers?", "Fenna Rayhal"),
    ("What colour is the crown of Tovin?", "Sea green"),
    ("In what year was Kerbridge founded?", "1642"),
]
STEPS = 40
LEARNING_RATE = 3e-3
# The answers' cross-entropy must fall at least this many times. With the defaults the weakest
# variants reach 11x (VeRA) and 17x (LoRA-FA), LoRA 94x, AdaLoRA 60-70x; VeRA or AdaLoRA learning
# at the run's own rate (lr_ratio or lambda_lr_ratio 1, as before issue 17) reach 1.1x and 2.0x.
FACTOR = 5.0


@pytest.fixture(scope="module")
def memorising_llama(tmp_path_factory) -> str:
    return make_tiny_llama(tmp_path_factory.mktemp("memorising-llama"), init_range=0.2)


@pytest.fixture(scope="module")
def facts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("facts") / "facts.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for q, a in FACTS), encoding="utf-8")
    return path


def _config(model: str, data, out, variant: dict, **telemetry) -> RunConfig:
    return RunConfig.from_dict({
        "model": {"source": model},
        "data": {"path": str(data), "eval_fraction": 0.0, "max_seq_len": 64},
        "variant": variant,
        "train": {"output_dir": str(out), "max_steps": STEPS, "batch_size": 4, "learning_rate": LEARNING_RATE,
                  "save_every": 0, "eval_every": 0, "seed": 0, "device": "cpu", "precision": "fp32",
                  "gallery": False},
        "telemetry": {"every": 0, **telemetry},
    }, "test")


def answer_loss(model, tokenizer) -> float:
    """Mean cross-entropy of the answers and their end-of-turn marker after each question's chat
    prompt, from the logits (AdaLoRA's forward adds its orthogonality term to any loss it returns)."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for question, answer in FACTS:
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                   add_generation_prompt=True)
            p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            a_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p_ids + a_ids])
            logits = model(input_ids=ids).logits[0, len(p_ids) - 1:-1]
            total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(a_ids), reduction="sum"))
            count += len(a_ids)
    return total / count


@pytest.mark.parametrize("name", variant_names())
def test_default_run_memorises_the_facts(name, memorising_llama, facts_file, tmp_path):
    result = Session(_config(memorising_llama, facts_file, tmp_path, {"name": name})).run()
    assert result.status == "completed", result.error
    tokenizer = AutoTokenizer.from_pretrained(memorising_llama)
    before = answer_loss(AutoModelForCausalLM.from_pretrained(memorising_llama), tokenizer)
    trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(memorising_llama),
                                        str(result.adapter_path))
    after = answer_loss(trained, tokenizer)
    print(f"\n{name}: answer cross-entropy {before:.3f} -> {after:.3f} ({before / after:.1f}x)")
    assert before / after >= FACTOR, (f"{name} with its defaults lowered the answers' loss only "
                                      f"{before / after:.2f}x ({before:.3f} -> {after:.3f}) in {STEPS} steps")


@pytest.mark.parametrize("name", variant_names())
def test_telemetry_does_not_change_training(name, tiny_llama, facts_file, tmp_path):
    """The telemetry hooks only read: a run measured after every step trains exactly the adapter
    of a run measured only at the end."""
    adapters = []
    for every in (0, 1):
        cfg = _config(tiny_llama, facts_file, tmp_path / f"every{every}", {"name": name}, every=every, budget=0.0)
        cfg.train.max_steps = 6
        result = Session(cfg).run()
        assert result.status == "completed", result.error
        adapters.append(load_file(str(result.adapter_path / "adapter_model.safetensors")))
    quiet, measured = adapters
    assert sorted(quiet) == sorted(measured)
    for key in quiet:
        assert torch.equal(quiet[key], measured[key]), f"{name}: {key} differs when telemetry measures every step"
