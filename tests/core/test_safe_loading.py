"""Safe loading: only safetensors weights are read, pickles are refused or read with
weights_only, remote code needs the person's say-so, nothing is fetched from the network for a
local model, and a model folder or adapter that is broken or belongs elsewhere is one clear line.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import socket
from pathlib import Path

import pytest

from conftest import ROOT
from studio.cli import main
from studio.core.errors import ModelError
from studio.core.models import check_model_folder, load_model, resolve_source
from studio.core.safeload import adapter_base_mismatch, safetensors_error
from tiny_models import make_tiny_llama

DEFAULT = ROOT / "resources" / "configs" / "default.toml"


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and line.startswith("lora-studio: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def train_args(model, out, *extra):
    return ["train", DEFAULT, "--set", f"model.source={model}", "--set", f"train.output_dir={out}",
            "--set", "train.max_steps=1", "--set", "data.max_seq_len=64", "--set", "train.eval_every=0",
            "--set", "train.gallery=false", *extra]


@pytest.fixture
def model_copy(tiny_llama, tmp_path):
    def make(name="model"):
        folder = tmp_path / name
        shutil.copytree(tiny_llama, folder)
        return folder
    return make


# -- model folders ---------------------------------------------------------------------------------

def _to_pickle(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file

    for path in folder.glob("*.safetensors"):
        torch.save(load_file(str(path)), folder / "pytorch_model.bin")
        path.unlink()


def _no_weights(folder: Path) -> None:
    for path in folder.glob("*.safetensors"):
        path.unlink()


def _corrupt(folder: Path) -> None:
    for path in folder.glob("*.safetensors"):
        path.write_bytes(os.urandom(2000))


def _truncate(folder: Path) -> None:
    for path in folder.glob("*.safetensors"):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


def _bad_config(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "llama",\n  "hidden_size": }\n')


def _remote_code(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "evil"    # not a type transformers has: only the shipped code could build it
    config["auto_map"] = {"AutoConfig": "modeling_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))


BAD_MODELS = {
    "pickled weights": (_to_pickle, r"pytorch_model\.bin, a pickle file; LoRA Studio reads only \.safetensors"),
    "no weights": (_no_weights, r"no weight files in .* \(expected model\.safetensors\)"),
    "corrupt safetensors": (_corrupt, r"model\.safetensors: not a valid safetensors file"),
    "truncated safetensors": (_truncate, r"model\.safetensors: not a valid safetensors file"),
    "bad config.json": (_bad_config, r"config\.json: not valid JSON at line 2"),
    "remote code": (_remote_code, r"needs its own Python code .*model\.trust_remote_code = true only if you trust"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model_folders_are_one_line_exit_2(case, model_copy, tmp_path, capsys):
    mutate, pattern = BAD_MODELS[case]
    folder = model_copy()
    mutate(folder)
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, *train_args(folder, out))
    assert code == 2, err
    line = one_line_error(err)
    assert line.startswith("lora-studio: error: model.source: ")
    assert re.search(pattern, line), line
    assert not out.exists() or not any(out.iterdir()), "bad input leaves no run folder"


def test_pickled_weights_are_never_unpickled(model_copy, monkeypatch):
    """The refusal happens before any reader sees the file: torch.load is not even called."""
    import torch

    folder = model_copy()
    _to_pickle(folder)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(ModelError, match="a pickle file"):
        resolve_source(str(folder))


def test_auto_map_of_a_type_transformers_has_is_not_remote_code(model_copy):
    """Phi-3 and friends keep auto_map from their remote-code days; transformers builds them itself."""
    folder = model_copy()
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_llama.LlamaForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    said = []
    check_model_folder(folder, str(folder), progress=said.append)
    assert said == []


def test_remote_code_when_allowed_is_announced(model_copy):
    folder = model_copy()
    _remote_code(folder)
    said = []
    check_model_folder(folder, str(folder), trust_remote_code=True, progress=said.append)
    assert said and said[0].startswith("warning: model.trust_remote_code is on")


def test_load_model_reads_only_safetensors_and_never_the_network(tiny_llama, monkeypatch):
    """load_model asks transformers for safetensors and local files only."""
    from transformers import AutoModelForCausalLM

    seen = {}
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, path, **kwargs):
        seen.update(kwargs)
        return real(cls, path, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    load_model(resolve_source(tiny_llama), "causal-lm")
    assert seen["use_safetensors"] is True and seen["local_files_only"] is True
    assert seen["trust_remote_code"] is False


def test_a_whole_run_export_and_gallery_without_any_network(tiny_llama, tmp_path, capsys, monkeypatch):
    """With every socket refused, a local model trains, lands in the gallery and exports."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    out = tmp_path / "runs"
    args = train_args(tiny_llama, out, "--set", "train.gallery=true", "--set", "train.max_steps=2")
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    run_dir = next(out.iterdir())
    code, _, err = run_cli(capsys, "export", run_dir, "--merged", tmp_path / "merged")
    assert code == 0, err
    assert (tmp_path / "merged" / "model.safetensors").is_file()


# -- the Trainer's pickled checkpoint files ---------------------------------------------------------

class _Exploit:
    """What a tampered optimizer.pt could hold: unpickling it would create a file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_tampered_checkpoint_pickle_is_refused_not_run(tiny_llama, tmp_path, capsys):
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, *train_args(tiny_llama, out, "--set", "train.max_steps=2",
                                               "--set", "train.save_every=1"))
    assert code == 0, err
    run_dir = next(out.iterdir())
    # make it a run that died after checkpoint-1, whose optimizer state was replaced
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-2")
    shutil.rmtree(run_dir / "adapter")
    lines = (run_dir / "events.jsonl").read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if json.loads(line)["type"] == "checkpoint")
    (run_dir / "events.jsonl").write_text("".join(lines[: cut + 1]))
    marker = tmp_path / "pwned"
    with open(run_dir / "checkpoints" / "checkpoint-1" / "optimizer.pt", "wb") as f:
        pickle.dump({"state": _Exploit(str(marker))}, f)
    code, _, err = run_cli(capsys, "train", "--resume", run_dir)
    assert not marker.exists(), "unpickling ran code from the checkpoint"
    assert code != 0
    line = one_line_error(err)
    assert "optimizer.pt" in line, line


# -- adapters --------------------------------------------------------------------------------------

def test_adapter_shapes_are_checked_against_the_base_from_the_headers(tiny_llama, tmp_path, capsys):
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, *train_args(tiny_llama, out))
    assert code == 0, err
    adapter = next(out.iterdir()) / "adapter"
    assert adapter_base_mismatch(adapter, Path(tiny_llama)) is None
    other = make_tiny_llama(tmp_path / "other", hidden=32)
    reason = adapter_base_mismatch(adapter, Path(other))
    assert reason and "different base model" in reason and "64->" in reason
    assert safetensors_error(adapter / "adapter_model.safetensors") is None


@pytest.fixture
def trained_adapter(tiny_llama, tmp_path, capsys):
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, *train_args(tiny_llama, out))
    assert code == 0, err
    return next(out.iterdir()) / "adapter"


def _damaged_copy(adapter: Path, where: Path, cut: bool) -> Path:
    folder = where / ("cut" if cut else "noise")
    shutil.copytree(adapter, folder)
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300] if cut else os.urandom(600))
    return folder


@pytest.mark.parametrize("cut", [True, False], ids=["truncated", "noise"])
def test_damaged_adapters_are_refused_by_import_and_export(trained_adapter, tmp_path, capsys, cut):
    from studio.core.gallery import Gallery

    before = [e.name for e in Gallery().entries()]
    folder = _damaged_copy(trained_adapter, tmp_path, cut)
    code, _, err = run_cli(capsys, "gallery", "import", folder, "--name", "damaged")
    assert code == 2
    assert "adapter_model.safetensors: not a valid safetensors file" in one_line_error(err)
    assert [e.name for e in Gallery().entries()] == before
    code, _, err = run_cli(capsys, "export", folder, "--adapter", tmp_path / "out")
    assert code == 2 and "not a valid safetensors file" in one_line_error(err)
    assert not (tmp_path / "out").exists()


def test_an_adapter_for_another_base_is_refused_by_name_of_layer(trained_adapter, tmp_path, capsys):
    other = make_tiny_llama(tmp_path / "other", hidden=32)
    code, _, err = run_cli(capsys, "gallery", "import", trained_adapter, "--base", other, "--name", "elsewhere")
    assert code == 2
    line = one_line_error(err)
    assert "belongs to a different base model" in line and "layer model.layers." in line
