"""studio.core.data: reading, format detection, tokenization, loss masks, splits and the errors."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from tiny_models import CHATML_TEMPLATE, make_tiny_bert, make_tiny_llama, make_tokenizer

from studio.core.config import DataSection
from studio.core.data import prepare_data, read_rows
from studio.core.dataformats import IGNORE, classification_labels, detect_format
from studio.core.errors import DataError

SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "datasets"
EOT = "<|im_end|>"  # the tiny tokenizer's eos and ChatML end-of-turn


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer(None)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def section(path, **kw):
    kw.setdefault("eval_fraction", 0.0)
    kw.setdefault("max_seq_len", 256)
    return DataSection(path=str(path), **kw)


def labelled_spans(tokenizer, example) -> list[str]:
    """Decoded runs of consecutive tokens that carry a loss."""
    spans, run = [], []
    for tid, lab in zip(example["input_ids"], example["labels"]):
        if lab != IGNORE:
            assert lab == tid
            run.append(tid)
        elif run:
            spans.append(tokenizer.decode(run))
            run = []
    if run:
        spans.append(tokenizer.decode(run))
    return spans


CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2 plus 3?"},
    {"role": "assistant", "content": "2 + 3 = 5."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
]


# -- detection ----------------------------------------------------------------------------------

@pytest.mark.parametrize("row, fmt", [
    ({"text": "hello"}, "text"),
    ({"prompt": "a", "completion": "b"}, "prompt-completion"),
    ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
    ({"messages": CHAT}, "messages"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}, "sharegpt"),
])
def test_detect_format(tmp_path, row, fmt):
    rows = read_rows(str(write_jsonl(tmp_path / "d.jsonl", [row, row])))
    assert detect_format(rows, "causal-lm") == fmt


def test_detect_classification_and_readers(tmp_path):
    csv_path = write_csv(tmp_path / "c.csv", ["sentence", "category"], [["good", "pos"], ["bad", "neg"]])
    csv_rows = read_rows(str(csv_path))
    assert detect_format(csv_rows, "sequence-classification") == "classification"
    txt = tmp_path / "t.txt"
    txt.write_text("line one\n\nline two\n", encoding="utf-8")
    assert read_rows(str(txt))["text"] == ["line one", "line two"]
    as_array = tmp_path / "a.json"
    as_array.write_text(json.dumps([{"text": "x"}, {"text": "y"}]), encoding="utf-8")
    assert len(read_rows(str(as_array))) == 2
    parquet = tmp_path / "p.parquet"
    csv_rows.to_parquet(str(parquet))
    assert read_rows(str(parquet)).column_names == ["sentence", "category"]


# -- causal formats -------------------------------------------------------------------------------

def test_text_unpacked_truncates_and_appends_eos(tmp_path, tok):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "The capital of Italy is Rome."},
                                              {"text": "word " * 400}])
    data = prepare_data(section(path, pack=False, max_seq_len=32), tok, "causal-lm")
    assert data.format == "text" and data.eval is None and data.chat_template_used == ""
    short, long = data.train[0], data.train[1]
    assert short["input_ids"][0] == tok.bos_token_id and short["input_ids"][-1] == tok.eos_token_id
    assert short["labels"] == short["input_ids"]
    assert len(long["input_ids"]) == 32


def test_text_packing_block_lengths(tmp_path, tok):
    lines = [f"Question {i}: what is {i} plus {i}? Answer: {2 * i}." for i in range(60)]
    path = tmp_path / "t.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    data = prepare_data(section(path, pack=True, max_seq_len=64), tok, "causal-lm")
    lengths = [len(ids) for ids in data.train["input_ids"]]
    assert all(n == 64 for n in lengths[:-1]) and 2 <= lengths[-1] <= 64
    expected = sum(len(tok(line)["input_ids"]) + 1 for line in lines)  # + eos per line
    assert sum(lengths) == expected
    assert data.train[0]["labels"] == data.train[0]["input_ids"]


def test_prompt_completion_loss_on_completion_only(tmp_path, tok):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Translate: cat ->", "completion": " chat"}] * 3)
    data = prepare_data(section(path), tok, "causal-lm")
    ex = data.train[0]
    assert labelled_spans(tok, ex) == [" chat" + EOT]
    assert tok.decode(ex["input_ids"]).startswith(tok.bos_token + "Translate: cat ->")


@pytest.mark.parametrize("extra, header", [
    ("", "Below is an instruction that describes a task. Write"),
    ("some context", "Below is an instruction that describes a task, paired with an input"),
])
def test_alpaca_prompt_and_mask(tmp_path, tok, extra, header):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Name a colour.", "input": extra, "output": "Blue."}])
    data = prepare_data(section(path), tok, "causal-lm")
    ex = data.train[0]
    text = tok.decode(ex["input_ids"])
    assert header in text and "### Instruction:\nName a colour.\n\n" in text
    assert ("### Input:\nsome context" in text) == bool(extra)
    assert text.endswith("### Response:\nBlue." + EOT)
    assert labelled_spans(tok, ex) == ["Blue." + EOT]


def test_messages_loss_only_on_assistant_turns(tmp_path, tok):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}])
    data = prepare_data(section(path), tok, "causal-lm")
    assert data.format == "messages" and data.chat_template_used == "tokenizer"
    ex = data.train[0]
    assert labelled_spans(tok, ex) == ["2 + 3 = 5." + EOT, "The capital of France is Paris." + EOT]
    # the template already carries its special tokens: no BOS is added on top
    assert tok.bos_token_id not in ex["input_ids"]
    assert tok.decode(ex["input_ids"]) == tok.apply_chat_template(CHAT, tokenize=False)


def test_messages_fallback_template_and_tool_role(tmp_path):
    bare = make_tokenizer(None, chat_template=None)
    msgs = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "Checking."},
            {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "It is sunny."}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": msgs}])
    data = prepare_data(section(path), bare, "causal-lm")
    assert data.chat_template_used == "fallback-chatml"
    ex = data.train[0]
    assert labelled_spans(bare, ex) == ["Checking." + bare.eos_token, "It is sunny." + bare.eos_token]
    assert "<|im_start|>tool\nsunny" in bare.decode(ex["input_ids"])


def test_messages_when_prefix_renders_differ(tmp_path):
    # A template that decorates only the final assistant turn (like reasoning models do), so the
    # rendered prefix of an earlier turn is not a prefix of the whole conversation.
    template = CHATML_TEMPLATE.replace(
        "message['content']",
        "(('<think></think>' if loop.last and message['role'] == 'assistant' else '') + message['content'])")
    odd = make_tokenizer(None, chat_template=template)
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}])
    ex = prepare_data(section(path), odd, "causal-lm").train[0]
    assert labelled_spans(odd, ex) == ["2 + 3 = 5." + EOT, "<think></think>The capital of France is Paris." + EOT]
    # the assistant's words also occur in the user's turn: the span must be the assistant's copy
    echo = [{"role": "user", "content": "Reply OK"}, {"role": "assistant", "content": "OK"},
            {"role": "user", "content": "OK again"}, {"role": "assistant", "content": "OK"}]
    path = write_jsonl(tmp_path / "echo.jsonl", [{"messages": echo}])
    ex = prepare_data(section(path), odd, "causal-lm").train[0]
    assert labelled_spans(odd, ex) == ["OK" + EOT, "<think></think>OK" + EOT]
    first = ex["labels"].index(next(t for t in ex["labels"] if t != IGNORE))
    assert odd.decode(ex["input_ids"][:first]).endswith("Reply OK<|im_end|>\n<|im_start|>assistant\n")


def test_sharegpt_maps_to_messages(tmp_path, tok):
    conv = [{"from": "system", "value": "You are terse."}, {"from": "human", "value": "What is 2 plus 3?"},
            {"from": "gpt", "value": "2 + 3 = 5."}]
    path = write_jsonl(tmp_path / "sg.jsonl", [{"conversations": conv}])
    data = prepare_data(section(path), tok, "causal-lm")
    assert data.format == "sharegpt"
    assert labelled_spans(tok, data.train[0]) == ["2 + 3 = 5." + EOT]
    assert tok.decode(data.train[0]["input_ids"]) == tok.apply_chat_template(CHAT[:3], tokenize=False)


def test_truncation_drops_examples_without_loss(tmp_path, tok):
    long_user = {"role": "user", "content": "blah " * 200}
    rows = [{"messages": CHAT}, {"messages": [long_user, {"role": "assistant", "content": "ok"}]}]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    data = prepare_data(section(path, max_seq_len=64), tok, "causal-lm")
    assert len(data.train) == 1 and data.dropped == 1
    assert all(len(ids) <= 64 for ids in data.train["input_ids"])
    only_long = write_jsonl(tmp_path / "long.jsonl", rows[1:])
    with pytest.raises(DataError, match=r"long\.jsonl: no example .* max_seq_len=64"):
        prepare_data(section(only_long, max_seq_len=64), tok, "causal-lm")


def test_format_override(tmp_path, tok):
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": "hello there", "prompt": "p", "completion": "c"}])
    assert prepare_data(section(path), tok, "causal-lm").format == "prompt-completion"
    assert prepare_data(section(path, format="text"), tok, "causal-lm").format == "text"


def test_collator_right_pads(tmp_path, tok):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "a", "completion": "b"},
                                               {"prompt": "a longer prompt here", "completion": "and more"}])
    data = prepare_data(section(path), tok, "causal-lm")
    batch = data.collator([data.train[0], data.train[1]])
    n0 = len(data.train[0]["input_ids"])
    width = batch["input_ids"].shape[1]
    assert width == max(n0, len(data.train[1]["input_ids"]))
    assert batch["input_ids"][0, n0:].tolist() == [tok.pad_token_id] * (width - n0)
    assert batch["labels"][0, n0:].tolist() == [IGNORE] * (width - n0)
    assert batch["attention_mask"][0].tolist() == [1] * n0 + [0] * (width - n0)


# -- classification -------------------------------------------------------------------------------

def test_classification_string_labels(tmp_path, tok):
    rows = [[f"review {i}", ["pos", "neg", "neutral"][i % 3]] for i in range(9)]
    path = write_csv(tmp_path / "c.csv", ["review", "class"], rows)
    sec = section(path, max_seq_len=16)
    assert classification_labels(sec, read_rows(str(path))) == ("review", "class", ["neg", "neutral", "pos"])
    data = prepare_data(sec, tok, "sequence-classification")
    assert data.format == "classification" and data.num_labels == 3
    assert data.train["labels"][:3] == [2, 0, 1]
    batch = data.collator([data.train[i] for i in range(4)])
    assert batch["labels"].tolist() == [2, 0, 1, 2] and batch["input_ids"].shape[0] == 4


def test_classification_int_labels_and_named_columns(tmp_path, tok):
    path = write_jsonl(tmp_path / "c.jsonl", [{"body": "x " * 50, "y": i % 3} for i in range(6)])
    sec = section(path, text_column="body", label_column="y", max_seq_len=8)
    data = prepare_data(sec, tok, "sequence-classification")
    assert data.label_names == ["0", "1", "2"] and data.train["labels"] == [0, 1, 2, 0, 1, 2]
    assert all(len(ids) == 8 for ids in data.train["input_ids"])


# -- splits -----------------------------------------------------------------------------------------

def test_eval_fraction_split_is_seeded(tmp_path, tok):
    path = write_jsonl(tmp_path / "t.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(8)])
    a = prepare_data(section(path, eval_fraction=0.25), tok, "causal-lm", seed=1)
    b = prepare_data(section(path, eval_fraction=0.25), tok, "causal-lm", seed=1)
    assert len(a.train) == 6 and len(a.eval) == 2
    assert a.eval["input_ids"] == b.eval["input_ids"]
    one = write_jsonl(tmp_path / "one.jsonl", [{"prompt": "q", "completion": "a"}])
    assert prepare_data(section(one, eval_fraction=0.5), tok, "causal-lm").eval is None
    assert prepare_data(section(path, eval_fraction=0.0), tok, "causal-lm").eval is None


def test_separate_eval_file(tmp_path, tok):
    train = write_jsonl(tmp_path / "train.jsonl", [{"messages": CHAT}] * 4)
    evalf = write_jsonl(tmp_path / "eval.jsonl", [{"messages": CHAT[1:3]}])
    data = prepare_data(section(train, eval_path=str(evalf), eval_fraction=0.5), tok, "causal-lm")
    assert len(data.train) == 4 and len(data.eval) == 1
    assert labelled_spans(tok, data.eval[0]) == ["2 + 3 = 5." + EOT]
    bad_eval = write_jsonl(tmp_path / "bad_eval.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match=r"^bad_eval\.jsonl: row 1: .*no assistant turn"):
        prepare_data(section(train, eval_path=str(bad_eval)), tok, "causal-lm")


# -- errors ----------------------------------------------------------------------------------------

def _msg(user, role="user"):
    return {"role": role, "content": user}


GOOD = {"messages": [_msg("hi"), _msg("hello", "assistant")]}


def _chat_rows(bad_row: int, bad: dict, n: int = 8) -> list[dict]:
    return [bad if i == bad_row else GOOD for i in range(1, n + 1)]


ERROR_CASES = {
    "missing content": ("chat.jsonl", _chat_rows(7, {"messages": [_msg("a"), _msg("b", "assistant"),
                                                                  {"role": "user"}]}),
                        r"^chat\.jsonl: row 7: missing 'content' in messages\[2\]$"),
    "unknown role": ("chat.jsonl", _chat_rows(3, {"messages": [_msg("a"), _msg("b", "bot")]}),
                     r"^chat\.jsonl: row 3: role 'bot' in messages\[1\] is not one of system, user, assistant, tool$"),
    "no assistant": ("chat.jsonl", _chat_rows(2, {"messages": [_msg("a"), _msg("b")]}),
                     r"^chat\.jsonl: row 2: .*no assistant turn"),
    "content not a string": ("chat.jsonl", [{"messages": [_msg("a"), {"role": "assistant", "content": 5}]}] * 2,
                             r"^chat\.jsonl: row 1: 'content' in messages\[1\] is a number; expected a string$"),
    "mixed content types": ("chat.jsonl", [GOOD, GOOD, {"messages": [_msg("a"), {"role": "assistant",
                                                                                 "content": [1, 2]}]}],
                            r"^chat\.jsonl: row 3: .*messages\[1\]"),
    "empty messages": ("chat.jsonl", _chat_rows(4, {"messages": []}), r"^chat\.jsonl: row 4: .*empty list"),
    "sharegpt from": ("sg.jsonl", [{"conversations": [{"from": "human", "value": "a"},
                                                      {"from": "robot", "value": "b"}]}],
                      r"^sg\.jsonl: row 1: 'from' 'robot' in conversations\[1\] is not one of"),
    "missing output": ("al.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "a", "output": None}],
                       r"^al\.jsonl: row 2: missing 'output'"),
    "role with a line break": ("chat.jsonl", _chat_rows(2, {"messages": [_msg("a"), _msg("b", "bot\nx")]}),
                               r"^chat\.jsonl: row 2: role 'bot\\nx' in messages\[1\] is not one of"),
    "no known columns": ("x.jsonl", [{"foo": 1, "bar": "b"}],
                         r"^x\.jsonl: no known format: found columns 'foo', 'bar'; expected 'text'"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_bad_rows_name_file_row_and_field(tmp_path, tok, case):
    name, rows, pattern = ERROR_CASES[case]
    path = write_jsonl(tmp_path / name, rows)
    with pytest.raises(DataError, match=pattern) as err:
        prepare_data(section(path), tok, "causal-lm")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, content, pattern", [
    ("empty.jsonl", b"", r"^empty\.jsonl: the file is empty$"),
    ("blank.csv", b"\n  \n", r"^blank\.csv: the file is empty$"),
    ("bin.jsonl", b'{"text": "a"}\n\x00\x01\x02', r"^bin\.jsonl: binary data at byte offset 14"),
    ("latin.csv", "text,label\ncaf\u00e9,1\n".encode("latin-1"), r"^latin\.csv: not UTF-8 .* byte offset 14"),
    ("cut.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"text": "unfinished\n',
     r"^cut\.jsonl: line 3: truncated JSON"),
    ("bad.jsonl", b'{"text": "a"}\n\n{"text" "b"}\n', r"^bad\.jsonl: line 3: invalid JSON"),
    ("list.jsonl", b'{"text": "a"}\n[1, 2]\n', r"^list\.jsonl: line 2: expected a JSON object"),
    ("bad.json", b'[{"text": "a"},\n {"text": }]', r"^bad\.json: line 2: invalid JSON"),
    ("data.xlsx", b"PK\x03\x04", r"^data\.xlsx: unsupported file type '\.xlsx'"),
    ("fake.parquet", b"hello", r"^fake\.parquet: not a Parquet file"),
    ("noise.parquet", b"PAR1" + b"x" * 100 + b"PAR1", r"^noise\.parquet: not a readable Parquet file \("),
    # nesting: Python's parser would overflow its stack, Arrow gives up at 64 levels
    ("deep.jsonl", b'{"text": "a"}\n{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
     r"^deep\.jsonl: line 2: nested too deeply \(more than 63 levels"),
    ("deep.json", b'[{"text": "a"},\n {"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]",
     r"^deep\.json: line 2: nested too deeply"),
    ("deep63.jsonl", b'{"text": "a"}\n{"text": "b", "x": ' + b"[" * 63 + b"]" * 63 + b"}\n",  # Arrow's limit + 1
     r"^deep63\.jsonl: line 2: nested too deeply \(more than 63 levels"),
    ("deep63.json", b'[{"text": "a"},\n {"text": "b", "x": ' + b"[" * 63 + b"]" * 63 + b"}]",
     r"^deep63\.json: line 2: nested too deeply"),
    # what Arrow cannot store, named by line and field instead of pandas' "If using all scalar values ..."
    ("huge.jsonl", b'{"text": "a"}\n{"text": 1e999}\n',
     r"^huge\.jsonl: line 2: 'text' is the number 1e999, too large to store"),
    ("huge.json", b'[{"text": "a"},\n {"text": "b", "score": -1e999}]',
     r"^huge\.json: line 2: 'score' is the number -1e999, too large"),
    ("bigint.json", b'[{"text": "a", "id": 18446744073709551616}]', r"^bigint\.json: line 1: 'id' is the number"),
    ("digits.jsonl", b'{"text": "a", "id": ' + b"9" * 5000 + b"}\n",
     r"^digits\.jsonl: line 1: a number with thousands of digits"),
    ("twice.jsonl", b'{"text": "a"}\n{"text": "a", "text": "b"}\n',
     r"^twice\.jsonl: line 2: the key 'text' appears twice in one object"),
    ("surrogate.jsonl", b'{"text": "\\ud800"}\n', r"^surrogate\.jsonl: line 1: 'text' holds an unpaired UTF-16 surrogate"),
    ("surrogate.json", b'[{"text": "fine \\ud83d\\ude00"},\n {"text": "\\udc00"}]',
     r"^surrogate\.json: line 2: 'text' holds an unpaired UTF-16 surrogate \(\\udc00\)"),
    # other encodings than UTF-8 say so, instead of "binary data at byte offset 3"
    ("utf16.jsonl", '{"text": "a"}\n'.encode("utf-16"), r"^utf16\.jsonl: UTF-16 text; expected UTF-8 \(save the file as UTF-8\)$"),
    ("utf16be.csv", b"\xfe\xff" + "text,label\na,b\n".encode("utf-16-be"), r"^utf16be\.csv: UTF-16 text; expected UTF-8"),
    ("utf16.txt", "no byte-order mark here\n".encode("utf-16-le"), r"^utf16\.txt: UTF-16 text \(without a byte-order mark\)"),
    ("utf32.txt", "hello\n".encode("utf-32"), r"^utf32\.txt: UTF-32 text; expected UTF-8"),
    ("bom.jsonl", b"\xef\xbb\xbf\n  \n", r"^bom\.jsonl: the file is empty$"),
    # datasets stores this nested key and then fails to decode it (a KeyError; found by hypothesis)
    ("nul.jsonl", b'{"text": "hi", "x": {"\\u0000": {}}}\n', r"^nul\.jsonl: a field named '\\x00' cannot be read back"),
])
def test_bad_files(tmp_path, tok, name, content, pattern):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=pattern) as err:
        prepare_data(section(path), tok, "causal-lm")
    assert "\n" not in str(err.value)


def test_parquet_oddities(tmp_path, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), empty)
    with pytest.raises(DataError, match=r"^empty\.parquet: the file has no rows$"):
        read_rows(str(empty))
    # Parquet does not check that strings are UTF-8 until a row is read: read_rows checks them all
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": ["a b c", "d e f"]}), good)
    data = bytearray(good.read_bytes())
    data[data.index(b"d e f")] = 0x80
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"^bad\.parquet: column 'text' holds text that is not UTF-8"):
        read_rows(str(bad))
    data = bytearray(good.read_bytes())
    data[data.index(b"\x18\x04text%") + 2] = 0x80  # the footer's name of the column
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"^bad\.parquet: not a readable Parquet file \(a column name is not UTF-8"):
        read_rows(str(bad))


def test_byte_order_mark_is_accepted(tmp_path, tok):
    bom = b"\xef\xbb\xbf"
    csv_path = tmp_path / "c.csv"
    csv_path.write_bytes(bom + b"text,label\ngood,pos\nbad,neg\n")
    assert read_rows(str(csv_path)).column_names == ["text", "label"]  # not '\ufefftext'
    assert prepare_data(section(csv_path), tok, "sequence-classification").num_labels == 2
    txt = tmp_path / "t.txt"
    txt.write_bytes(bom + b"first line\nsecond line\n")
    assert read_rows(str(txt))["text"] == ["first line", "second line"]
    for name, body in (("a.json", b'[{"text": "x"}, {"text": "y"}]'), ("o.json", b'{"text": "x"}'),
                       ("l.jsonl", b'{"text": "x"}\n{"text": "y"}\n')):
        path = tmp_path / name
        path.write_bytes(bom + body)
        assert read_rows(str(path))["text"][0] == "x"


def test_json_nested_as_deep_as_arrow_stores_is_read(tmp_path):
    row = {"text": "a", "x": json.loads("[" * 62 + "]" * 62)}  # 63 levels with the row's own { }
    assert len(read_rows(str(write_jsonl(tmp_path / "d.jsonl", [row])))) == 1
    (tmp_path / "d.json").write_text(json.dumps([row]), encoding="utf-8")
    assert len(read_rows(str(tmp_path / "d.json"))) == 1


def test_json_lines_break_only_at_line_ends(tmp_path, tok):
    # U+2028 is a line break to str.splitlines() but plain text inside a JSON string
    path = tmp_path / "u.jsonl"
    path.write_text('{"text": "one\u2028two"}\n{"text": "three"}\n', encoding="utf-8")
    assert read_rows(str(path))["text"] == ["one\u2028two", "three"]
    old_mac = tmp_path / "cr.jsonl"
    old_mac.write_bytes(b'{"text": "a"}\r{"text": "b"}\r')
    assert read_rows(str(old_mac))["text"] == ["a", "b"]


def test_empty_texts_are_skipped_and_counted(tmp_path, tok):
    rows = [{"text": "The capital of France is Paris."}, {"text": ""}, {"text": "  \n"}, {"text": "Rome."}]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    for pack in (False, True):
        data = prepare_data(section(path, pack=pack), tok, "causal-lm")
        assert data.dropped == 2 and data.notes == ["t.jsonl: 2 of 4 rows have no text and were skipped"]
        expected = sum(len(tok(r["text"])["input_ids"]) + 1 for r in (rows[0], rows[3]))  # + eos each
        assert sum(map(len, data.train["input_ids"])) == expected
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"text": ""}] * 3)
    for pack in (False, True):
        with pytest.raises(DataError, match=r"^blank\.jsonl: no row has any text to learn from \(all 3 rows"):
            prepare_data(section(blank, pack=pack), tok, "causal-lm")


def test_notes_for_dropped_rows_and_no_eval_set(tmp_path, tok):
    long_user = {"role": "user", "content": "blah " * 200}
    rows = [{"messages": CHAT}, {"messages": [long_user, {"role": "assistant", "content": "ok"}]}]
    data = prepare_data(section(write_jsonl(tmp_path / "chat.jsonl", rows), max_seq_len=64), tok, "causal-lm")
    assert data.notes == ["chat.jsonl: 1 of 2 rows have nothing left to learn from within max_seq_len=64 "
                          "and were dropped"]
    one = write_jsonl(tmp_path / "one.jsonl", [{"prompt": "q", "completion": "a"}])
    data = prepare_data(section(one, eval_fraction=0.5), tok, "causal-lm")
    assert data.eval is None and len(data.train) == 1
    assert data.notes == ["one.jsonl: too few examples (1) to hold out data.eval_fraction=0.5 for evaluation; "
                          "training without an evaluation set"]
    assert prepare_data(section(one, eval_fraction=0.0), tok, "causal-lm").notes == []


def test_paths_that_are_not_data_files(tmp_path, tok):
    with pytest.raises(DataError, match=r"^data\.path: expected a data file \(\.jsonl, \.json, \.csv, \.parquet, "
                                        r"\.txt\), got ''$"):
        prepare_data(section(""), tok, "causal-lm")
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": "hello"}])
    with pytest.raises(DataError, match=r"^data\.eval_path: expected a data file .* got ' '$"):
        prepare_data(section(train, eval_path=" "), tok, "causal-lm")
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(tmp_path / "loop.jsonl")
    with pytest.raises(DataError, match=r"loop\.jsonl: a symbolic link that leads nowhere"):
        read_rows(str(loop))
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"pipe\.jsonl: not a regular file"):  # reading it would block
        read_rows(str(fifo))


@pytest.mark.parametrize("label, pattern", [
    (10**6, r"'label' is 1000000; class numbers go from 0 to 9999"),
    (1e300, r"'label' is 1e\+300; class numbers go from 0 to 9999"),
])
def test_class_numbers_are_bounded(tmp_path, tok, label, pattern):
    # each class is an output of the model: a number like an id would build a million-way head
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": label}])
    with pytest.raises(DataError, match=r"^c\.jsonl: row 2: " + pattern):
        prepare_data(section(path), tok, "sequence-classification")


@pytest.mark.parametrize("label, pattern", [
    (1.5, r"'label' is 1\.5; expected a class name or a whole number"),
    (True, r"'label' is a boolean"),
    ([1], r"'label' is a list"),
    (None, r"missing 'label'"),
])
def test_eval_file_labels_are_checked_like_training_labels(tmp_path, tok, label, pattern):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 1}])
    evalf = write_jsonl(tmp_path / "eval.jsonl", [{"text": "c", "label": 1}, {"text": "d", "label": label}])
    with pytest.raises(DataError, match=r"^eval\.jsonl: row 2: " + pattern):
        prepare_data(section(train, eval_path=str(evalf)), tok, "sequence-classification")


def test_missing_file_and_bad_classification(tmp_path, tok):
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file"):
        read_rows(str(tmp_path / "nope.jsonl"))
    path = write_csv(tmp_path / "c.csv", ["text", "label"], [["good", "pos"], ["bad", ""], ["meh", "neg"]])
    with pytest.raises(DataError, match=r"^c\.csv: row 2: missing 'label'"):
        prepare_data(section(path), tok, "sequence-classification")
    path = write_csv(tmp_path / "d.csv", ["body", "label"], [["good", "pos"]])
    with pytest.raises(DataError, match=r"^d\.csv: no text column: found 'body', 'label'"):
        prepare_data(section(path), tok, "sequence-classification")
    path = write_csv(tmp_path / "r.csv", ["text", "label"], [["a,b", "pos", "extra"], ["c", "neg"]])
    with pytest.raises(DataError, match=r"^r\.csv: "):
        prepare_data(section(path), tok, "sequence-classification")
    chat = write_jsonl(tmp_path / "chat.jsonl", [GOOD])
    with pytest.raises(DataError, match="does not fit task"):
        prepare_data(section(chat, format="classification"), tok, "causal-lm")


# -- the sample files and the tiny models ----------------------------------------------------------

@pytest.mark.parametrize("name, task, fmt", [
    ("chat_sample.jsonl", "causal-lm", "messages"),
    ("alpaca_sample.jsonl", "causal-lm", "alpaca"),
    ("text_sample.txt", "causal-lm", "text"),
    ("classification_sample.csv", "sequence-classification", "classification"),
])
def test_shipped_samples(tok, name, task, fmt):
    data = prepare_data(DataSection(path=str(SAMPLES / name), max_seq_len=128), tok, task)
    assert data.format == fmt and len(data.train) > 50 and data.eval is not None and data.dropped == 0


def test_tiny_models_load(tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    llama = make_tiny_llama(tmp_path / "llama")
    tokenizer = AutoTokenizer.from_pretrained(llama)
    model = AutoModelForCausalLM.from_pretrained(llama)
    batch = tokenizer(["hello world"], return_tensors="pt")
    assert model(**batch).logits.shape[-1] == len(tokenizer)
    assert tokenizer.chat_template and tokenizer.eos_token == EOT
    bert = make_tiny_bert(tmp_path / "bert")
    model = AutoModelForSequenceClassification.from_pretrained(bert)
    batch = AutoTokenizer.from_pretrained(bert)(["a fine product"], return_tensors="pt")
    assert model(**batch).logits.shape == (1, 2)
