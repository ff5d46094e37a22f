"""The adapter gallery and what it does with adapters (issue 5): the store, export (adapter and
merged), combine, resize and the playground, through the core API and the CLI. Every written
adapter or model is reloaded with stock PEFT / transformers and compared numerically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import DATASETS
from studio.core import combine as combining
from studio.core import export
from studio.core import resize as resizing
from studio.core.config import RunConfig
from studio.core.errors import Cancelled, InputError
from studio.core.gallery import Gallery, GalleryError, check_name
from studio.core.playground import Playground
from studio.core.training import Session

TEXTS = ["The capital of France is Paris.", "Convert 3 kilometres to metres, please!"]


def _train(source: str, out: Path, variant: str, task: str = "causal-lm", steps: int = 4, seed: int = 0,
           **opts) -> Session:
    data = "chat_sample.jsonl" if task == "causal-lm" else "classification_sample.csv"
    raw = {"model": {"source": source, "task": task},
           "data": {"path": str(DATASETS / data), "eval_fraction": 0.0, "max_seq_len": 64},
           "variant": {"name": variant, **opts},
           "train": {"output_dir": str(out), "max_steps": steps, "batch_size": 4, "learning_rate": 5e-3,
                     "save_every": 0, "eval_every": 0, "seed": seed, "device": "cpu", "precision": "fp32"}}
    session = Session(RunConfig.from_dict(raw, "test"))
    result = session.run()
    assert result.status == "completed", result.error
    return session


@pytest.fixture(scope="module")
def trained(tiny_llama, tmp_path_factory, studio_home):
    """Four adapters on the tiny Llama, trained by real Sessions (which add them to the gallery)."""
    import os

    os.environ["LORA_STUDIO_HOME"] = str(studio_home)
    out = tmp_path_factory.mktemp("gallery-runs")
    runs = {"lora": _train(tiny_llama, out, "lora", r=4, alpha=8),
            "lora-b": _train(tiny_llama, out, "lora", seed=1, r=4, alpha=8),
            "lora-r8": _train(tiny_llama, out, "lora", seed=2, r=8, alpha=16),
            "dora": _train(tiny_llama, out, "dora", r=4, alpha=8),
            "vera": _train(tiny_llama, out, "vera", r=32)}
    return runs


def _entry(session: Session):
    return Gallery().get(session.gallery_entry)


def _logits(model, tokenizer):
    enc = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model.eval()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits


def _stock_peft(base_path: str, adapter: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(adapter)).eval()


# -- the store -------------------------------------------------------------------------------------

def test_a_finished_run_adds_itself_with_its_record(trained, tiny_llama):
    session = trained["lora"]
    entry = _entry(session)
    assert entry.variant == "lora" and entry.rank == 4 and entry.task == "causal-lm"
    assert entry.base_model == tiny_llama and entry.base_fingerprint
    assert entry.source_run == str(session.run_dir)
    assert len(entry.loss_history) == 4 and entry.final_loss == pytest.approx(entry.loss_history[-1])
    assert entry.size_bytes > 0 and entry.created and entry.meta["status"] == "completed"
    for name in ("adapter_config.json", "adapter_model.safetensors", "studio.json", "tokenizer_config.json"):
        assert (entry.path / name).is_file(), name
    assert {"spectra", "importance"} <= set(entry.telemetry())
    finished = [json.loads(line) for line in (session.run_dir / "events.jsonl").read_text().splitlines()][-1]
    assert finished["type"] == "run_finished" and finished["gallery_entry"] == entry.name
    assert entry.name in [e.name for e in Gallery().entries()]


def test_gallery_false_keeps_the_run_out(tiny_llama, tmp_path):
    before = {e.name for e in Gallery().entries()}
    raw = {"model": {"source": tiny_llama}, "data": {"path": str(DATASETS / "chat_sample.jsonl"), "max_seq_len": 32,
                                                      "eval_fraction": 0.0},
           "variant": {"name": "lora", "r": 2},
           "train": {"output_dir": str(tmp_path), "max_steps": 1, "save_every": 0, "eval_every": 0, "device": "cpu",
                     "precision": "fp32", "gallery": False}}
    result = Session(RunConfig.from_dict(raw, "test")).run()
    assert result.status == "completed" and result.gallery_entry is None
    assert {e.name for e in Gallery().entries()} == before


@pytest.mark.parametrize("bad", ["../evil", "a/b", "..", "a\\b", ".hidden", "", " x", "x" * 81, "ok.", "tab\there"])
def test_names_that_are_not_plain_names_are_rejected(bad):
    with pytest.raises(GalleryError):
        check_name(bad)


def test_path_escapes_change_nothing(trained, tmp_path):
    gallery = Gallery()
    entry = _entry(trained["lora-b"])
    listing = sorted(p.name for p in gallery.root.iterdir())
    for bad in ("../escaped", "../../escaped", "sub/dir"):
        with pytest.raises(GalleryError, match="not a path"):
            gallery.rename(entry.name, bad)
        with pytest.raises(GalleryError):
            gallery.add_run(trained["lora-b"].run_dir, name=bad)
        with pytest.raises(GalleryError):
            gallery.get(bad)
    assert sorted(p.name for p in gallery.root.iterdir()) == listing
    assert not (gallery.root.parent / "escaped").exists()


def test_rename_annotate_delete(trained):
    gallery = Gallery()
    copy = gallery.add_run(trained["lora-b"].run_dir, name="to rename")
    renamed = gallery.rename(copy.name, "renamed adapter")
    assert not (gallery.root / "to rename").exists() and renamed.meta["name"] == "renamed adapter"
    noted = gallery.annotate(renamed.name, "good at capitals")
    assert gallery.get(noted.name).notes == "good at capitals"
    with pytest.raises(GalleryError, match="already exists"):
        gallery.rename(noted.name, _entry(trained["lora"]).name)
    gallery.delete(noted.name)
    assert not (gallery.root / "renamed adapter").exists()
    assert not [p for p in gallery.root.iterdir() if p.name.startswith(".renamed")]
    with pytest.raises(GalleryError, match="no adapter named"):
        gallery.get("renamed adapter")


def test_import_a_stock_peft_folder(tiny_llama, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(str(tmp_path / "made-elsewhere"))
    entry = Gallery().import_folder(tmp_path / "made-elsewhere")
    assert entry.variant == "lora" and entry.rank == 2 and entry.base_model == tiny_llama
    assert entry.base_fingerprint     # a local base is fingerprinted at import
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "adapter_config.json").write_text((tmp_path / "made-elsewhere" / "adapter_config.json")
                                                              .read_text())
    (tmp_path / "pickled" / "adapter_model.bin").write_bytes(b"not read")
    with pytest.raises(GalleryError, match="pickle"):
        Gallery().import_folder(tmp_path / "pickled")
    with pytest.raises(GalleryError, match="no adapter_config.json"):
        Gallery().import_folder(tmp_path)


# -- export ----------------------------------------------------------------------------------------

def test_export_adapter_alone_loads_in_stock_peft(trained, tmp_path):
    session = trained["lora"]
    out = export.export_adapter(_entry(session), tmp_path / "adapter-out")
    expected = _logits(session.model, session.tokenizer)
    got = _logits(_stock_peft(_entry(session).meta["base_path"], out), session.tokenizer)
    assert (got - expected).abs().max().item() <= 1e-4


def test_export_merged_is_a_plain_transformers_folder(trained, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    session = trained["dora"]
    seen = []
    out = export.export_merged(_entry(session), tmp_path / "merged", progress=lambda m, f=None: seen.append(f))
    for name in ("config.json", "generation_config.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    assert list(out.glob("*.safetensors")) and not list(out.glob("adapter_*"))
    merged = AutoModelForCausalLM.from_pretrained(str(out))
    assert (_logits(merged, AutoTokenizer.from_pretrained(str(out)))
            - _logits(session.model, session.tokenizer)).abs().max().item() <= 1e-4
    fractions = [f for f in seen if f is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


@pytest.mark.parametrize("stop_after", [1, 4, 9])
def test_an_export_stopped_midway_leaves_nothing(trained, tmp_path, stop_after):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > stop_after

    with pytest.raises(Cancelled):
        export.export_merged(_entry(trained["lora"]), tmp_path / "out", should_stop=should_stop)
    assert list(tmp_path.iterdir()) == []


def test_an_export_stopped_after_the_weights_were_written_leaves_nothing(trained, tmp_path):
    seen = []

    def should_stop():   # stop once the temporary folder holds the merged weights
        seen.extend(tmp_path.glob(".out.*/*.safetensors"))
        return bool(seen)

    with pytest.raises(Cancelled):
        export.export_merged(_entry(trained["lora"]), tmp_path / "out", should_stop=should_stop)
    assert seen and list(tmp_path.iterdir()) == []


def test_an_export_that_crashes_while_writing_leaves_nothing(trained, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    def crash(self, folder, *args, **kwargs):
        (Path(folder) / "model.safetensors").write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", crash)
    with pytest.raises(OSError):
        export.export_merged(_entry(trained["lora"]), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_folder_in_use(trained, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export.export_adapter(_entry(trained["lora"]), tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    with pytest.raises(InputError, match="outside the gallery"):
        export.export_adapter(_entry(trained["lora"]), Gallery().root / "inside")


def test_export_never_replaces_what_it_must_not(trained, tmp_path, studio_home):
    entry = _entry(trained["lora"])
    count = len(Gallery().entries())
    for target in (studio_home, Gallery().root.parent, entry.path.parent, Path(entry.meta["base_path"])):
        with pytest.raises(InputError):
            export.export_adapter(entry, target, overwrite=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="not a model or adapter folder"):
        export.export_merged(entry, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert len(Gallery().entries()) == count and (Path(entry.meta["base_path"]) / "config.json").is_file()
    # an earlier export is replaced when asked
    export.export_adapter(entry, tmp_path / "again")
    assert export.export_adapter(entry, tmp_path / "again", overwrite=True) == (tmp_path / "again").resolve()


def test_the_pad_token_is_read_from_the_tokenizer_files(trained):
    session = trained["lora"]
    files = export.tokenizer_files(_entry(session), export.resolve_base(_entry(session)))
    assert {f.name for f in files} >= {"tokenizer.json", "tokenizer_config.json"}
    assert export.pad_token_id(files) == session.tokenizer.pad_token_id is not None


def test_a_bare_peft_classifier_folder_is_known_as_a_classifier(tiny_bert, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3),
                           LoraConfig(r=2, target_modules=["query", "value"], task_type="SEQ_CLS"))
    model.save_pretrained(str(tmp_path / "cls"))
    entry = export.entry_from(str(tmp_path / "cls"))
    assert entry.task == "sequence-classification" and entry.variant == "lora"
    assert export._head_size(entry) == 3
    with pytest.raises(GalleryError, match="no such folder"):
        export.entry_from(str(tmp_path / "typo"))


def test_delete_twice_under_the_same_name(trained):
    gallery = Gallery()
    for _ in range(2):
        gallery.add_run(trained["lora-b"].run_dir, name="short lived")
        gallery.delete("short lived")
    assert not [p for p in gallery.root.iterdir() if p.name.startswith(".short lived")]


# -- combine ---------------------------------------------------------------------------------------

def _deltas(model) -> dict:
    from studio.core.telemetry.updates import peft_updates

    return {u.name: u.lowrank() for u in peft_updates(model)}


def test_combine_cat_is_the_weighted_sum_and_loads_in_stock_peft(trained):
    a, b = _entry(trained["lora"]), _entry(trained["lora-b"])
    combined = combining.combine([a, b], [1.0, -0.5], method="cat")
    assert combined.rank == 8 and combined.meta["derived_from"]["combine"] == [a.name, b.name]
    base_path = a.meta["base_path"]
    got = _deltas(_stock_peft(base_path, combined.path))
    da, db = _deltas(_stock_peft(base_path, a.path)), _deltas(_stock_peft(base_path, b.path))
    assert got.keys() == da.keys()
    for name in got:
        assert torch.allclose(got[name], da[name] - 0.5 * db[name], atol=1e-6)


@pytest.mark.parametrize("method", ["linear", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune"])
def test_every_combination_method_gives_an_adapter_stock_peft_loads(trained, method):
    a, b = _entry(trained["lora"]), _entry(trained["lora-b"])
    combined = combining.combine([a, b], [0.7, 0.3], method=method, density=0.5)
    model = _stock_peft(a.meta["base_path"], combined.path)
    logits = _logits(model, trained["lora"].tokenizer)
    assert torch.isfinite(logits).all()
    assert any(d.abs().max() > 0 for d in _deltas(model).values())


def test_incompatible_sets_are_refused_with_a_reason(trained):
    lora, r8 = _entry(trained["lora"]), _entry(trained["lora-r8"])
    dora, vera = _entry(trained["dora"]), _entry(trained["vera"])
    assert "equal rank" in combining.combine_problem([lora, r8], "linear")
    assert combining.combine_problem([lora, r8], "cat") is None
    assert "DoRA" in combining.combine_problem([lora, dora], "svd")
    assert "vera" in combining.combine_problem([vera, lora], "cat")
    assert "at least two" in combining.combine_problem([lora], "cat")
    other = export.Entry("other", lora.path, dict(lora.meta, base_model="elsewhere", base_fingerprint="0" * 16),
                         lora.config)
    assert "same base model" in combining.combine_problem([lora, other], "cat")
    before = {e.name for e in Gallery().entries()}
    with pytest.raises(GalleryError, match="equal rank"):
        combining.combine([lora, r8], [1, 1], method="linear")
    assert {e.name for e in Gallery().entries()} == before


def test_a_stopped_combine_leaves_no_entry(trained):
    gallery = Gallery()
    before = sorted(p.name for p in gallery.root.iterdir())
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(Cancelled):
        combining.combine([_entry(trained["lora"]), _entry(trained["lora-b"])], [1, 1], method="cat",
                       name="never", should_stop=should_stop)
    assert sorted(p.name for p in gallery.root.iterdir()) == before


# -- resize ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["lora-r8", "dora", "vera"])
def test_resize_at_full_energy_reproduces_the_adapter(trained, which):
    session = trained[which]
    entry = _entry(session)
    curve = resizing.energy_curve(entry)
    assert curve["kept"][-1] == 1.0 and curve["kept"] == sorted(curve["kept"])
    full = resizing.resize(entry, energy=1.0)
    assert full.rank == curve["max_rank"] and full.variant == ("dora" if which == "dora" else "lora")
    assert json.loads((full.path / "adapter_config.json").read_text())["peft_type"] == "LORA"
    got = _logits(_stock_peft(entry.meta["base_path"], full.path), session.tokenizer)
    assert (got - _logits(session.model, session.tokenizer)).abs().max().item() <= 1e-4


def test_resize_to_a_lower_rank_keeps_the_energy_it_reports(trained):
    entry = _entry(trained["lora-r8"])
    curve = resizing.energy_curve(entry)
    share = (curve["kept"][1] + curve["kept"][2]) / 2     # between ranks 2 and 3: needs rank 3
    small = resizing.resize(entry, energy=share)
    assert small.rank == 3
    assert small.meta["derived_from"]["energy_kept"] == pytest.approx(curve["kept"][2])
    model = _stock_peft(entry.meta["base_path"], small.path)
    deltas, full = _deltas(model), _deltas(_stock_peft(entry.meta["base_path"], entry.path))
    kept = sum(float((d ** 2).sum()) for d in deltas.values()) / sum(float((d ** 2).sum()) for d in full.values())
    assert kept == pytest.approx(curve["kept"][2], rel=1e-4)
    for d in deltas.values():
        assert torch.linalg.matrix_rank(d).item() <= 3
    with pytest.raises(InputError, match="above"):
        resizing.resize(entry, rank=curve["max_rank"] + 1)


# -- playground ------------------------------------------------------------------------------------

def test_playground_streams_the_base_and_the_adapted_answer(trained):
    session = trained["lora"]
    pieces = {"base": [], "adapted": []}
    playground = Playground(_entry(session)).load()
    answers = playground.generate("What is the capital of France?", max_new_tokens=6,
                                  on_text=lambda which, text: pieces[which].append(text))
    assert "".join(pieces["base"]) == answers["base"] and "".join(pieces["adapted"]) == answers["adapted"]
    assert len(pieces["adapted"]) >= 2 and answers["base"] != answers["adapted"]
    # the adapted answer is what the trained model itself says, greedily
    tok = session.tokenizer
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        ids = session.model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True) == answers["adapted"]
    with pytest.raises(InputError, match="does not classify"):
        playground.classify("hi")


def test_playground_classifies_with_both_heads(tiny_bert, tmp_path):
    session = _train(tiny_bert, tmp_path, "lora", task="sequence-classification", steps=2, r=4, alpha=8)
    entry = _entry(session)
    assert entry.labels and len(entry.labels) == 3
    result = Playground(entry).load().classify("This product is great, I love it!")
    assert result["labels"] == entry.labels
    for key in ("base", "adapted"):
        assert sum(result[key]) == pytest.approx(1.0, abs=1e-5)
    enc = session.tokenizer(["This product is great, I love it!"], return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(session.model.eval()(**enc).logits, -1)[0]
    assert torch.allclose(torch.tensor(result["adapted"]), expected, atol=1e-5)


# -- the CLI ---------------------------------------------------------------------------------------

def test_cli_gallery_commands(trained, tmp_path, capsys):
    from studio.cli import main

    name = _entry(trained["lora"]).name
    assert main(["gallery", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert name in [e["name"] for e in listed]
    assert main(["gallery", "show", name]) == 0
    assert "variant" in capsys.readouterr().out
    assert main(["gallery", "add", str(trained["lora"].run_dir), "--name", "cli copy"]) == 0
    assert capsys.readouterr().out.strip() == "cli copy"
    assert main(["gallery", "note", "cli copy", "from the CLI"]) == 0
    assert Gallery().get("cli copy").notes == "from the CLI"
    assert main(["gallery", "rename", "cli copy", "../out"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a path" in err and "Traceback" not in err
    assert main(["gallery", "delete", "cli copy"]) == 2           # no terminal to ask on: needs --yes
    assert "--yes" in capsys.readouterr().err
    assert main(["gallery", "delete", "cli copy", "--yes"]) == 0
    assert "cli copy" not in [e.name for e in Gallery().entries()]
    assert main(["gallery", "show", "nope"]) == 2
    assert "no adapter named" in capsys.readouterr().err


def test_cli_export_resize_combine_generate(trained, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from studio.cli import main

    session = trained["lora"]
    name = _entry(session).name
    assert main(["export", name, "--merged", str(tmp_path / "m")]) == 0
    assert Path(capsys.readouterr().out.strip()) == (tmp_path / "m").resolve()
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    assert (_logits(merged, session.tokenizer) - _logits(session.model, session.tokenizer)).abs().max() <= 1e-4
    assert main(["export", name, "--merged", str(tmp_path / "m")]) == 2       # not empty, no --force
    assert "not empty" in capsys.readouterr().err
    assert main(["export", str(session.run_dir), "--adapter", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()
    capsys.readouterr()
    assert main(["resize", name, "--rank", "2", "--name", "cli r2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "cli r2" and "keeps" in captured.err
    assert main(["combine", name, _entry(trained["lora-b"]).name, "--weights", "1,0.5", "--method", "svd",
                 "--name", "cli mix"]) == 0
    assert capsys.readouterr().out.strip() == "cli mix"
    assert main(["combine", name, _entry(trained["vera"]).name, "--method", "cat"]) == 2
    assert "LoRA adapters only" in capsys.readouterr().err
    assert main(["generate", name, "What is the capital of France?", "--max-new-tokens", "4", "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert set(answers) == {"base", "adapted"}


def test_a_resumed_runs_loss_history_has_one_point_per_step(trained, tmp_path):
    """A run killed after step 3 and resumed from checkpoint-2 logs steps 3.. twice; the
    gallery keeps the curve a reader sees (the resumed attempt replaces what followed)."""
    import shutil

    run_dir = tmp_path / "resumed-run"
    shutil.copytree(trained["lora"].run_dir / "adapter", run_dir / "adapter")
    events = [{"type": "run_started", "step": 0, "resumed_from": None},
              *({"type": "step", "step": s, "loss": 10.0 - s} for s in (1, 2, 3)),
              {"type": "run_started", "step": 2, "resumed_from": str(run_dir / "checkpoints" / "checkpoint-2")},
              *({"type": "step", "step": s, "loss": 5.0 - s} for s in (3, 4)),
              {"type": "run_finished", "step": 4, "status": "completed"}]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    entry = Gallery().add_run(run_dir, name="resumed run")
    try:
        assert entry.loss_history == [9.0, 8.0, 2.0, 1.0]
    finally:
        Gallery().delete(entry.name)


def test_the_folder_name_is_the_name_whatever_the_record_says(trained):
    """A rename killed between the folder's rename and its record's update reads consistently."""
    gallery = Gallery()
    entry = gallery.add_run(trained["lora-b"].run_dir, name="old name")
    try:
        (gallery.root / "old name").rename(gallery.root / "new name")   # the record still says "old name"
        assert gallery.get("new name").meta["name"] == "new name"
        assert "old name" not in [e.name for e in gallery.entries()]
    finally:
        gallery.delete("new name")
    assert entry.name == "old name"


def test_temporary_folders_of_live_writers_are_neither_listed_nor_swept(trained):
    import os

    gallery = Gallery()
    source = _entry(trained["lora"]).path
    mine = gallery.root / f".in progress.{os.getpid()}.abcdefgh.partial"   # this process: alive
    import shutil

    shutil.copytree(source, mine)
    try:
        names = [e.name for e in gallery.entries()]
        assert "in progress" not in names and not any(n.startswith(".") for n in names)
        assert mine.is_dir()
    finally:
        shutil.rmtree(mine)
