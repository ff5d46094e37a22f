"""studio.core.inspect: describe_model (headers only, fast, no conversion) and preview_dataset
(the data as training sees it), checked against prepare_data and independent arithmetic."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import DATASETS

from studio.core import inspect as insp
from studio.core.config import DataSection
from studio.core.data import prepare_data
from studio.core.dataformats import IGNORE
from studio.core.errors import Cancelled, DataError, ModelError
from studio.core.ggufheader import read_gguf_header
from studio.core.inspect import preview_dataset
from studio.core.modelfiles import describe_model
from studio.core.models import gguf_cache_folder, load_tokenizer, locate_source, resolve_source

# SmolLM2-135M-Instruct.Q4_1.gguf as gguf.GGUFReader reads it (checked once; GGUFReader takes ~5 s)
SMOLLM2 = {"architecture": "llama", "layers": 30, "hidden_size": 576, "vocab_size": 49152, "max_positions": 8192,
           "parameters": 134_515_008, "dtype": "Q4_1", "has_chat_template": True}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


# == describe_model ===============================================================================

def test_describe_tiny_folders(tiny_llama, tiny_bert):
    from safetensors import safe_open

    def stored_params(folder):
        with safe_open(str(Path(folder) / "model.safetensors"), "np") as f:
            return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())

    llama, seconds = timed(describe_model, tiny_llama)
    assert seconds < 0.3
    config = json.loads((Path(tiny_llama) / "config.json").read_text())
    assert llama["kind"] == "folder" and llama["path"] == llama["resolves_to"] == tiny_llama and llama["ready"]
    assert (llama["architecture"], llama["model_type"], llama["format"]) == ("LlamaForCausalLM", "llama", "safetensors")
    assert (llama["layers"], llama["hidden_size"], llama["vocab_size"], llama["max_positions"]) == (
        config["num_hidden_layers"], config["hidden_size"], config["vocab_size"], config["max_position_embeddings"])
    assert llama["parameters"] == stored_params(tiny_llama) and llama["parameters_exact"]
    assert llama["dtype"] == "F32" and llama["has_chat_template"] is True
    assert llama["suits"] == "causal-lm" and llama["tasks"] == ["causal-lm", "sequence-classification"]
    assert llama["warnings"] == []
    assert describe_model(tiny_llama, "sequence-classification")["warnings"] == []

    bert = describe_model(tiny_bert, "sequence-classification")
    assert bert["suits"] == "sequence-classification" and bert["warnings"] == []
    assert bert["parameters"] == stored_params(tiny_bert) and bert["has_chat_template"] is False
    mismatch = describe_model(tiny_bert, "causal-lm")["warnings"]
    assert len(mismatch) == 1 and "encoder" in mismatch[0] and "sequence-classification" in mismatch[0]
    json.dumps(llama), json.dumps(bert)  # plain data


def test_describe_bundled_minilm_is_fast():
    info, seconds = timed(describe_model, "bundled:minilm-l6", "sequence-classification")
    assert seconds < 0.3
    assert info["kind"] == "bundled" and info["ready"] and info["format"] == "safetensors"
    assert Path(info["path"]).is_dir() and info["resolves_to"] == info["path"] == locate_source("bundled:minilm-l6")[1]
    assert (info["architecture"], info["layers"], info["hidden_size"], info["vocab_size"]) == (
        "BertModel", 6, 384, 30522)
    assert info["parameters"] == 22_713_728 and info["suits"] == "sequence-classification" and not info["warnings"]
    assert any("encoder" in w for w in describe_model("bundled:minilm-l6", "causal-lm")["warnings"])


def test_describe_bundled_gguf_reads_metadata_without_converting(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("LORA_STUDIO_HOME", str(home))
    info, seconds = timed(describe_model, "bundled:smollm2-135m-instruct")
    assert seconds < 0.5  # ~0.03 s here
    assert {k: info[k] for k in SMOLLM2} == SMOLLM2
    assert info["kind"] == "bundled" and info["format"] == "gguf" and info["path"].endswith(".gguf")
    assert info["resolves_to"] == str(gguf_cache_folder(Path(info["path"]))) and info["ready"] is False
    assert "first use" in info["note"] and info["suits"] == "causal-lm" and info["warnings"] == []
    assert list(home.iterdir()) == []  # nothing converted, nothing created


def test_describe_model_needs_no_torch():
    code = ("import sys; from studio.core.modelfiles import describe_model\n"
            "for s in ('bundled:minilm-l6', 'bundled:smollm2-135m-instruct'): describe_model(s)\n"
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'gguf') if m in sys.modules]\n"
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]


def _tiny_gguf(path: Path, vocab: int = 100):
    import numpy as np
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "llama")
    w.add_name("tiny test")
    w.add_block_count(2)
    w.add_context_length(128)
    w.add_embedding_length(8)
    w.add_file_type(0)
    w.add_token_list([f"tok{i}" for i in range(vocab)])
    w.add_token_scores([0.5] * vocab)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_tensor("token_embd.weight", np.zeros((vocab, 8), np.float32))
    w.add_tensor("blk.0.attn_q.weight", np.ones((8, 8), np.float32))
    w.add_tensor("output_norm.weight", np.ones(8, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_header_parser_agrees_with_gguf_reader(tmp_path):
    from gguf import GGUFReader

    path = _tiny_gguf(tmp_path / "tiny.gguf")
    meta, lengths, tensors = read_gguf_header(path)
    reader = GGUFReader(str(path))
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "test.nested":
            continue
        if key in lengths:
            assert lengths[key] == len(field.data), key
            if lengths[key] <= 64:
                assert meta[key] == pytest.approx(field.contents()), key
        else:
            assert meta[key] == pytest.approx(field.contents()), key
    assert "tokenizer.ggml.tokens" not in meta and lengths["tokenizer.ggml.tokens"] == 100
    assert meta["test.nested"] == [[1, 2], [3]] and lengths["test.nested"] == 2
    assert [(n, list(s)) for n, s, _ in tensors] == [(t.name, [int(d) for d in t.shape]) for t in reader.tensors]
    info = describe_model(str(path))
    assert (info["kind"], info["architecture"], info["layers"], info["hidden_size"], info["vocab_size"],
            info["max_positions"], info["parameters"], info["dtype"], info["has_chat_template"]) == (
        "gguf", "llama", 2, 8, 100, 128, 100 * 8 + 64 + 8, "F32", True)


# -- bad input ------------------------------------------------------------------------------------

def test_bad_model_sources_name_the_path(tmp_path, tiny_llama):
    def error(source, **kw) -> str:
        with pytest.raises(ModelError) as err:
            describe_model(source, **kw)
        message = str(err.value)
        assert "\n" not in message
        return message

    missing = tmp_path / "nope"
    assert str(missing) in error(str(missing)) and "no such folder or file" in error(str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"{empty}: folder has no config.json" in error(str(empty))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert "LoRA adapter, not a base model" in error(str(adapter))
    holder = tmp_path / "holder"
    holder.mkdir()
    (holder / "m.gguf").write_bytes(b"GGUF")
    assert "pick that .gguf file" in error(str(holder))

    bad_json = tmp_path / "badjson"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    assert f"{bad_json / 'config.json'}: config.json is not valid JSON" in error(str(bad_json))
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    shutil.copy(Path(tiny_llama) / "config.json", no_weights)
    assert f"{no_weights}: no weights" in error(str(no_weights))
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_llama, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    assert f"{corrupt / 'model.safetensors'}: not a valid safetensors file" in error(str(corrupt))

    assert f"{tmp_path / 'x.gguf'}: no such .gguf file" in error(str(tmp_path / "x.gguf"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all, just text" * 4)
    assert f"{junk}: not a valid GGUF file" in error(str(junk))
    whole = _tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    for n in (30, 200, 1200):  # in the first keys, in the vocabulary
        cut.write_bytes(whole[:n])
        message = error(str(cut))
        assert f"{cut}: not a valid GGUF file" in message and "truncated" in message
    assert "unknown bundled model 'nope'" in error("bundled:nope")
    assert "no such folder or file" in error("not a/valid id!")
    assert "got ''" in error("  ")


def test_hub_ids_and_relative_paths(tmp_path, tiny_llama, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = describe_model("SomeOrg/some-model")
    assert info["kind"] == "hub" and info["ready"] is False and info["resolves_to"] is None
    assert "downloaded when training starts" in info["note"] and info["parameters"] is None
    assert any("offline" in w for w in info["warnings"])

    repo = tmp_path / "hub" / "models--SomeOrg--cached-model"
    shutil.copytree(tiny_llama, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    cached = describe_model("SomeOrg/cached-model")
    assert cached["kind"] == "hub" and cached["ready"] and cached["resolves_to"] == str(repo / "snapshots" / "abc123")
    assert cached["architecture"] == "LlamaForCausalLM" and cached["warnings"] == []

    # a relative folder is found beside the config file, as training finds it
    beside = tmp_path / "project"
    shutil.copytree(tiny_llama, beside / "models" / "llama")
    (beside / "run.toml").write_text("")
    found = describe_model("./models/llama", config_source=str(beside / "run.toml"))
    assert found["kind"] == "folder" and found["path"] == str((beside / "models" / "llama").resolve())


# == preview_dataset ==============================================================================

CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2 plus 3?"},
        {"role": "assistant", "content": "2 + 3 = 5."}, {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."}]
SHAREGPT = [{"from": "system", "value": "You are terse."}, {"from": "human", "value": "What is 12 plus 7?"},
            {"from": "gpt", "value": "12 + 7 = 19."}]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inspect-data")
    long_text = "This product is great, I love it! " * 12
    return {
        "sharegpt": write_jsonl(d / "sg.jsonl", [{"conversations": SHAREGPT}] * 6
                                + [{"conversations": SHAREGPT + [{"from": "human", "value": "Thank you"},
                                                                 {"from": "gpt", "value": "Hello!"}]}] * 4),
        "prompt-completion": write_jsonl(d / "pc.jsonl", [{"prompt": f"What is {i} plus {i}? Answer:",
                                                           "completion": f" {2 * i}." + " yes" * (i % 7)}
                                                          for i in range(30)]),
        "messages-dropped": write_jsonl(d / "dropped.jsonl", [
            {"messages": [{"role": "user", "content": "blah " * (60 if i % 3 == 1 else 2)},
                          {"role": "assistant", "content": f"ok {i}"}]} for i in range(9)]),
        "messages-short": write_jsonl(d / "chat.jsonl", [{"messages": CHAT}] * 5 + [{"messages": CHAT[1:3]}] * 5),
        "long-classification": write_csv(d / "long.csv", ["text", "label"],
                                         [[long_text if i % 3 == 0 else f"It was okay {i}.", ["pos", "neg"][i % 2]]
                                          for i in range(12)]),
    }


def _tokenizer(model: str):
    return load_tokenizer(resolve_source(model))


def _case(name, files, tiny_llama, tiny_bert):
    """(DataSection, model folder, task) for each case."""
    cases = {
        "messages": (DATASETS / "chat_sample.jsonl", tiny_llama, "causal-lm", {"max_seq_len": 64}),
        "sharegpt": (files["sharegpt"], tiny_llama, "causal-lm", {"max_seq_len": 40, "eval_fraction": 0.2}),
        "messages-dropped": (files["messages-dropped"], tiny_llama, "causal-lm", {"max_seq_len": 48}),
        "alpaca": (DATASETS / "alpaca_sample.jsonl", tiny_llama, "causal-lm", {"max_seq_len": 128}),
        "prompt-completion": (files["prompt-completion"], tiny_llama, "causal-lm", {"max_seq_len": 20}),
        "text": (DATASETS / "text_sample.txt", tiny_llama, "causal-lm", {"max_seq_len": 48, "pack": False}),
        "text-packed": (DATASETS / "text_sample.txt", tiny_llama, "causal-lm", {"max_seq_len": 64, "pack": True,
                                                                               "eval_fraction": 0.15}),
        "classification": (DATASETS / "classification_sample.csv", tiny_bert, "sequence-classification",
                           {"max_seq_len": 128}),
        "classification-long": (files["long-classification"], tiny_bert, "sequence-classification",
                                {"max_seq_len": 16, "eval_fraction": 0.25}),
    }
    path, model, task, kw = cases[name]
    return DataSection(path=str(path), **kw), model, task


def _runs(tok, ids, labels):
    """Decoded runs of consecutive tokens that carry loss (as tests/core/test_data.py reads them)."""
    out, run = [], []
    for tid, lab in zip(ids, labels):
        if lab != IGNORE:
            run.append(tid)
        elif run:
            out.append(insp._decode(tok, run))
            run = []
    if run:
        out.append(insp._decode(tok, run))
    return out


CASES = ["messages", "messages-dropped", "sharegpt", "alpaca", "prompt-completion", "text", "text-packed",
         "classification", "classification-long"]
EXPECTED_FORMAT = {"text-packed": "text", "classification-long": "classification", "messages-dropped": "messages"}


@pytest.mark.parametrize("name", CASES)
def test_preview_matches_training(name, files, tiny_llama, tiny_bert):
    section, model, task = _case(name, files, tiny_llama, tiny_bert)
    causal = task == "causal-lm"
    packed = causal and section.pack and EXPECTED_FORMAT.get(name, name) == "text"
    preview = preview_dataset(section, model, task, rows=4, seed=3)
    json.dumps(preview)  # plain data
    tok = _tokenizer(model)
    L = section.max_seq_len

    # counts, as prepare_data makes them
    prepared = prepare_data(section, tok, task, seed=3)
    assert preview["format"] == prepared.format == EXPECTED_FORMAT.get(name, name)
    assert preview["train_examples"] == len(prepared.train)
    assert preview["eval_examples"] == (len(prepared.eval) if prepared.eval is not None else 0)
    assert preview["dropped"] == prepared.dropped and preview["label_names"] == prepared.label_names
    assert preview["chat_template"] == {"tokenizer": "model", "fallback-chatml": "fallback-chatml",
                                        "": None}[prepared.chat_template_used]
    assert preview["train_tokens"] == sum(len(ids) for ids in prepared.train["input_ids"])
    if causal:
        assert preview["loss_tokens"] == sum(sum(t != IGNORE for t in labels[1:])
                                             for labels in prepared.train["labels"])
    else:
        assert preview["loss_tokens"] is None
        assert sum(preview["label_counts"].values()) == preview["rows"]
    assert preview["packed"] == packed and preview["path"] == section.path and preview["max_seq_len"] == L

    # token lengths: everything untruncated, computed independently
    whole = prepare_data(dataclasses.replace(section, max_seq_len=131072, eval_fraction=0.0, pack=False), tok, task)
    lengths = [len(ids) for ids in whole.train["input_ids"]]
    assert preview["rows"] == len(lengths) == preview["lengths"]["count"]
    stats = preview["lengths"]
    assert (stats["min"], stats["max"]) == (min(lengths), max(lengths))
    assert stats["median"] == pytest.approx(statistics.median(lengths))
    assert stats["mean"] == pytest.approx(statistics.fmean(lengths))
    assert stats["p95"] == pytest.approx(statistics.quantiles(lengths, n=20, method="inclusive")[18])
    assert preview["total_tokens"] == sum(lengths)
    assert preview["truncated"] == (0 if packed else sum(n > L for n in lengths))

    # the first rows, rendered as training tokenizes them
    flat = prepare_data(dataclasses.replace(section, eval_fraction=0.0, pack=False,
                                            max_seq_len=131072 if packed else L), tok, task)
    assert len(preview["examples"]) == 4
    kept = 0
    for i, ex in enumerate(preview["examples"]):
        assert ex["row"] == i + 1 and ex["tokens"] == lengths[i]
        assert "".join(text for text, _ in ex["segments"]) == ex["text"]
        assert ex["truncated"] == (not packed and lengths[i] > L)
        if ex["dropped"]:
            assert causal and not packed
            continue
        trained = flat.train[kept]
        kept += 1
        assert ex["text"] == insp._decode(tok, trained["input_ids"])
        if causal:
            assert [t for t, on in ex["segments"] if on] == _runs(tok, trained["input_ids"], trained["labels"])
            if ex["truncated"]:
                assert ex["cut_text"] and ex["text"] + ex["cut_text"] == insp._decode(
                    tok, whole.train[i]["input_ids"])
        else:
            assert ex["label"] == prepared.label_names[trained["labels"]]
            assert [on for _, on in ex["segments"]] == [False]
            assert bool(ex["cut_text"]) == ex["truncated"]
    if name == "messages-dropped":
        assert [ex["dropped"] for ex in preview["examples"]] == [False, True, False, False]
        assert preview["dropped"] == 3 and preview["train_examples"] + preview["eval_examples"] == 6
    if name == "classification-long":
        assert preview["truncated"] == 4 and preview["examples"][0]["truncated"]
    if name == "messages":
        assert preview["examples"][1]["text"] == tok.apply_chat_template(
            [{"role": "user", "content": "How many metres are in 2 kilometres?"},
             {"role": "assistant", "content": "2 kilometres is 2000 metres."}], tokenize=False)
        assert preview["truncated"] > 0 and preview["dropped"] > 0 and len(preview["warnings"]) == 2


def test_preview_fallback_template_eval_file_and_relative_paths(tmp_path, files, tiny_llama):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_llama, bare)
    (bare / "chat_template.jinja").unlink()
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copy(files["messages-short"], project / "data" / "train.jsonl")
    write_jsonl(project / "data" / "eval.jsonl", [{"messages": CHAT[1:3]}] * 3)
    (project / "run.toml").write_text("")
    section = DataSection(path="./data/train.jsonl", eval_path="./data/eval.jsonl", max_seq_len=256)
    preview = preview_dataset(section, str(bare), "causal-lm", rows=1, config_source=str(project / "run.toml"))
    assert preview["path"] == str((project / "data" / "train.jsonl").resolve())
    assert (preview["rows"], preview["eval_rows"]) == (10, 3)
    assert (preview["train_examples"], preview["eval_examples"]) == (10, 3)
    assert preview["chat_template"] == "fallback-chatml" and any("no chat template" in w for w in preview["warnings"])
    tok = _tokenizer(str(bare))
    prepared = prepare_data(dataclasses.replace(section, path=preview["path"], eval_path=preview["eval_path"]),
                            tok, "causal-lm")
    assert prepared.chat_template_used == "fallback-chatml"
    assert preview["examples"][0]["text"] == insp._decode(tok, prepared.train[0]["input_ids"])
    assert [t for t, on in preview["examples"][0]["segments"] if on] == ["2 + 3 = 5.<|im_end|>",
                                                                          "The capital of France is Paris.<|im_end|>"]


def test_tokenizer_is_cached_per_model(files, tiny_llama, monkeypatch):
    import studio.core.models as models

    insp.clear_tokenizer_cache()
    loads = []
    real = models.load_tokenizer
    monkeypatch.setattr(models, "load_tokenizer", lambda *a, **k: loads.append(1) or real(*a, **k))
    first = []
    preview_dataset(DataSection(path=str(files["sharegpt"])), tiny_llama, "causal-lm", progress=first.append)
    again = []
    _, seconds = timed(preview_dataset, DataSection(path=str(files["prompt-completion"])), tiny_llama, "causal-lm",
                       progress=again.append)
    assert len(loads) == 1 and "loading the tokenizer" in first and "loading the tokenizer" not in again
    assert seconds < 1.0


def test_should_stop_cancels_between_phases_and_while_tokenizing(tiny_llama):
    section = DataSection(path=str(DATASETS / "chat_sample.jsonl"))
    with pytest.raises(Cancelled):
        preview_dataset(section, tiny_llama, "causal-lm", should_stop=lambda: True)
    asked = []

    def later():  # say stop once tokenizing is under way
        asked.append(1)
        return len(asked) > 8

    with pytest.raises(Cancelled):
        preview_dataset(section, tiny_llama, "causal-lm", should_stop=later)
    assert len(asked) == 9
    # the cached tokenizer's lock was released: another preview (another thread) goes through
    out = {}
    worker = threading.Thread(target=lambda: out.update(preview_dataset(section, tiny_llama, "causal-lm", rows=0)))
    worker.start()
    worker.join(30)
    assert out["rows"] == 300 and out["examples"] == []


def test_preview_errors_are_the_training_errors(tmp_path, tiny_llama, tiny_bert):
    tok = _tokenizer(tiny_llama)
    bad = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}] * 2
                      + [{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}])
    cases = [
        (DataSection(path=str(bad)), "causal-lm"),
        (DataSection(path=str(tmp_path / "missing.jsonl")), "causal-lm"),
        (DataSection(path=str(bad), format="classification"), "causal-lm"),
        (DataSection(path=str(DATASETS / "chat_sample.jsonl")), "sequence-classification"),
    ]
    for section, task in cases:
        with pytest.raises(DataError) as expected:
            prepare_data(section, tok, task)
        with pytest.raises(DataError) as got:
            preview_dataset(section, tiny_llama, task)
        assert str(got.value) == str(expected.value)
    with pytest.raises(DataError, match="unknown task"):
        preview_dataset(DataSection(path=str(bad)), tiny_llama, "translation")
    with pytest.raises(ModelError, match="no such folder or file"):
        preview_dataset(DataSection(path=str(DATASETS / "chat_sample.jsonl")), str(tmp_path / "nope"), "causal-lm")
