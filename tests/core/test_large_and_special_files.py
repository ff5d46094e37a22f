"""Input files at real size, and files that are not files: data files are checked a chunk at a
time (a binary file is refused from its first bytes, a large one loads without being held in
memory, an error deep inside still names its line), and a weight file that is a pipe, a socket,
a device, unreadable or too short is one line instead of a wait forever.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from conftest import ROOT
from studio.cli import main
from studio.core import jsoncheck
from studio.core.datafiles import read_rows
from studio.core.errors import DataError, ModelError
from studio.core.modelfiles import describe_model
from studio.core.modelcache import human_size
from studio.core.models import ResolvedModel, load_model, resolve_source
from studio.core.plan import model_shapes

DEFAULT = ROOT / "resources" / "configs" / "default.toml"
MB = 1_000_000


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """The Arrow copies of the big files go to tmp_path, not the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def one_line(message: str) -> str:
    assert "\n" not in message and "Traceback" not in message, message
    return message


# -- weight files that are not regular files --------------------------------------------------------

# Opening a pipe for writing without blocking succeeds only while a reader waits on it: the watcher
# notes that and lets the reader go on. A process, not a thread: a reader stuck in C may hold the GIL.
_WATCHER = """
import os, sys, time
fifo, mark = sys.argv[1:]
while True:
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        open(mark, "a").close()
    except OSError:
        pass
    time.sleep(0.05)
"""


@contextlib.contextmanager
def pipe_never_opened(fifo: Path):
    """Fails the test if anything opens `fifo` for reading, and ends that reader's wait, so that a
    regression fails instead of hanging the suite."""
    mark = fifo.parent / f"{fifo.name}.opened"
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, str(fifo), str(mark)])
    try:
        yield
    finally:
        watcher.kill()
        watcher.wait()
    assert not mark.exists(), f"{fifo} was opened"


@pytest.fixture
def fifo_model(tiny_llama, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama, folder)
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    return folder


def test_fifo_weights_refused_by_train_with_one_line(fifo_model, tmp_path, capsys):
    out = tmp_path / "runs"
    with pipe_never_opened(fifo_model / "model.safetensors"):
        code = main(["train", str(DEFAULT), "--set", f"model.source={fifo_model}", "--set", f"train.output_dir={out}",
                     "--set", "train.max_steps=1", "--set", "data.max_seq_len=64", "--set", "train.gallery=false"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == (f"lora-studio: error: model.source: {fifo_model / 'model.safetensors'}: "
                        "a named pipe (FIFO), not a regular file")
    assert not out.exists() or not any(out.iterdir())


def test_fifo_weights_refused_by_inspect_plan_and_load(fifo_model):
    expected = f"model.source: {fifo_model / 'model.safetensors'}: a named pipe (FIFO), not a regular file"
    with pipe_never_opened(fifo_model / "model.safetensors"):
        for describe in (describe_model, model_shapes, resolve_source):
            with pytest.raises(ModelError) as err:
                describe(str(fifo_model))
            assert one_line(str(err.value)) == expected, describe.__name__
        # load_model checks by itself too (an export loads a recorded base folder without resolve_source)
        with pytest.raises(ModelError) as err:
            load_model(ResolvedModel(str(fifo_model), str(fifo_model), "folder", "-"), "causal-lm")
        assert one_line(str(err.value)) == expected


def _socket(path: Path) -> None:
    # a relative name: AF_UNIX paths are limited to ~100 bytes, tmp_path may be longer
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path.name)
        sock.close()
    finally:
        os.chdir(cwd)


SPECIAL = {
    "socket": (_socket, "a socket, not a regular file"),
    "device": (lambda p: p.symlink_to("/dev/zero"), "a device, not a regular file"),
    "folder": (lambda p: p.mkdir(), "a folder, not a regular file"),
    "dangling link": (lambda p: p.symlink_to(p.parent / "gone"), "a symbolic link that leads nowhere"),
    "4 bytes": (lambda p: p.write_bytes(b"\x08\x00\x00\x00"), "only 4 bytes, too small to be a weight file"),
}


@pytest.mark.parametrize("kind", list(SPECIAL))
def test_weight_files_that_cannot_be_weights_are_one_line(kind, tiny_llama, tmp_path):
    make, reason = SPECIAL[kind]
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama, folder)
    weights = folder / "model.safetensors"
    weights.unlink()
    make(weights)
    for describe in (resolve_source, describe_model):
        with pytest.raises(ModelError) as err:
            describe(str(folder))
        assert one_line(str(err.value)).startswith(f"model.source: {weights}: {reason}"), err.value


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_weights_are_one_line(tiny_llama, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama, folder)
    (folder / "model.safetensors").chmod(0)
    with pytest.raises(ModelError, match=r"model\.safetensors: cannot read \(permission denied\)$"):
        resolve_source(str(folder))


def test_other_pipes_a_loader_would_open_are_refused(tiny_llama, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama, folder)
    (folder / "tokenizer.json").unlink()
    os.mkfifo(folder / "tokenizer.json")
    gguf = tmp_path / "model.gguf"
    os.mkfifo(gguf)
    with pipe_never_opened(folder / "tokenizer.json"), pipe_never_opened(gguf):
        with pytest.raises(ModelError, match=r"tokenizer\.json: a named pipe \(FIFO\), not a regular file$"):
            resolve_source(str(folder))
        for describe in (describe_model, resolve_source):
            with pytest.raises(ModelError) as err:
                describe(str(gguf))
            assert one_line(str(err.value)) == f"model.source: {gguf}: a named pipe (FIFO), not a regular file"


# -- data files at real size ------------------------------------------------------------------------

def traced(call):
    """(result or the exception raised, peak Python heap in bytes, seconds)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = call()
    except Exception as e:  # noqa: BLE001 - returned for the test to look at
        result = e
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, peak, seconds


def write_random(path: Path, size: int, nul: bool) -> Path:
    with open(path, "wb") as f:
        for _ in range(size // (1 << 20)):
            chunk = os.urandom(1 << 20)
            f.write(chunk if nul else chunk.replace(b"\x00", b"\xff"))
    return path


@pytest.mark.parametrize("nul, pattern", [(True, r"^noise\.jsonl: binary data at byte offset \d+ \(expected UTF-8"),
                                          (False, r"^noise\.jsonl: not UTF-8 text: invalid byte 0x")])
def test_binary_file_is_refused_from_its_first_bytes(tmp_path, nul, pattern):
    path = write_random(tmp_path / "noise.jsonl", 50 << 20, nul)
    error, peak, seconds = traced(lambda: read_rows(str(path)))
    assert isinstance(error, DataError), error
    assert re.match(pattern, one_line(str(error))), error
    assert peak < 8 * MB, f"{peak / MB:.1f} MB of Python heap to refuse a 52 MB file"
    assert seconds < 5


def write_rows(path: Path, size: int, bad: dict[int, str] | None = None) -> int:
    """A JSON-lines file of about `size` bytes; `bad` puts raw lines at line numbers. Returns the rows."""
    filler = "The quick brown fox jumps over the lazy dog. " * 8
    bad = bad or {}
    n = size // (len(filler) + 24)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(1, n + 1):
            f.write(bad.get(i, f'{{"text": "{i} {filler}"}}') + "\n")
    return n


def test_large_jsonl_loads_without_holding_the_file(tmp_path):
    """The peak heap does not grow with the file: 12 MB and 48 MB peak alike (datasets' own reader
    holds one 10 MB batch; the checks hold about a megabyte)."""
    peaks = []
    for name, size in (("small.jsonl", 12 * MB), ("big.jsonl", 48 * MB)):
        path = tmp_path / name
        n = write_rows(path, size)
        rows, peak, _ = traced(lambda: read_rows(str(path)))
        assert not isinstance(rows, Exception), rows
        assert len(rows) == n and rows[n - 1]["text"].startswith(f"{n} The quick")
        peaks.append(peak)
    grew = peaks[1] - peaks[0]
    assert grew < 6 * MB, f"peak heap grew {grew / MB:.1f} MB for 36 MB more file ({peaks[0] / MB:.1f} MB at 12 MB)"


@pytest.mark.parametrize("line, message", [
    ('{"text": "cut', "truncated JSON; expected one JSON object per line"),
    ('{"text" "b"}', "invalid JSON (Expecting ':' delimiter at column 9)"),
    ("[1, 2]", "expected a JSON object {...}, got a list"),
    ('{"text": 1e999}', "'text' is the number 1e999, too large to store"),  # found after the loader fails
    ('{"text": "a", "text": "b"}', "the key 'text' appears twice in one object"),
])
def test_error_deep_in_a_large_jsonl_names_its_line(tmp_path, line, message):
    path = tmp_path / "rows.jsonl"
    bad_line = 23_456  # about 9 MB in, several chunks past the first
    write_rows(path, 12 * MB, {bad_line: line})
    with pytest.raises(DataError) as err:
        read_rows(str(path))
    assert one_line(str(err.value)).startswith(f"rows.jsonl: line {bad_line}: {message}"), err.value


def test_line_breaks_split_between_chunks():
    chunks = ["a\r", "\nb\r", "\r\n", "\nc", "d\n"]
    assert list(jsoncheck.numbered_lines("x", chunks)) == [(1, "a"), (2, "b"), (3, ""), (4, ""), (5, "cd")]


def test_json_too_large_to_parse_whole_is_refused(tmp_path, monkeypatch):
    """Only what must be parsed whole is refused for its size: a JSON array, one enormous line."""
    monkeypatch.setattr(jsoncheck, "_available_memory", lambda: 8 * MB)  # 2 MB parsed whole at most
    rows = [f'{{"text": "row {i} {"x" * 80}"}}' for i in range(30_000)]  # 3 MB
    array = tmp_path / "rows.json"
    array.write_text("[" + ",\n".join(rows) + "]", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_rows(str(array))
    assert one_line(str(err.value)).startswith(f"rows.json: a single JSON document of "
                                               f"{human_size(array.stat().st_size)}, too large to read")
    assert "save the rows as JSON lines (.jsonl, one object per line)" in str(err.value)
    # JSON lines saved as .json are read a line at a time: no limit but the line's
    lines = tmp_path / "lines.json"
    lines.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert len(read_rows(str(lines))) == 30_000
    lines.write_text("\n".join(rows[:5] + ['{"text" 1}'] + rows[5:]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"^lines\.json: line 6: invalid JSON"):
        read_rows(str(lines))
    one = tmp_path / "one.jsonl"
    one.write_text('{"text": "a"}\n{"text": "' + "y" * (3 << 20) + '"}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_rows(str(one))
    assert one_line(str(err.value)).startswith("one.jsonl: line 2 is longer than 2 MB: one row that large")
    minified = tmp_path / "minified.jsonl"
    minified.write_text("[" + ", ".join(rows) + "]\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_rows(str(minified))
    assert one_line(str(err.value)).startswith("minified.jsonl: line 1: over 1.05 MB of text that is not a JSON "
                                               "object (it starts with '[')")


def test_keys_that_read_the_same_in_arrow_are_refused_with_the_file(tmp_path):
    """Found by test_properties: {"text": {"": null, "\\u0000": null}} loaded, then the rows could not be
    read back ("duplicate field names") and the error escaped as a ValueError."""
    from studio.core.datafiles import read_rows
    from studio.core.errors import DataError

    path = tmp_path / "nul-keys.jsonl"
    path.write_text('{"text": {"": null, "\\u0000": null}}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"^nul-keys.jsonl: field 'text': two keys of one object read the same"):
        read_rows(str(path))
