"""A ninth variant needs nothing but a new module in studio/core/variants/.

The test copies the `studio` package into a temporary folder, drops one new module into its
variants/ folder (a LoRA whose B learns at its own multiple of the learning rate), and changes no
other file. A fresh Python process on that copy then takes the variant through every face:

- the CLI lists it with its option (`lora-studio variants`, text and --json);
- the window's Variant panel offers it and builds its form, option included;
- a run, configured from that form's values, trains it (the engine);
- `lora-studio train` trains it too, and its adapter lands in the gallery under its name;
- `lora-studio export --adapter` writes it, and the exported folder, reloaded here with stock
  PEFT on the original base, gives the logits of the in-memory model the run trained.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import DATASETS, ROOT

NINTH = '''
"""Half-rate LoRA (a test variant): LoRA whose B learns at b_ratio times A's learning rate."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option
from .base import Variant, register
from .lora import LoraOptions, lora_init_kwargs


@dataclass
class NinthOptions(LoraOptions):
    b_ratio: float = option(4.0, "Learning rate of B as a multiple of A's", min=0.5, max=64.0)


class Ninth(Variant):
    name = "ninth-lora"
    title = "Ninth LoRA"
    description = "LoRA whose B learns at its own multiple of the learning rate (a test variant)."
    paper = "A test of the variant registry"
    options_cls = NinthOptions

    def build(self, model, opts, ctx):
        from peft import get_peft_model

        return get_peft_model(model, self.lora_config(opts, ctx, **lora_init_kwargs(opts)))

    def make_optimizer(self, model, opts, ctx):
        return self.adamw_with_ratios(model, ctx, {"lora_B": opts.b_ratio})


register(Ninth())
'''

DRIVER = '''
import contextlib, io, json, os, sys
from pathlib import Path

import studio
out = Path(sys.argv[1])
tiny, data = sys.argv[2], sys.argv[3]
report = {"studio": studio.__file__}

from studio.cli import main

def cli(*args):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([str(a) for a in args])
    return code, buf.getvalue()

code, text = cli("variants")
report["variants"] = [line.split()[0] for line in text.splitlines() if line.strip()]
code, text = cli("variants", "--json")
report["options"] = [f["name"] for f in json.loads(text)["ninth-lora"]["options"]]

os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtWidgets import QApplication
from studio.ui.panels import VariantPanel
app = QApplication([])
panel = VariantPanel()
report["combo"] = [panel.combo.itemText(i) for i in range(panel.combo.count())]
panel.combo.setCurrentText("ninth-lora")
values = panel.values()
values.update({"r": 4, "alpha": 8, "b_ratio": 2.0})
panel.set_values(values)
report["form"] = panel.values()

import torch
from studio.core.config import RunConfig
from studio.core.training import Session

raw = {"model": {"source": tiny}, "data": {"path": data, "eval_fraction": 0.0, "max_seq_len": 64},
       "variant": panel.values(),
       "train": {"output_dir": str(out / "runs"), "max_steps": 3, "batch_size": 4, "learning_rate": 5e-3,
                 "save_every": 0, "eval_every": 0, "seed": 0, "device": "cpu", "precision": "fp32"}}
session = Session(RunConfig.from_dict(raw, "form"))
result = session.run()
report["run"] = [result.status, result.error]
enc = session.tokenizer(["The capital of France is Paris."], return_tensors="pt")
session.model.eval()
with torch.no_grad():
    torch.save(session.model(**enc).logits, out / "logits.pt")
report["entry"] = result.gallery_entry

code, text = cli("train", sys.argv[4], "--set", f"model.source={tiny}",
                 "--set", f"data.path={data}", "--set", "data.max_seq_len=64", "--set", "train.max_steps=2",
                 "--set", "train.eval_every=0", "--set", f"train.output_dir={out / 'cli-runs'}",
                 "--set", "variant.name=ninth-lora", "--set", "variant.r=4", "--set", "variant.b_ratio=8")
report["cli_train"] = code
code, text = cli("gallery", "list", "--json")
report["gallery"] = {e["name"]: e.get("variant") for e in json.loads(text)}
code, text = cli("export", report["entry"], "--adapter", out / "exported")
report["export"] = code
(out / "report.json").write_text(json.dumps(report))
'''


def test_a_ninth_variant_is_one_new_module(tiny_llama, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "studio", copy / "studio", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "studio" / "core" / "variants" / "ninth.py").write_text(NINTH, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy), *sys.path])}
    proc = subprocess.run([sys.executable, str(driver), str(out), tiny_llama, str(DATASETS / "chat_sample.jsonl"),
                           str(ROOT / "resources" / "configs" / "default.toml")],
                          cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert Path(report["studio"]).is_relative_to(copy)          # the copy, not the checkout

    # the CLI and the window list it, after the eight, with its own option
    eight = ["lora", "lora-plus", "vera", "lora-fa", "lora-drop", "adalora", "dora", "delta-lora"]
    assert report["variants"] == eight + ["ninth-lora"]
    assert "b_ratio" in report["options"]
    assert report["combo"] == eight + ["ninth-lora"]
    assert report["form"]["name"] == "ninth-lora" and report["form"]["b_ratio"] == 2.0

    # a run from the form's values, and one from the CLI, land in the gallery under its name
    assert report["run"] == ["completed", None]
    assert report["cli_train"] == 0
    assert report["gallery"][report["entry"]] == "ninth-lora"
    assert list(report["gallery"].values()).count("ninth-lora") == 2

    # export writes a stock PEFT adapter that reproduces the in-memory model
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert report["export"] == 0
    exported = out / "exported"
    config = json.loads((exported / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(exported)).eval()
    enc = AutoTokenizer.from_pretrained(tiny_llama)(["The capital of France is Paris."], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    expected = torch.load(out / "logits.pt")
    assert torch.allclose(logits, expected, atol=1e-5), (logits - expected).abs().max()
    # and the adapter trained: B moved away from its zero start
    from safetensors.torch import load_file

    weights = load_file(str(exported / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in weights.items())


@pytest.fixture(autouse=True)
def _no_leak():
    """The ninth variant lives only in the copy: this process's registry still holds the eight."""
    yield
    from studio.core.variants import variant_names

    assert "ninth-lora" not in variant_names()
