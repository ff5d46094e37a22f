"""From outside: a CLI run's last `spectra` event against singular values computed directly from
the adapter it saved, layer by layer.

The reference never touches studio code: the saved adapter is loaded with stock peft
(PeftModel.from_pretrained on the base read by transformers), merged, and σ(W_merged − W0) is
taken densely in float64. For LoRA it is also computed straight from the safetensors file
(σ(alpha/r · B·A)). One run goes through the installed console script in a subprocess, the others
through `studio.cli.main` in-process (the same code, without paying for a second torch import).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studio.cli import main
from studio.core.telemetry import read_events
from test_telemetry import rel_err

from conftest import ROOT

DEFAULT = ROOT / "resources" / "configs" / "default.toml"
TOL = 1e-5


def _args(tiny_llama, out, variant: dict) -> list[str]:
    sets = [f"model.source={tiny_llama}", f"train.output_dir={out}", "train.max_steps=5", "data.max_seq_len=64",
            "train.eval_every=0", "train.learning_rate=0.005", "telemetry.every=2",
            "telemetry.budget=0", "train.precision=fp32"]   # compared with an fp32 base below
    sets += [f"variant.{k}={v}" for k, v in variant.items()]
    return ["train", str(DEFAULT), *[x for s in sets for x in ("--set", s)]]


def _last_spectra(run_dir: Path) -> dict:
    spectra = [e for e in read_events(run_dir / "events.jsonl") if e["type"] == "spectra"]
    assert spectra and spectra[-1]["final"] and spectra[-1]["step"] == 5
    return spectra[-1]["layers"]


def _stock_deltas(tiny_llama, adapter: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    w0 = {n: p.detach().double().clone() for n, p in base.named_parameters()}
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    out = {}
    for n, p in merged.named_parameters():
        if n.endswith("proj.weight"):
            out[n.removesuffix(".weight")] = p.detach().double() - w0[n]
    return out


def _compare(layers: dict, deltas: dict, kinds=("exact",)) -> float:
    assert set(layers) == set(deltas)
    worst = 0.0
    for name, delta in deltas.items():
        assert layers[name]["kind"] in kinds
        worst = max(worst, rel_err(layers[name]["sv"], torch.linalg.svdvals(delta)))
    return worst


def test_console_script_lora_spectra_match_the_saved_adapter(tiny_llama, tmp_path):
    from safetensors.torch import load_file

    exe = Path(sys.executable).with_name("lora-studio")
    proc = subprocess.run([str(exe), *_args(tiny_llama, tmp_path / "runs", {"name": "lora", "r": 4, "alpha": 8})],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    layers = _last_spectra(run_dir)
    # the terminal gets a summary of the last telemetry, after the progress lines
    k90 = sorted(v["k90"] for v in layers.values())
    assert "update spectra at step 5 (14 layers): rank holding 90% of ‖ΔW‖² median" in proc.stderr
    assert f"at most {k90[-1]} (" in proc.stderr and "telemetry: " in proc.stderr

    adapter = run_dir / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    worst_file = 0.0
    for name, entry in layers.items():
        a = tensors[f"base_model.model.{name}.lora_A.weight"].double()
        b = tensors[f"base_model.model.{name}.lora_B.weight"].double()
        worst_file = max(worst_file, rel_err(entry["sv"], torch.linalg.svdvals(scale * b @ a)))
    worst_stock = _compare(layers, _stock_deltas(tiny_llama, adapter))
    print(f"\nlora: last spectra vs the safetensors file {worst_file:.1e}, vs stock peft merge {worst_stock:.1e}")
    assert worst_file <= TOL and worst_stock <= TOL


@pytest.mark.parametrize("variant", [
    {"name": "dora", "r": 4, "alpha": 8},
    {"name": "delta-lora", "r": 4, "alpha": 8, "start_step": 1},       # exported as a rank-2r adapter
    {"name": "adalora", "init_r": 6, "target_r": 2, "tinit": 1, "tfinal": 1},
    {"name": "vera", "r": 32},
], ids=lambda v: v["name"])
def test_cli_last_spectra_match_the_saved_adapter(variant, tiny_llama, tmp_path, capsys):
    code = main(_args(tiny_llama, tmp_path / "runs", variant))
    out, err = capsys.readouterr()
    assert code == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    layers = _last_spectra(run_dir)
    worst = _compare(layers, _stock_deltas(tiny_llama, run_dir / "adapter"))
    print(f"\n{variant['name']}: last spectra vs stock peft merge of the saved adapter {worst:.1e}")
    assert worst <= TOL
    if variant["name"] == "delta-lora":   # the total change has rank up to 2r, and used it
        assert max(len(v["sv"]) for v in layers.values()) == 8
