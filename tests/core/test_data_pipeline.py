"""The batched, cached data pipeline (issue 19): prepare_data equals the per-row reference
(tests/core/reference_data.py, the code it replaced) on every format; the cache is hit on a re-run
and missed when anything that changes the examples changes; huge rows are cut before they reach
the tokenizer; sparse class numbers map to contiguous classes; the evaluation set is capped."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from conftest import DATASETS
from reference_data import reference_prepare_data
from studio.core import data as data_mod
from studio.core import datacache, datatokenize
from studio.core.config import DataSection
from studio.core.data import prepare_data
from studio.core.dataformats import IGNORE
from studio.core.errors import DataError
from tiny_models import make_tokenizer


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer(None)


def _section(path, **kw) -> DataSection:
    kw.setdefault("eval_fraction", 0.0)
    kw.setdefault("max_seq_len", 256)
    return DataSection(path=str(path), **kw)


def _rows(ds) -> list[dict]:
    return [] if ds is None else [{"input_ids": list(r["input_ids"]), "labels": r["labels"] if isinstance(r["labels"], int)
                                   else list(r["labels"])} for r in ds]


def _same_as_reference(section, tok, task, seed=0):
    new = prepare_data(section, tok, task, seed=seed)
    old = reference_prepare_data(section, tok, task, seed=seed)
    assert _rows(new.train) == _rows(old.train)
    assert _rows(new.eval) == _rows(old.eval)
    assert (new.format, new.label_names, new.chat_template_used, new.dropped) == \
           (old.format, old.label_names, old.chat_template_used, old.dropped)
    # the one note the reference cannot give: rows cut to the character bound (which changes no token)
    assert [n for n in new.notes if "before tokenizing" not in n] == old.notes
    return new


@pytest.mark.parametrize("name, task, extra", [
    ("chat_sample.jsonl", "causal-lm", {"eval_fraction": 0.1}),
    ("chat_long_sample.jsonl", "causal-lm", {"max_seq_len": 64}),        # truncation drops some rows
    ("alpaca_sample.jsonl", "causal-lm", {"eval_fraction": 0.2, "max_seq_len": 160}),
    ("text_sample.txt", "causal-lm", {"eval_fraction": 0.1, "max_seq_len": 64}),        # packed
    ("text_sample.txt", "causal-lm", {"pack": False, "max_seq_len": 32}),
    ("classification_sample.csv", "sequence-classification", {"eval_fraction": 0.25, "max_seq_len": 16}),
])
def test_prepare_data_equals_the_per_row_reference_on_the_samples(name, task, extra, tok):
    _same_as_reference(_section(DATASETS / name, **extra), tok, task, seed=3)


def test_every_format_equals_the_reference(tmp_path, tok):
    files = {
        "pc.jsonl": [{"prompt": f"Question {i}?", "completion": f" Answer {i}."} for i in range(12)],
        "share.jsonl": [{"conversations": [{"from": "human", "value": f"hi {i}"}, {"from": "gpt", "value": f"yo {i}"}]}
                        for i in range(12)],
        "msgs.jsonl": [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"n {i}"},
                                     {"role": "assistant", "content": "ok " * i}]} for i in range(12)],
    }
    for name, rows in files.items():
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        _same_as_reference(_section(path, eval_fraction=0.25), tok, "causal-lm", seed=1)


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
_turns = st.lists(st.tuples(st.sampled_from(["user", "assistant", "system"]), _text), min_size=1, max_size=5)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(rows=st.lists(_turns, min_size=1, max_size=8), max_len=st.integers(8, 80))
def test_random_chat_rows_equal_the_reference(tmp_path_factory, tok, rows, max_len):
    path = tmp_path_factory.mktemp("prop") / "chat.jsonl"
    records = [{"messages": [{"role": r, "content": c} for r, c in turns] + [{"role": "assistant", "content": "end"}]}
               for turns in rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    section = _section(path, max_seq_len=max_len)
    try:
        expected = reference_prepare_data(section, tok, "causal-lm")
    except DataError as e:
        with pytest.raises(DataError) as got:
            prepare_data(section, tok, "causal-lm")
        assert str(got.value) == str(e)
        return
    got = prepare_data(section, tok, "causal-lm")
    assert _rows(got.train) == _rows(expected.train) and got.notes == expected.notes


def test_errors_name_the_row_from_worker_processes_too(tmp_path, tok, monkeypatch):
    """Rows are tokenized in chunks, in two processes here: a bad row still names its number."""
    monkeypatch.setattr(datatokenize, "CHUNK_ROWS", 40)
    monkeypatch.setenv("LORA_STUDIO_DATA_PROCS", "2")
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(120)]
    rows[96]["messages"][0]["role"] = "narrator"
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match=r"^bad\.jsonl: row 97: role 'narrator' in messages\[0\] is not one of"):
        prepare_data(_section(path), tok, "causal-lm")
    rows[96]["messages"][0]["role"] = "user"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    _same_as_reference(_section(path, eval_fraction=0.1), tok, "causal-lm")   # two processes, three chunks


# -- the cache ------------------------------------------------------------------------------------------

def test_a_rerun_loads_from_the_cache_and_changes_miss_it(tmp_path, tok, monkeypatch):
    path = tmp_path / "chat.jsonl"
    path.write_text((DATASETS / "chat_sample.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    calls = []
    real = data_mod.tokenize_rows
    monkeypatch.setattr(data_mod, "tokenize_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    said = []
    first = prepare_data(_section(path, eval_fraction=0.1), tok, "causal-lm", progress=said.append)
    assert len(calls) == 1 and any(s.startswith("tokenizing chat.jsonl") for s in said)
    said.clear()
    again = prepare_data(_section(path, eval_fraction=0.1), tok, "causal-lm", progress=said.append)
    assert len(calls) == 1, "a re-run on the same data tokenizes nothing"
    assert said and said[0].startswith("prepared data from the cache")
    assert _rows(again.train) == _rows(first.train) and _rows(again.eval) == _rows(first.eval)
    assert again.notes == first.notes
    # what changes the examples misses the cache
    prepare_data(_section(path, eval_fraction=0.1, max_seq_len=128), tok, "causal-lm")
    assert len(calls) == 2
    other_template = make_tokenizer(None)
    other_template.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    prepare_data(_section(path, eval_fraction=0.1), other_template, "causal-lm")
    assert len(calls) == 3
    prepare_data(_section(path, eval_fraction=0.1), make_tokenizer(None, vocab_size=600), "causal-lm")
    assert len(calls) == 4
    with path.open("a", encoding="utf-8") as f:   # the same name, one more row
        f.write(json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}) + "\n")
    prepare_data(_section(path, eval_fraction=0.1), tok, "causal-lm")
    assert len(calls) == 5
    # the intermediate files are gone, and only KEEP entries stay
    assert not list(datacache.root().glob("work-*"))
    assert len([p for p in datacache.root().iterdir() if (p / "meta.json").is_file()]) <= datacache.KEEP


def test_a_damaged_cache_entry_is_prepared_again(tmp_path, tok):
    path = tmp_path / "chat.jsonl"
    path.write_text((DATASETS / "chat_sample.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    expected = _rows(prepare_data(_section(path), tok, "causal-lm").train)
    for f in datacache.root().glob("*/train.arrow"):   # a new file in its place (the old one is mapped)
        damaged = f.with_suffix(".tmp")
        damaged.write_bytes(b"not arrow")
        damaged.replace(f)
    again = prepare_data(_section(path), tok, "causal-lm")
    assert _rows(again.train) == expected


# -- huge rows, labels, the evaluation cap -----------------------------------------------------------------

def test_a_row_of_hundreds_of_megabytes_is_cut_before_the_tokenizer(tmp_path, tok):
    """200 MB of text in one chat row: cut to max_seq_len x 32 characters with a note, the first
    tokens as they would be anyway, no abort and no tokenizer call on the whole text."""
    path = tmp_path / "huge.jsonl"
    small = {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]}
    with path.open("w", encoding="utf-8") as f:
        f.write(json.dumps(small) + "\n")
        f.write('{"messages": [{"role": "user", "content": "' + "word " * (40 * 2 ** 20) + '"}, '
                '{"role": "assistant", "content": "fine"}]}\n')
    started = time.monotonic()
    prepared = prepare_data(_section(path, max_seq_len=64), tok, "causal-lm")
    assert time.monotonic() - started < 120
    assert any("1 of 2 rows are longer than 2,048 characters" in n for n in prepared.notes), prepared.notes
    # the cut row keeps no assistant tokens within 64 tokens: dropped, as the whole row would be
    assert len(prepared.train) == 1


def test_sparse_class_numbers_map_to_contiguous_classes(tmp_path, tok):
    path = tmp_path / "sparse.csv"
    path.write_text("text,label\n" + "".join(f"row {i},{9999 if i % 2 else 0}\n" for i in range(10)), encoding="utf-8")
    prepared = prepare_data(_section(path), tok, "sequence-classification")
    assert prepared.num_labels == 2 and prepared.label_names == ["0", "9999"]
    assert sorted(set(prepared.train["labels"])) == [0, 1]
    assert any("are classes 0..1 in order (0\u21920, 9999\u21921)" in n for n in prepared.notes), prepared.notes


def test_the_evaluation_set_is_capped_and_says_so(tmp_path, tok):
    path = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(60)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    capped = prepare_data(_section(path, eval_fraction=0.5, eval_max=10), tok, "causal-lm")
    assert len(capped.train) == 30 and len(capped.eval) == 10   # 30 held out, 10 of them evaluated
    assert "chat.jsonl: evaluating 10 of the 30 held-out examples (data.eval_max; 0 evaluates them all)" in capped.notes
    whole = prepare_data(_section(path, eval_fraction=0.5, eval_max=0), tok, "causal-lm")
    assert len(whole.eval) == 30 and _rows(whole.eval)[:10] == _rows(capped.eval)


def test_the_preview_counts_the_capped_evaluation_set(tmp_path, tok, monkeypatch):
    """The window's dataset check shows the sizes training will have, cap included."""
    from studio.core import inspect as insp

    path = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(60)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setattr(insp, "_tokenizer", lambda src, trust, say: (type("R", (), {"path": "-"})(), tok,
                                                                      __import__("threading").Lock()))
    preview = insp.preview_dataset(_section(path, eval_fraction=0.5, eval_max=10), "fake", "causal-lm")
    prepared = prepare_data(_section(path, eval_fraction=0.5, eval_max=10), tok, "causal-lm")
    assert (preview["train_examples"], preview["eval_examples"]) == (len(prepared.train), len(prepared.eval)) == (30, 10)
