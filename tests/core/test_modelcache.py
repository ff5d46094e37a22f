"""The models people already have (studio.core.modelcache, `lora-studio models`): a fake Hugging
Face cache laid out as huggingface_hub lays it out, and an added folder, both in tmp_path."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from studio.cli import main
from studio.core import modelcache
from studio.core.errors import ModelError
from studio.core.models import locate_source

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OLD_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
GGUF_COMMIT = "5555555555555555555555555555555555555555"


def cache_repo(cache: Path, repo_type: str, repo_id: str, files: dict[str, bytes], commit: str = COMMIT,
               ref: str | None = "main") -> Path:
    """One repo as huggingface_hub stores it: blobs named by their hash, snapshots/<commit>/ holding
    relative symlinks to them, refs/<ref> holding the commit. Returns the snapshot folder."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snapshot


def llama_config() -> bytes:
    return json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8}).encode()


@pytest.fixture
def fake_cache(tmp_path) -> dict:
    cache = tmp_path / "hf" / "hub"
    model = cache_repo(cache, "model", "org/tiny-llama", {"config.json": llama_config(),
                                                           "model.safetensors": b"\0" * 1000,
                                                           "tokenizer.json": b"{}"})
    dataset = cache_repo(cache, "dataset", "org/some-data", {"config.json": b"{}", "data.jsonl": b"{}\n"})
    no_config = cache_repo(cache, "model", "org/just-a-readme", {"README.md": b"# hello"})
    gguf_only = cache_repo(cache, "model", "org/tiny-GGUF", {"tiny.Q4_0.gguf": b"GGUF" + b"\0" * 60},
                           commit=GGUF_COMMIT)
    return {"cache": cache, "model": model, "dataset": dataset, "no_config": no_config, "gguf_only": gguf_only}


@pytest.fixture
def added(tmp_path) -> dict:
    """A folder as a person keeps models: a model folder, a loose .gguf, something else."""
    root = tmp_path / "my-models"
    bert = root / "my-bert"
    bert.mkdir(parents=True)
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    (bert / "model.safetensors").write_bytes(b"\0" * 300)
    (root / "qwen.Q8_0.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("train something")
    (root / "readme.txt").write_text("not a model")
    return {"root": root, "bert": bert, "gguf": root / "qwen.Q8_0.gguf"}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A studio home of this test's own, so the added folders start empty."""
    home = tmp_path / "studio-home"
    monkeypatch.setenv("LORA_STUDIO_HOME", str(home))
    return home


def by_name(models: list[dict]) -> dict[str, dict]:
    return {m["name"]: m for m in models}


def test_the_cache_listing_finds_the_models_in_a_fake_cache(fake_cache, home):
    models = modelcache.list_models(extra_folders=[], cache_dir=fake_cache["cache"])
    found = by_name(models)
    # the dataset repo and the repo without config.json are not models to train
    assert set(found) == {"org/tiny-llama", "org/tiny-GGUF/tiny.Q4_0.gguf"}
    llama = found["org/tiny-llama"]
    assert llama["kind"] == "hub-cache"
    assert llama["hub_id"] == "org/tiny-llama"
    assert llama["source"] == str(fake_cache["model"])           # the snapshot folder: trains offline
    assert llama["revision"] == COMMIT[:8] and llama["commit"] == COMMIT and llama["refs"] == ["main"]
    assert llama["size_bytes"] == len(llama_config()) + 1000 + 2
    assert llama["model_type"] == "llama" and llama["architecture"] == "LlamaForCausalLM"
    assert llama["note"] == ""
    assert isinstance(llama["modified"], float)
    gguf = found["org/tiny-GGUF/tiny.Q4_0.gguf"]
    assert gguf["kind"] == "gguf" and gguf["source"] == str(fake_cache["gguf_only"] / "tiny.Q4_0.gguf")
    # what the listing offers is a source model.source accepts, as a local folder or file (no hub)
    assert locate_source(llama["source"]) == ("folder", str(fake_cache["model"]))
    assert locate_source(gguf["source"])[0] == "gguf"


def test_the_cache_is_found_through_the_environment(fake_cache, home, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(fake_cache["cache"].parent))
    assert modelcache.hub_cache_dir() == fake_cache["cache"]
    assert "org/tiny-llama" in by_name(modelcache.list_models())
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_cache["cache"].parent / "elsewhere"))
    models, notes = modelcache.scan_models()
    assert models == [] and len(notes) == 1 and "no Hugging Face cache" in notes[0]


def test_several_revisions_and_a_corrupt_repo(fake_cache, home):
    cache = fake_cache["cache"]
    old = cache_repo(cache, "model", "org/tiny-llama", {"config.json": llama_config(), "model.bin": b"x"},
                     commit=OLD_COMMIT, ref=None)
    broken = cache_repo(cache, "model", "org/broken", {"config.json": llama_config()})
    (broken / "config.json").unlink()
    os.symlink("../../blobs/missing", broken / "config.json")      # a blob that is gone
    (cache / "not-a-repo").mkdir()
    models, notes = modelcache.scan_models(extra_folders=[], cache_dir=cache)
    llamas = [m for m in models if m["name"] == "org/tiny-llama"]
    assert [m["commit"] for m in llamas] == [COMMIT, OLD_COMMIT]      # the one main names first
    assert llamas[1]["source"] == str(old) and llamas[1]["refs"] == []
    assert "pickled" in llamas[1]["note"]
    assert "org/broken" not in by_name(models)
    assert len(notes) == 2 and all("\n" not in n for n in notes)
    assert any("missing" in n for n in notes) and any("not-a-repo" in n for n in notes)


def test_an_unreadable_cache_is_a_note_not_a_traceback(tmp_path, home):
    not_a_folder = tmp_path / "hub"
    not_a_folder.write_text("oops")
    models, notes = modelcache.scan_models(extra_folders=[], cache_dir=not_a_folder)
    assert models == [] and len(notes) == 1 and "could not be read" in notes[0]


def test_an_added_folder_lists_its_model_folders_and_gguf_files(fake_cache, added, home):
    models, notes = modelcache.scan_models(extra_folders=[added["root"]], cache_dir=fake_cache["cache"])
    found = by_name(models)
    assert found["my-bert"]["kind"] == "folder" and found["my-bert"]["source"] == str(added["bert"])
    assert found["my-bert"]["model_type"] == "bert"
    assert found["my-bert"]["size_bytes"] == (added["bert"] / "config.json").stat().st_size + 300
    assert found["qwen.Q8_0.gguf"]["kind"] == "gguf" and found["qwen.Q8_0.gguf"]["size_bytes"] == 104
    assert "notes" not in found and "readme.txt" not in found
    assert notes == []
    # a model folder added itself is listed as it is
    alone = modelcache.list_models(extra_folders=[added["bert"]], cache_dir=fake_cache["cache"])
    assert [m["source"] for m in alone if m["kind"] == "folder"] == [str(added["bert"])]
    # one that is gone is a note
    models, notes = modelcache.scan_models(extra_folders=[added["root"] / "gone"], cache_dir=fake_cache["cache"])
    assert len(notes) == 1 and "no longer exists" in notes[0]


def test_the_filter_matches_every_word(fake_cache, added, home):
    models = modelcache.list_models(extra_folders=[added["root"]], cache_dir=fake_cache["cache"])
    assert [m["name"] for m in modelcache.filter_models(models, "LLAMA")] == ["org/tiny-llama"]
    assert [m["name"] for m in modelcache.filter_models(models, "bert")] == ["my-bert"]
    assert {m["name"] for m in modelcache.filter_models(models, "gguf")} == {"org/tiny-GGUF/tiny.Q4_0.gguf",
                                                                            "qwen.Q8_0.gguf"}
    assert modelcache.filter_models(models, "tiny bert") == []
    assert [m["name"] for m in modelcache.filter_models(models, COMMIT[:6])] == ["org/tiny-llama"]
    assert modelcache.filter_models(models, "  ") == models


def test_added_folders_are_remembered(added, home):
    assert modelcache.added_folders() == []
    stored = modelcache.add_folder(added["root"])
    modelcache.add_folder(str(added["root"]))                     # twice is once
    assert stored == str(added["root"]) and modelcache.added_folders() == [stored]
    assert json.loads((home / modelcache.FOLDERS_FILE).read_text())["folders"] == [stored]
    assert "my-bert" in by_name(modelcache.list_models(cache_dir=home / "no-cache"))
    assert modelcache.remove_folder(added["root"]) == stored
    assert modelcache.added_folders() == []
    assert "my-bert" not in by_name(modelcache.list_models(cache_dir=home / "no-cache"))
    with pytest.raises(ModelError, match="no such folder"):
        modelcache.add_folder(added["root"] / "nowhere")
    with pytest.raises(ModelError, match="not a folder"):
        modelcache.add_folder(added["gguf"])
    with pytest.raises(ModelError, match="not an added folder"):
        modelcache.remove_folder(added["root"])
    (home / modelcache.FOLDERS_FILE).write_text("{not json")     # damaged: read as none
    assert modelcache.added_folders() == []


# -- lora-studio models --------------------------------------------------------------------------

def test_cli_models_json(fake_cache, added, home, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_cache["cache"]))
    assert main(["models", "--json", "--add-folder", str(added["root"])]) == 0
    out, err = capsys.readouterr()
    listed = json.loads(out)
    assert {m["name"] for m in listed} == {"org/tiny-llama", "org/tiny-GGUF/tiny.Q4_0.gguf", "my-bert",
                                           "qwen.Q8_0.gguf"}
    for m in listed:
        assert {"name", "source", "size_bytes", "revision", "kind"} <= set(m)
        assert m["kind"] in ("hub-cache", "folder", "gguf")
    assert by_name(listed)["org/tiny-llama"]["source"] == str(fake_cache["model"])
    assert by_name(listed)["org/tiny-llama"]["revision"] == COMMIT[:8]
    assert "added" in err
    # the folder was remembered: a plain listing finds it again, and the filter narrows it
    assert main(["models", "--json", "--filter", "bert"]) == 0
    assert [m["source"] for m in json.loads(capsys.readouterr().out)] == [str(added["bert"])]
    assert main(["models", "--remove-folder", str(added["root"]), "--json"]) == 0
    assert "my-bert" not in by_name(json.loads(capsys.readouterr().out))


def test_cli_models_table(fake_cache, home, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_cache["cache"]))
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "REVISION", "SOURCE"]
    row = next(line for line in lines if line.startswith("org/tiny-llama "))
    assert f"{COMMIT[:8]} (main)" in row and row.endswith(str(fake_cache["model"])) and " 1.08 kB " in row
    assert main(["models", "--filter", "nothing-like-this"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no models matching 'nothing-like-this'" in err


def test_cli_models_bad_folder(tmp_path, home, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-cache"))
    assert main(["models", "--add-folder", str(tmp_path / "nowhere")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"lora-studio: error: {tmp_path / 'nowhere'}: no such folder\n"
    assert modelcache.added_folders() == []
    assert main(["models", "--remove-folder", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("lora-studio: error: ")
