"""Property-based tests (hypothesis) for the two places bad input enters: the dataset loader and
the run-config parser. Whatever bytes or structures come in, each either succeeds or raises the
project's own one-line input error (DataError, ConfigError); anything else is a bug. A config
that parses also survives a round trip through its own TOML.

Each test writes its files under one session folder and keeps `datasets`' cache there too, so a
few hundred loads leave nothing behind. About half a minute on two cores.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tiny_models import make_tokenizer

from studio.core.config import SECTIONS, DataSection, RunConfig
from studio.core.data import prepare_data, read_rows
from studio.core.dataformats import FORMATS, TASKS
from studio.core.errors import ConfigError, DataError
from studio.core.options import field_type
from studio.core.variants import REGISTRY

# PROPERTY_EXAMPLES=2000 for a longer hunt; the default keeps the file near half a minute
EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "150"))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=max(EXAMPLES // 2, 1), deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXTENSIONS = (".jsonl", ".json", ".csv", ".txt", ".parquet")
_names = itertools.count()


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer(None)


@pytest.fixture(scope="module")
def bare_tok():
    """No chat template: conversations take the studio's ChatML fallback."""
    return make_tokenizer(None, chat_template=None)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Where the examples' files go; datasets' cache goes there too (it is read at each load)."""
    import datasets

    root = tmp_path_factory.mktemp("properties")
    saved = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = str(root / "hf-cache")
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    yield root
    datasets.config.HF_DATASETS_CACHE = saved
    if bars:
        datasets.enable_progress_bars()


def write(folder, ext: str, data: bytes):
    path = folder / f"f{next(_names)}{ext}"
    path.write_bytes(data)
    return path


def assert_input_error(err: Exception, cls: type) -> None:
    assert isinstance(err, cls), f"{type(err).__name__}: {err}"
    text = str(err)
    assert text and "\n" not in text and "\r" not in text, repr(text)


def load(section: DataSection, tok, task: str):
    """prepare_data, with DataError the only way to fail; a success is checked for sense."""
    try:
        prepared = prepare_data(section, tok, task)
    except DataError as e:
        assert_input_error(e, DataError)
        return None
    assert len(prepared.train) >= 1
    assert all(len(ids) >= 1 for ids in prepared.train["input_ids"])
    assert all(isinstance(note, str) and "\n" not in note for note in prepared.notes)
    if task == "sequence-classification":
        assert prepared.num_labels >= 2
        assert all(0 <= label < prepared.num_labels for label in prepared.train["labels"])
    return prepared


# -- strategies: data --------------------------------------------------------------------------

KEYS = ("text", "messages", "conversations", "prompt", "completion", "instruction", "input", "output",
        "label", "labels", "sentence", "category", "role", "content", "from", "value")
ROLES = ("system", "user", "assistant", "tool", "human", "gpt", "bot", "", "Assistant")

finite_or_not = st.floats(allow_nan=True, allow_infinity=True)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-2**70, max_value=2**70),
                    finite_or_not, st.text(max_size=20), st.sampled_from(["", " ", "\n", "a\u2028b", "\ufeff"]))
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(keys, inner, max_size=4)),
                           max_leaves=12)

words = st.text(st.sampled_from("abc xyz.!?\n\u00e9\u4e2d"), max_size=30)  # mostly plain text
good_text = st.one_of(words, words, st.text(max_size=30))
near_text = st.one_of(good_text, good_text, good_text, scalars, json_values)
role = st.one_of(st.sampled_from(ROLES), json_values)
turn = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool"]), "content": good_text}),
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": good_text}),
    st.fixed_dictionaries({"role": role, "content": near_text}),
    st.fixed_dictionaries({"from": st.sampled_from(ROLES), "value": near_text}),
    st.dictionaries(keys, json_values, max_size=3),
    json_values,
)
turns = st.one_of(st.lists(turn, max_size=5), json_values)

# Rows of one kind per file, most of them nearly right, so that files get past format detection and
# into the checks of each row and field; now and then a row of another kind or of anything at all.
KINDS = {
    "text": st.fixed_dictionaries({"text": near_text}),
    "messages": st.fixed_dictionaries({"messages": turns}),
    "sharegpt": st.fixed_dictionaries({"conversations": turns}),
    "prompt-completion": st.fixed_dictionaries({"prompt": near_text, "completion": near_text}),
    "alpaca": st.fixed_dictionaries({"instruction": near_text, "output": near_text}, optional={"input": near_text}),
    "classification": st.fixed_dictionaries(
        {"text": near_text,
         "label": st.one_of(st.sampled_from(["pos", "neg", "neu", " pos ", "  "]), st.integers(0, 3),
                            st.sampled_from([0.0, 1.0, 2.5, -1, 10**9, 10_000]), scalars)}),
}
any_row = st.dictionaries(keys, json_values, max_size=4)


# Rows that are right, apart from what only shows in the whole: empty texts, long ones, a lone
# system turn, one class only.
CLEAN = {
    "text": st.fixed_dictionaries({"text": good_text}),
    "messages": st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool"]), "content": good_text}), max_size=4)
        .map(lambda turns: turns + [{"role": "assistant", "content": "Sure."}])}),
    "sharegpt": st.fixed_dictionaries({"conversations": st.lists(st.fixed_dictionaries(
        {"from": st.sampled_from(["human", "gpt", "system", "function", "observation"]), "value": good_text}),
        max_size=4).map(lambda turns: turns + [{"from": "gpt", "value": "Sure."}])}),
    "prompt-completion": st.fixed_dictionaries({"prompt": good_text, "completion": good_text}),
    "alpaca": st.fixed_dictionaries({"instruction": good_text, "output": good_text}, optional={"input": good_text}),
    "classification": st.fixed_dictionaries({"text": good_text, "label": st.sampled_from(["pos", "neg", "neu"])}),
}
_MODES = ["clean"] * 2 + ["numbered"] + ["near"] * 3


def rows_of(kind: str):
    """Rows of one kind: all of them right (but for what only shows in the whole), or mostly nearly
    right, with now and then one of another kind or of anything at all."""
    other = st.sampled_from(sorted(KINDS)).flatmap(lambda k: KINDS[k])
    near = st.lists(st.one_of(KINDS[kind], KINDS[kind], KINDS[kind], KINDS[kind], other, any_row),
                    min_size=1, max_size=6)
    clean = st.lists(CLEAN[kind], min_size=1, max_size=6)
    numbered = st.lists(st.fixed_dictionaries({"text": good_text, "label": st.integers(0, 4)}), min_size=1,
                        max_size=6) if kind == "classification" else clean
    return st.sampled_from(_MODES).flatmap(lambda mode: {"clean": clean, "numbered": numbered, "near": near}[mode])


row_lists = st.sampled_from(sorted(KINDS)).flatmap(rows_of)


@st.composite
def dataset_cases(draw):
    """(rows, task, format): the task and format mostly fit the rows, sometimes not."""
    kind = draw(st.sampled_from(sorted(KINDS)))
    fitting_task = "sequence-classification" if kind == "classification" else "causal-lm"
    task = draw(st.sampled_from([fitting_task] * 4 + list(TASKS)))
    fmt = draw(st.sampled_from(["auto", "auto", kind, kind] + list(FORMATS)))
    return draw(rows_of(kind)), task, fmt


def dumps(value) -> str:
    return json.dumps(value, allow_nan=True)


# -- the loader: arbitrary bytes -----------------------------------------------------------------

def _parquet_bytes() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"text": ["a b c", "d e f"], "label": [0, 1]}), sink)
    return sink.getvalue()


PARQUET = _parquet_bytes()


@st.composite
def damaged_parquet(draw):
    """The real thing with bytes flipped, cut off, or PAR1 around noise."""
    kind = draw(st.sampled_from(["flip", "cut", "noise"]))
    if kind == "noise":
        return b"PAR1" + draw(st.binary(max_size=200)) + b"PAR1"
    data = bytearray(PARQUET)
    if kind == "cut":
        return bytes(data[:draw(st.integers(4, len(data) - 1))])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(4, len(data) - 5))] = draw(st.integers(0, 255))
    return bytes(data)


text_like = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff"]).flatmap(
        lambda bom: st.text(max_size=60).map(lambda s: bom + s.encode("utf-8", "surrogatepass"))),
    row_lists.map(lambda rows: "".join(dumps(r) + "\n" for r in rows).encode()),
    row_lists.map(lambda rows: dumps(rows).encode()),
    # valid JSON cut short or with a byte changed
    st.tuples(row_lists, st.integers(0, 400), st.integers(0, 255)).map(
        lambda t: _damage("".join(dumps(r) + "\n" for r in t[0]).encode(), t[1], t[2])),
)


def _damage(data: bytes, at: int, byte: int) -> bytes:
    if not data:
        return data
    at %= len(data)
    return data[:at] + bytes([byte]) + data[at + 1:] if byte % 2 else data[:at]


@FAST
@given(ext=st.sampled_from(EXTENSIONS), data=st.data())
def test_arbitrary_bytes_read_or_raise_data_error(folder, ext, data):
    raw = data.draw(st.one_of(damaged_parquet(), st.binary(max_size=200)) if ext == ".parquet" else text_like)
    path = write(folder, ext, raw)
    try:
        rows = read_rows(str(path))
    except DataError as e:
        assert_input_error(e, DataError)
        return
    assert len(rows) >= 1


@FAST
@given(ext=st.sampled_from(EXTENSIONS), task=st.sampled_from(TASKS), data=st.data())
def test_arbitrary_bytes_prepare_or_raise_data_error(folder, tok, ext, task, data):
    raw = data.draw(damaged_parquet() if ext == ".parquet" else text_like)
    path = write(folder, ext, raw)
    load(DataSection(path=str(path), max_seq_len=32, eval_fraction=0.0), tok, task)


# -- the loader: arbitrary structures, every task and format --------------------------------------

@FAST
@given(case=dataset_cases(), ext=st.sampled_from([".jsonl", ".json"]), pack=st.booleans(),
       max_seq_len=st.sampled_from([8, 16, 64]), eval_fraction=st.sampled_from([0.0, 0.5, 0.9]),
       templated=st.booleans())
def test_json_structures_prepare_or_raise_data_error(folder, tok, bare_tok, case, ext, pack, max_seq_len,
                                                    eval_fraction, templated):
    rows, task, fmt = case
    tok = tok if templated else bare_tok
    text = dumps(rows) if ext == ".json" else "".join(dumps(r) + "\n" for r in rows)
    path = write(folder, ext, text.encode())
    section = DataSection(path=str(path), format=fmt, pack=pack, max_seq_len=max_seq_len,
                          eval_fraction=eval_fraction)
    prepared = load(section, tok, task)
    if prepared is not None and prepared.eval is None and eval_fraction > 0:
        assert any("evaluation" in note for note in prepared.notes)


@FEW
@given(task=st.sampled_from(TASKS), data=st.data())
def test_separate_eval_file_prepares_or_raises_data_error(folder, tok, task, data):
    """A good training file; the evaluation file is where things go wrong."""
    kind = "classification" if task == "sequence-classification" else data.draw(st.sampled_from(sorted(KINDS)))
    good = {"classification": [{"text": "great", "label": "pos"}, {"text": "awful", "label": "neg"}],
            "text": [{"text": "a b c"}], "prompt-completion": [{"prompt": "a", "completion": "b"}],
            "alpaca": [{"instruction": "a", "output": "b"}],
            "messages": [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}],
            "sharegpt": [{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}]}[kind]
    train_path = write(folder, ".jsonl", "".join(dumps(r) + "\n" for r in good).encode())
    evaluation = data.draw(rows_of(kind))
    eval_path = write(folder, ".jsonl", "".join(dumps(r) + "\n" for r in evaluation).encode())
    load(DataSection(path=str(train_path), eval_path=str(eval_path), max_seq_len=16), tok, task)


csv_cells = st.one_of(st.text(max_size=12), st.sampled_from(["", "1", "1.5", "nan", "inf", "-1", "1e300", "pos",
                                                            "neg", '"', "a,b", "\r\n"]))


@FAST
@given(header=st.lists(st.one_of(st.sampled_from(["text", "label", "sentence", "category", ""]), csv_cells),
                       min_size=1, max_size=3),
       body=st.lists(st.lists(csv_cells, min_size=0, max_size=4), max_size=6),
       bom=st.booleans(), task=st.sampled_from(TASKS))
def test_csv_tables_prepare_or_raise_data_error(folder, tok, header, body, bom, task):
    import csv

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(body)
    raw = (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode("utf-8", "surrogatepass")
    path = write(folder, ".csv", raw)
    load(DataSection(path=str(path), max_seq_len=16, eval_fraction=0.0), tok, task)


parquet_columns = st.dictionaries(
    st.one_of(st.sampled_from(["text", "label", "messages", "prompt", "completion"]), st.text(max_size=6)),
    st.sampled_from(["str", "int", "float", "bool", "null", "list", "struct"]), min_size=1, max_size=3)


@FEW
@given(columns=parquet_columns, n=st.integers(0, 5), data=st.data(), task=st.sampled_from(TASKS))
def test_parquet_tables_prepare_or_raise_data_error(folder, tok, columns, n, data, task):
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = {"str": st.one_of(st.none(), st.text(max_size=20)), "int": st.integers(-2**63, 2**63 - 1),
             "float": finite_or_not, "bool": st.booleans(), "null": st.none(),
             "list": st.lists(st.text(max_size=5), max_size=3),
             "struct": st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": st.text(max_size=10)})}
    table = {name: data.draw(st.lists(kinds[kind], min_size=n, max_size=n)) for name, kind in columns.items()}
    try:
        arrow = pa.table(table)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        assume(False)
    path = folder / f"f{next(_names)}.parquet"
    pq.write_table(arrow, path)
    load(DataSection(path=str(path), max_seq_len=16, eval_fraction=0.0), tok, task)


# -- the config parser -----------------------------------------------------------------------------

def _round_trips(cfg: RunConfig, folder) -> None:
    path = folder / f"c{next(_names)}.toml"
    path.write_text(cfg.to_toml(), encoding="utf-8")
    again = RunConfig.from_toml(path)
    assert again.to_dict() == cfg.to_dict()


def _parse(build, folder):
    try:
        cfg = build()
    except ConfigError as e:
        assert_input_error(e, ConfigError)
        return None
    _round_trips(cfg, folder)
    return cfg


config_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70), finite_or_not,
                           st.text(max_size=12))
config_values = st.recursive(config_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                     st.dictionaries(st.text(max_size=6), inner,
                                                                                     max_size=3)),
                             max_leaves=8)


def _field_values(cls):
    """Per field of an options dataclass: values near and far from what it takes."""
    out = {}
    for f in dataclasses.fields(cls):
        tp, meta = field_type(cls, f.name), f.metadata
        near = [f.default]
        for bound in (meta.get("min"), meta.get("max")):
            if bound is not None:
                near += [bound, bound - 1, bound + 1, bound * 2 + 0.5, -bound]
        near += list(meta.get("choices", ()))
        if tp is int:
            near = [int(v) if isinstance(v, (int, float)) and math.isfinite(v) else v for v in near]
        good = st.sampled_from([f.default] + list(meta.get("choices", ())))
        out[f.name] = st.one_of(good, good, good, st.sampled_from(near), config_scalars,
                                st.sampled_from([math.nan, math.inf, -math.inf, 2**64, 1e308, "", "all-linear",
                                                 ["q_proj", "v_proj"], ["q_proj", 1], []]))
    return out


def _section_dicts(cls):
    fields = _field_values(cls)
    return st.dictionaries(st.one_of(st.sampled_from(sorted(fields)), st.text(max_size=6)),
                           config_values, max_size=3) | st.fixed_dictionaries(
        {}, optional={name: strategy for name, strategy in fields.items()})


@st.composite
def variant_dicts(draw):
    name = draw(st.one_of(st.sampled_from(sorted(REGISTRY)), config_scalars))
    opts_cls = REGISTRY[name].options_cls if isinstance(name, str) and name in REGISTRY else \
        REGISTRY["lora"].options_cls
    options = draw(st.fixed_dictionaries({}, optional=_field_values(opts_cls)))
    return {"name": name, **options} if draw(st.booleans()) else options  # no name: lora


near_miss_configs = st.fixed_dictionaries({}, optional={
    **{name: st.one_of(_section_dicts(cls), config_values) for name, cls in SECTIONS.items()},
    "variant": st.one_of(variant_dicts(), config_values),
})
any_configs = st.one_of(near_miss_configs, st.dictionaries(st.text(max_size=8), config_values, max_size=4))


@FAST
@given(raw=any_configs)
def test_from_dict_parses_or_raises_config_error(folder, raw):
    _parse(lambda: RunConfig.from_dict(raw, "cfg.toml"), folder)


def _toml_value(value) -> str:
    """A Python value as a TOML literal (nan and inf included); strings via json, which TOML reads."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return '""'  # None has no TOML form


@st.composite
def toml_texts(draw):
    """TOML documents: from near-miss dicts, free text, and fragments that TOML reads oddly."""
    raw = draw(near_miss_configs)
    lines = []
    for section, values in raw.items():
        if isinstance(values, dict):
            lines.append(f"[{section}]")
            lines += [f"{_toml_value(k)} = {_toml_value(v)}" for k, v in values.items() if v is not None]
        else:
            lines.append(f"{section} = {_toml_value(values)}")
    text = "\n".join(lines) + "\n"
    return draw(st.one_of(st.just(text), st.text(max_size=200),
                          st.sampled_from(["v = " + "[" * 3000 + "]" * 3000, "[train]\nseed = 1e999\n",
                                           "[train]\nlearning_rate = 1_0.0\n", "\ufeff" + text, "[[train]]\n",
                                           "[train.sub]\nx = 1\n", "train = []\n", "[variant]\nname = 1\n"])))


@FAST
@given(text=toml_texts(), encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
def test_toml_files_parse_or_raise_config_error(folder, text, encoding):
    path = folder / f"c{next(_names)}.toml"
    path.write_bytes(text.encode(encoding, "surrogatepass"))
    _parse(lambda: RunConfig.from_toml(path), folder)


known_keys = st.sampled_from([f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)])
variant_keys = st.sampled_from(["variant.name"] + [f"variant.{f.name}" for spec in REGISTRY.values()
                                                   for f in dataclasses.fields(spec.options_cls)])
override_keys = st.sampled_from(["known"] * 3 + ["variant"] * 3 + ["any"]).flatmap(
    lambda kind: {"known": known_keys, "variant": variant_keys, "any": st.text(max_size=12)}[kind])
override_values = st.one_of(config_scalars.map(_toml_value), config_values.map(_toml_value), st.text(max_size=20),
                            st.sampled_from(["0", "1", "8", "0.5", "true", "false", "'cosine'", "fp32", "auto"]),
                            st.sampled_from(sorted(REGISTRY)),
                            st.sampled_from(["nan", "inf", "-inf", "1e999", "", "[", "'a'", '"\\ud800"',
                                             "[" * 2000, "1\nx = 2", "{a = 1}"]))


@FAST
@given(assignments=st.lists(st.tuples(override_keys, override_values).map("=".join), max_size=4))
def test_overrides_apply_or_raise_config_error(folder, assignments):
    _parse(lambda: RunConfig().with_overrides(assignments), folder)
