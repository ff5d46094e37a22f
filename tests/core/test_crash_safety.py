"""Crash safety (Hardening 3 and 4): runs, gallery writes and exports killed with SIGKILL at exact
moments, a full disk (injected, and a real small tmpfs where this machine lets us mount one),
and failures inside the worker (an exception, out of memory).

The kills are real: `kill_driver.py --serve` imports torch & co once and forks a fresh process
per command, which SIGKILLs itself at the moment its kill hook names (no finally, no atexit,
no flush runs). Then the run folder and the gallery are inspected, and the run is resumed — in
the same way, and once through `python -m studio.cli` in a plain subprocess — and compared step
by step with one uninterrupted run of the same config.
"""

from __future__ import annotations

import errno
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import ROOT
from run_events import curve
from studio.cli import main
from studio.core.config import RunConfig
from studio.core.gallery import Gallery
from studio.core.paths import DiskFullError, atomic_dir, sweep_stale
from studio.core.telemetry.events import EventLog, LogBusy, read_events
from studio.core.training import Session, incomplete_checkpoints, last_checkpoint

posix_only = pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX: flock, pid checks, fork")

DEFAULT = ROOT / "resources" / "configs" / "default.toml"
DRIVER = Path(__file__).with_name("kill_driver.py")
STEPS = 6
HIDDEN_TEMP = re.compile(r"^\..*\.(partial|new|deleting|old|tmp)$")
ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def train_sets(tiny_llama, out) -> list[str]:
    return [f"model.source={tiny_llama}", f"train.output_dir={out}", f"train.max_steps={STEPS}",
            "data.max_seq_len=64", "train.eval_every=0", "train.save_every=2", "train.device=cpu",
            "train.precision=fp32", "train.gallery=false"]


def train_argv(tiny_llama, out) -> list[str]:
    argv = ["train", str(DEFAULT)]
    for s in train_sets(tiny_llama, out):
        argv += ["--set", s]
    return argv


def train_config(tiny_llama, out) -> RunConfig:
    return RunConfig.from_toml(DEFAULT).with_overrides(train_sets(tiny_llama, out))


class Driver:
    """The fork server: one command per call, answered with how its process ended."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.n = 0
        self.proc = subprocess.Popen([sys.executable, str(DRIVER), "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert "ready" in self._read(300)

    def _read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("the kill driver did not answer")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the kill driver died")
        return json.loads(line)

    def run(self, argv, kill: dict | None = None, home: Path | None = None, timeout: float = 300) -> dict:
        self.n += 1
        log = self.tmp / f"job{self.n}.log"
        job = {"argv": [str(a) for a in argv], "kill": kill, "log": str(log),
               "env": {"LORA_STUDIO_HOME": str(home or self.tmp / "home")}}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        reply = self._read(timeout)
        reply["log"] = log.read_text(encoding="utf-8", errors="replace")
        return reply

    def killed(self, argv, kill: dict, home: Path | None = None) -> dict:
        reply = self.run(argv, kill, home)
        assert reply["signal"] == 9, f"expected a SIGKILL, got {reply}"
        return reply

    def ok(self, argv, home: Path | None = None) -> dict:
        reply = self.run(argv, None, home)
        assert reply["code"] == 0, reply["log"]
        assert "Traceback" not in reply["log"], reply["log"]
        return reply

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    if not hasattr(os, "fork"):
        pytest.skip("the kill driver forks (POSIX only)")
    d = Driver(tmp_path_factory.mktemp("kill-driver"))
    yield d
    d.close()


# -- reading a run folder --------------------------------------------------------------------------

def strict_events(run_dir: Path) -> list[dict]:
    """events.jsonl as strictly valid JSON lines: UTF-8, every line an object, ending in a newline."""
    raw = (run_dir / "events.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    return [json.loads(line.decode("utf-8")) for line in raw.splitlines()]


def lenient_events(run_dir: Path) -> tuple[list[dict], bool]:
    """A killed run's log: every line but possibly a torn last one is valid; (events, torn)."""
    lines = (run_dir / "events.jsonl").read_bytes().splitlines(keepends=True)
    events = [json.loads(line.decode("utf-8")) for line in lines[:-1]]
    try:
        events.append(json.loads(lines[-1].decode("utf-8")))
        return events, not lines[-1].endswith(b"\n")
    except ValueError:
        return events, True


def last_attempt(events: list[dict]) -> list[dict]:
    starts = [i for i, e in enumerate(events) if e["type"] == "run_started"]
    return events[starts[-1]:]


def only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if HIDDEN_TEMP.match(p.name)) if folder.is_dir() else []


def adapter_tensors(folder: Path) -> dict:
    return load_file(str(folder / "adapter_model.safetensors"))


def assert_same_adapter(got: Path, expected: dict) -> None:
    tensors = adapter_tensors(got)
    assert tensors.keys() == expected.keys()
    worst = max((tensors[k] - expected[k]).abs().max().item() for k in tensors)
    assert worst <= 1e-5, worst


def assert_matches_reference(run_dir: Path, ref: dict, resumed_from: int) -> None:
    """Completed, the log valid JSON lines throughout, the same loss curve as the uninterrupted
    run (the resumed steps included), the same adapter, nothing half-written left."""
    events = strict_events(run_dir)
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "completed", events[-1]
    attempt = last_attempt(events)
    assert attempt[0]["resumed_from"].endswith(f"checkpoint-{resumed_from}")
    resumed = {e["step"]: e["loss"] for e in attempt if e["type"] == "step"}
    assert sorted(resumed) == list(range(resumed_from + 1, STEPS + 1))
    for step, loss in resumed.items():
        assert loss == pytest.approx(ref["curve"][step], abs=1e-4), (step, loss, ref["curve"][step])
    got = curve(events)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert all(got[s] == pytest.approx(ref["curve"][s], abs=1e-4) for s in got), (got, ref["curve"])
    assert_same_adapter(run_dir / "adapter", ref["adapter"])
    meta = json.loads((run_dir / "adapter" / "studio.json").read_text())
    assert meta["metrics"]["loss"] == pytest.approx(ref["curve"][STEPS], abs=1e-4)
    assert not incomplete_checkpoints(run_dir)
    assert hidden_leftovers(run_dir) == [] and hidden_leftovers(run_dir / "checkpoints") == []


@pytest.fixture(scope="module")
def ref(driver, tiny_llama, tmp_path_factory) -> dict:
    """One uninterrupted run: the curve and adapter every interrupted run must end up with."""
    out = tmp_path_factory.mktemp("reference")
    driver.ok(train_argv(tiny_llama, out))
    run_dir = only_run(out)
    events = strict_events(run_dir)
    return {"run_dir": run_dir, "curve": curve(events), "adapter": adapter_tensors(run_dir / "adapter")}


# -- A. the event log --------------------------------------------------------------------------------

def test_a_torn_last_line_is_cut_off_when_the_log_is_reopened(tmp_path):
    path = tmp_path / "events.jsonl"
    good = '{"type": "step", "step": 1, "loss": 1.5}\n{"type": "step", "step": 2, "loss": 1.25}\n'
    path.write_bytes(good.encode() + '{"type": "progress", "message": "caf'.encode() + "é".encode()[:1])
    events = list(read_events(path))            # readable as it is: the torn line is skipped
    assert [e["step"] for e in events] == [1, 2]
    log = EventLog(path)
    log({"type": "step", "step": 3, "loss": 1.0})
    log.close()
    lines = path.read_bytes().decode("utf-8").splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]   # valid JSON lines again


def test_read_events_tolerates_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"type": "step", "step": 1}\n{"type": "progress", "message": "\xff\xfe"}\n'
                     b'{"type": "step", "step": 2}\n{"type": "step", "st\xc3')
    assert [e["type"] for e in read_events(path)] == ["step", "progress", "step"]


def test_a_failed_log_write_leaves_no_half_line_and_still_reaches_the_sink(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    seen = []
    log = EventLog(path, forward=seen.append)
    log({"type": "step", "step": 1})
    original = EventLog._write_bytes

    def full_disk(self, data):
        original(self, data[: len(data) // 2])   # the disk fills up halfway through the line
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(EventLog, "_write_bytes", full_disk)
    with pytest.raises(DiskFullError, match="no space left on device while writing .*events.jsonl"):
        log({"type": "run_finished", "step": 1, "status": "failed"})
    assert [e["type"] for e in seen] == ["step", "run_finished"]
    monkeypatch.undo()
    log({"type": "step", "step": 2})
    log.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


@posix_only
def test_one_writer_per_event_log(tmp_path):
    first = EventLog(tmp_path / "events.jsonl", exclusive=True)
    try:
        with pytest.raises(LogBusy):
            EventLog(tmp_path / "events.jsonl", exclusive=True)
    finally:
        first.close()
    EventLog(tmp_path / "events.jsonl", exclusive=True).close()   # free again once closed


# -- B. SIGKILL during training -----------------------------------------------------------------------

STEP = "studio.core.telemetry.events:EventLog.write"
TRAIN_KILLS = {
    # kill point: (hook, the newest complete checkpoint it leaves)
    "between-steps": ({"target": STEP, "when": "after", "match": {"type": "step", "step": 3}}, 2),
    "in-trainer-checkpoint-save": ({"target": "transformers.trainer:Trainer._save_rng_state", "nth": 2}, 2),
    "before-checkpoint-marker": ({"target": "studio.core.training:Session.save_checkpoint_state",
                                  "when": "after", "nth": 2}, 2),
    "torn-event-line": ({"target": STEP, "when": "torn", "match": {"type": "step", "step": 5}}, 4),
    "adapter-files-half-written": ({"target": "studio.core.training:Session._final_metrics"}, 6),
    "adapter-before-rename": ({"target": "studio.core.paths:_commit", "text": "/adapter')"}, 6),
}


@pytest.mark.parametrize("point", list(TRAIN_KILLS))
def test_a_run_killed_resumes_on_the_same_curve(point, driver, ref, tiny_llama, tmp_path):
    kill, newest = TRAIN_KILLS[point]
    driver.killed(train_argv(tiny_llama, tmp_path / "runs"), kill)
    run_dir = only_run(tmp_path / "runs")

    events, torn = lenient_events(run_dir)
    assert torn == (point == "torn-event-line")
    assert not any(e["type"] == "run_finished" for e in events)
    assert last_checkpoint(run_dir).name == f"checkpoint-{newest}"
    if point in ("in-trainer-checkpoint-save", "before-checkpoint-marker"):
        assert [p.name for p in incomplete_checkpoints(run_dir)] == ["checkpoint-4"]   # ignored
    assert not (run_dir / "adapter").exists()          # never half an adapter
    if point.startswith("adapter"):
        assert [n for n in hidden_leftovers(run_dir) if n.startswith(".adapter.")]
    assert curve(events) == {s: ref["curve"][s] for s in curve(events)}

    if point == "torn-event-line":   # once through the real entry point, as a person resumes
        proc = subprocess.run([sys.executable, "-m", "studio.cli", "train", "--resume", str(run_dir)], cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout.strip().splitlines()[-1] == str(run_dir)
    else:
        driver.ok(["train", "--resume", run_dir])
    assert_matches_reference(run_dir, ref, newest)


def test_a_run_killed_after_adding_itself_to_the_gallery_is_not_added_twice(driver, ref, tiny_llama, tmp_path):
    home = tmp_path / "home"
    argv = [a.replace("train.gallery=false", "train.gallery=true") for a in train_argv(tiny_llama, tmp_path / "runs")]
    driver.killed(argv, {"target": "studio.core.gallery:Gallery.add_run", "when": "after"}, home=home)
    run_dir = only_run(tmp_path / "runs")
    assert gallery_state(home) == [run_dir.name]
    reply = driver.ok(["train", "--resume", run_dir], home=home)
    assert gallery_state(home) == [run_dir.name], reply["log"]
    assert strict_events(run_dir)[-1]["gallery_entry"] == run_dir.name
    assert_matches_reference(run_dir, ref, STEPS)


@posix_only
def test_a_second_process_cannot_train_the_same_run(ref, tmp_path):
    run_dir = tmp_path / ref["run_dir"].name
    shutil.copytree(ref["run_dir"], run_dir)
    shutil.rmtree(run_dir / "adapter")
    lines = (run_dir / "events.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "events.jsonl").write_text("".join(lines[:-1]))   # as if killed before run_finished
    holder = EventLog(run_dir / "events.jsonl", exclusive=True)   # another process training it
    try:
        result = Session(RunConfig.from_toml(run_dir / "config.toml"), resume_dir=run_dir).run()
    finally:
        holder.close()
    assert result.status == "failed" and result.exit_code == 2
    assert "another lora-studio process is training this run" in result.error
    assert not (run_dir / "adapter").exists()


# -- C. SIGKILL during gallery writes and exports -------------------------------------------------------

@pytest.fixture(scope="module")
def gallery_template(driver, ref, tmp_path_factory) -> Path:
    """A studio home whose gallery holds two adapters of the reference run, `base` and `base2`."""
    home = tmp_path_factory.mktemp("gallery-template")
    driver.ok(["gallery", "add", ref["run_dir"], "--name", "base"], home=home)
    driver.ok(["gallery", "add", ref["run_dir"], "--name", "base2"], home=home)
    return home


def gallery_state(home: Path) -> list[str]:
    """The names the gallery lists; each must load (its config parses, its safetensors read)."""
    entries = Gallery(home / "gallery").entries()
    for entry in entries:
        json.loads((entry.path / "adapter_config.json").read_text())
        assert adapter_tensors(entry.path)
    return sorted(e.name for e in entries)


COMMIT = "studio.core.paths:_commit"
RENAME = "studio.core.gallery:rename_noreplace"
ADD = ["gallery", "add", "{run}", "--name", "added"]
COMBINE = ["combine", "base", "base2", "--method", "cat", "--name", "both"]
RESIZE = ["resize", "base", "--rank", "2", "--name", "small"]
GALLERY_KILLS = {
    # kill point: (command, hook, what the gallery lists afterwards: +added / -removed)
    "add-after-first-file": (ADD, {"target": "shutil:copy2", "when": "after"}, ""),
    "add-before-rename": (ADD, {"target": COMMIT}, ""),
    "add-after-rename": (ADD, {"target": COMMIT, "when": "after"}, "+added"),
    "rename-before": (["gallery", "rename", "base2", "renamed"], {"target": RENAME}, ""),
    "rename-after": (["gallery", "rename", "base2", "renamed"], {"target": RENAME, "when": "after"},
                     "-base2 +renamed"),
    "delete-after-set-aside": (["gallery", "delete", "base2", "--yes"], {"target": RENAME, "when": "after"}, "-base2"),
    "delete-while-removing": (["gallery", "delete", "base2", "--yes"], {"target": "os:unlink", "when": "after"},
                              "-base2"),
    "combine-in-scratch": (COMBINE, {"target": "studio.core.gallery:Gallery.add_folder"}, ""),
    "combine-before-rename": (COMBINE, {"target": COMMIT}, ""),
    "combine-after-rename": (COMBINE, {"target": COMMIT, "when": "after"}, "+both"),
    "resize-in-scratch": (RESIZE, {"target": "studio.core.gallery:Gallery.add_folder"}, ""),
    "resize-before-rename": (RESIZE, {"target": COMMIT}, ""),
}
# where the killed process leaves a hidden temporary folder behind (to be swept, never listed)
LEAVES_A_TEMP = {"add-after-first-file", "add-before-rename", "delete-after-set-aside", "delete-while-removing",
                 "combine-in-scratch", "combine-before-rename", "combine-after-rename", "resize-in-scratch",
                 "resize-before-rename"}


@pytest.mark.parametrize("point", list(GALLERY_KILLS))
def test_a_gallery_write_killed_leaves_the_gallery_whole(point, driver, ref, gallery_template, tmp_path):
    command, kill, change = GALLERY_KILLS[point]
    home = tmp_path / "home"
    shutil.copytree(gallery_template, home)
    before = gallery_state(home)
    argv = [a.replace("{run}", str(ref["run_dir"])) for a in command]
    driver.killed(argv, kill, home=home)

    expected = set(before)
    for word in change.split():
        (expected.add if word[0] == "+" else expected.discard)(word[1:])
    root = home / "gallery"
    left = hidden_leftovers(root)
    assert bool(left) == (point in LEAVES_A_TEMP), left
    assert gallery_state(home) == sorted(expected)      # never a half entry; listing sweeps the rest
    assert hidden_leftovers(root) == [], f"left behind: {left}"
    if not change:   # the gallery is as it was: the same command now simply works
        driver.ok(argv, home=home)
        assert len(gallery_state(home)) == len(before) + {"gallery": 1 if command[1] == "add" else 0,
                                                          "combine": 1, "resize": 1}[command[0]]


def _export_owner(out: Path) -> str:
    return json.loads((out / "studio.json").read_text())["name"]


EXPORT_KILLS = {
    # kill point: (export kind, hook, whether an earlier export is being replaced, whose export OUT holds after)
    "adapter-after-first-file": ("--adapter", {"target": "shutil:copy2", "when": "after"}, False, None),
    "adapter-before-rename": ("--adapter", {"target": COMMIT}, False, None),
    "adapter-replacing-before-swap": ("--adapter", {"target": COMMIT}, True, "base"),
    "adapter-replacing-after-swap": ("--adapter", {"target": "studio.core.paths:_rename2", "when": "after"}, True,
                                     "base2"),
    "merged-while-writing": ("--merged", {"target": "transformers.modeling_utils:PreTrainedModel.save_pretrained",
                                          "when": "after"}, False, None),
    "merged-before-rename": ("--merged", {"target": COMMIT}, False, None),
}


@pytest.mark.parametrize("point", list(EXPORT_KILLS))
def test_an_export_killed_leaves_the_gallery_and_the_target_whole(point, driver, gallery_template, tmp_path):
    kind, kill, replacing, owner = EXPORT_KILLS[point]
    home = tmp_path / "home"
    shutil.copytree(gallery_template, home)
    before = gallery_state(home)
    out = tmp_path / "exports" / "out"
    if replacing:
        driver.ok(["export", "base", kind, out], home=home)
    driver.killed(["export", "base2", kind, out, "--force"], kill, home=home)

    assert gallery_state(home) == before and hidden_leftovers(home / "gallery") == []
    if owner is None:
        assert not out.exists()
    else:   # the old export or the new one, whole
        assert _export_owner(out) == owner
        assert_same_adapter(out, adapter_tensors(home / "gallery" / "base"))
    # the next export to the same place sweeps what the killed one left and succeeds
    driver.ok(["export", "base2", kind, out, "--force"], home=home)
    assert hidden_leftovers(out.parent) == []
    if kind == "--adapter":
        assert _export_owner(out) == "base2"
    else:
        assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()


@posix_only
def test_the_sweep_spares_a_live_writer_and_clears_what_dead_ones_left(tmp_path):
    root = tmp_path / "gallery"
    root.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        names = {f".a.{live.pid}.abcdefgh.partial": True, f".b.{dead.pid}.abcdefgh.partial": False,
                 f".c.{dead.pid}.abcdefgh.deleting": False, f".d.{dead.pid}.abcdefgh.new": False,
                 ".e.abcdefgh.partial": True, ".config": True}   # a name without a pid is not ours
        for name in names:
            (root / name).mkdir()
            (root / name / "adapter_model.safetensors").write_bytes(b"half")
        assert Gallery(root).entries() == []
        assert sorted(p.name for p in root.iterdir()) == sorted(n for n, kept in names.items() if kept)
        live.kill()
        live.wait()
        Gallery(root).entries()
        assert f".a.{live.pid}.abcdefgh.partial" not in [p.name for p in root.iterdir()]
    finally:
        live.kill()


@posix_only
def test_a_replace_killed_between_its_renames_is_undone(tmp_path):
    """Where the OS cannot swap two folders in one step, the old one is set aside first; the
    sweep puts it back if the writer died before the new one took its place."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".out.{dead.pid}.abcdefgh.old").mkdir()
    (tmp_path / f".out.{dead.pid}.abcdefgh.old" / "kept.txt").write_text("old")
    assert sweep_stale(tmp_path, "out")
    assert (tmp_path / "out" / "kept.txt").read_text() == "old"


def test_atomic_dir_replaces_in_one_step_and_leaves_nothing(tmp_path):
    final = tmp_path / "out"
    for text in ("one", "two"):
        with atomic_dir(final) as tmp:
            (tmp / "f.txt").write_text(text)
        assert (final / "f.txt").read_text() == text
        assert hidden_leftovers(tmp_path) == []


# -- D. a full disk -------------------------------------------------------------------------------------

def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def the_error(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("lora-studio: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0].removeprefix("lora-studio: error: ")


def resume_completes(run_dir: Path, ref: dict, resumed_from: int) -> None:
    result = Session(RunConfig.from_toml(run_dir / "config.toml"), resume_dir=run_dir).run()
    assert result.status == "completed", result.error
    assert_matches_reference(run_dir, ref, resumed_from)


@pytest.mark.parametrize("stays_full", [False, True], ids=["log-still-writable", "log-full-too"])
def test_a_full_disk_at_a_checkpoint(stays_full, ref, tiny_llama, tmp_path, capsys, monkeypatch):
    """The second checkpoint does not fit. With `stays_full` the event log cannot take the
    run_finished line either: that must not hide the checkpoint's error, nor tear the log."""
    from transformers import Trainer

    calls = {"n": 0}
    original, original_write = Trainer._save_optimizer_and_scheduler, EventLog._write_bytes

    def fills_up(self, output_dir):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(output_dir, "optimizer.pt").write_bytes(b"half an optimizer")
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, output_dir)

    def log_write(self, data):
        if stays_full and calls["n"] >= 2:
            original_write(self, data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        return original_write(self, data)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", fills_up)
    monkeypatch.setattr(EventLog, "_write_bytes", log_write)
    code, out, err = cli(capsys, *train_argv(tiny_llama, tmp_path / "runs"))
    monkeypatch.undo()
    run_dir = only_run(tmp_path / "runs")
    assert code == 1
    assert the_error(err) == (f"no space left on device while writing {run_dir / 'checkpoints' / 'checkpoint-4'}: "
                              f"free some space and resume with lora-studio train --resume {run_dir}")
    assert out.strip() == str(run_dir)
    # what was saved before is intact; the cut-short checkpoint is gone (its space given back)
    assert last_checkpoint(run_dir).name == "checkpoint-2"
    assert not (run_dir / "checkpoints" / "checkpoint-4").exists()
    events = strict_events(run_dir)
    if stays_full:
        assert not [e for e in events if e["type"] == "run_finished"]
        assert [e["step"] for e in events if e["type"] == "checkpoint"] == [2]
    else:
        assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "failed"
    assert not (run_dir / "error.log").exists()    # not a bug: no trace to keep
    resume_completes(run_dir, ref, 2)


def test_a_full_disk_while_saving_the_adapter(ref, tiny_llama, tmp_path, monkeypatch, recorder):
    def fills_up(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Session, "_final_metrics", fills_up)
    result = Session(train_config(tiny_llama, tmp_path / "runs")).run(sink=recorder)
    monkeypatch.undo()
    run_dir = result.run_dir
    assert result.status == "failed" and result.exit_code == 1 and result.adapter_path is None
    assert result.error == (f"no space left on device while writing {run_dir / 'adapter'}: "
                            f"free some space and resume with lora-studio train --resume {run_dir}")
    assert recorder.of("run_finished")[-1]["error"] == result.error
    assert not (run_dir / "adapter").exists() and hidden_leftovers(run_dir) == []
    assert last_checkpoint(run_dir).name == f"checkpoint-{STEPS}"
    resume_completes(run_dir, ref, STEPS)   # nothing left to train: the adapter is saved from it


def test_a_full_disk_while_writing_the_event_log(ref, tiny_llama, tmp_path, monkeypatch, recorder):
    original = EventLog._write_bytes

    def fills_up(self, data):
        if b'"type": "step", "step": 3,' in data:
            original(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, data)

    monkeypatch.setattr(EventLog, "_write_bytes", fills_up)
    result = Session(train_config(tiny_llama, tmp_path / "runs")).run(sink=recorder)
    monkeypatch.undo()
    run_dir = result.run_dir
    assert result.status == "failed" and result.exit_code == 1
    assert result.error == (f"no space left on device while writing {run_dir / 'events.jsonl'}: "
                            f"free some space and resume with lora-studio train --resume {run_dir}")
    assert recorder.of("run_finished")[-1]["status"] == "failed"   # the window hears of it either way
    events = strict_events(run_dir)                                # no half line was left
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2]
    assert last_checkpoint(run_dir).name == "checkpoint-2"
    resume_completes(run_dir, ref, 2)


@pytest.fixture
def home_with_entry(ref, tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LORA_STUDIO_HOME", str(home))
    Gallery().add_run(ref["run_dir"], name="base")
    return home


def _copy_then_fill_up(monkeypatch):
    original, calls = shutil.copy2, {"n": 0}

    def copy2(src, dst, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copy2", copy2)


def test_a_full_disk_while_adding_to_the_gallery(ref, home_with_entry, capsys, monkeypatch):
    _copy_then_fill_up(monkeypatch)
    code, _, err = cli(capsys, "gallery", "add", ref["run_dir"], "--name", "second")
    root = home_with_entry / "gallery"
    assert code == 1
    assert the_error(err) == (f"no space left on device while writing {root / 'second'}: "
                              "the gallery is unchanged; free some space and try again")
    assert gallery_state(home_with_entry) == ["base"] and hidden_leftovers(root) == []


def test_a_full_disk_while_exporting(home_with_entry, tmp_path, capsys, monkeypatch):
    out = tmp_path / "exports" / "out"
    _copy_then_fill_up(monkeypatch)
    code, _, err = cli(capsys, "export", "base", "--adapter", out)
    assert code == 1
    assert the_error(err) == (f"no space left on device while writing {out}: {out} was not written; "
                              "free some space and export again")
    assert not out.exists() and hidden_leftovers(out.parent) == []
    assert gallery_state(home_with_entry) == ["base"]


class SmallDisk:
    """A real tmpfs of a few hundred KiB (root only; the test is skipped where mount is refused)."""

    def __init__(self, where: Path, size: str):
        self.where = where
        where.mkdir(parents=True, exist_ok=True)
        if shutil.which("mount") is None:
            pytest.skip("no mount command to make a small disk with")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.strip()}")

    def grow(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.where)], check=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if subprocess.run(["umount", str(self.where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.where)], capture_output=True)


def test_a_real_full_disk_during_training(ref, tiny_llama, tmp_path, capsys):
    """A checkpoint takes ~0.45 MB: on a 700 KiB disk the first fits and the second does not."""
    with SmallDisk(tmp_path / "disk", "700k") as disk:
        code, out, err = cli(capsys, *train_argv(tiny_llama, disk.where))
        run_dir = only_run(disk.where)
        assert code == 1
        message = the_error(err)
        assert message.startswith("no space left on device while writing ")
        assert message.endswith(f": free some space and resume with lora-studio train --resume {run_dir}")
        assert last_checkpoint(run_dir).name == "checkpoint-2"
        assert not incomplete_checkpoints(run_dir)           # the cut-short one is gone
        for name in ("adapter_model.safetensors", "optimizer.pt", "trainer_state.json"):
            assert (run_dir / "checkpoints" / "checkpoint-2" / name).stat().st_size > 0
        events, torn = lenient_events(run_dir)
        assert not torn
        disk.grow("16m")   # space freed: the run goes on from where the disk filled up
        resume_completes(run_dir, ref, 2)


def test_a_real_full_disk_during_an_export(home_with_entry, tmp_path, capsys):
    with SmallDisk(tmp_path / "disk", "256k") as disk:
        out = disk.where / "merged"
        code, _, err = cli(capsys, "export", "base", "--merged", out)
        assert code == 1
        assert the_error(err) == (f"no space left on device while writing {out}: {out} was not written; "
                                  "free some space and export again")
        assert list(disk.where.iterdir()) == []              # the partial model is gone, the space free
        assert gallery_state(home_with_entry) == ["base"]


# -- E. failures in the worker ----------------------------------------------------------------------------

def _failing_at_step_3(monkeypatch, error: BaseException):
    from transformers import TrainerCallback

    from studio.core.variants import get_variant

    class Fails(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise error

    # on the class: a run works with its own instance of the variant (Variant.for_run)
    monkeypatch.setattr(type(get_variant("lora")), "callbacks", lambda self, model, opts, ctx: [Fails()])


def test_an_exception_in_the_worker_fails_the_run_and_resume_continues(ref, tiny_llama, tmp_path, monkeypatch,
                                                                       recorder):
    _failing_at_step_3(monkeypatch, RuntimeError("the data loader fell over\nsecond line"))
    result = Session(train_config(tiny_llama, tmp_path / "runs")).run(sink=recorder)
    monkeypatch.undo()
    run_dir = result.run_dir
    assert result.status == "failed" and result.exit_code == 1
    assert result.error == f"RuntimeError: the data loader fell over (details in {run_dir / 'error.log'})"
    assert "Traceback" in (run_dir / "error.log").read_text()
    assert recorder.of("run_finished")[-1]["error"] == result.error
    assert last_checkpoint(run_dir).name == "checkpoint-2"
    resume_completes(run_dir, ref, 2)


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError(
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate "
    "8589934592 bytes. Error code 12 (Cannot allocate memory)")], ids=["MemoryError", "torch-cpu-allocator"])
def test_out_of_memory_is_one_clear_sentence(error, tiny_llama, tmp_path, monkeypatch):
    _failing_at_step_3(monkeypatch, error)
    result = Session(train_config(tiny_llama, tmp_path / "runs")).run()
    assert result.status == "failed" and result.exit_code == 1
    # the memory plan's estimate beside the sentence (issue 18)
    assert re.fullmatch(r"out of memory \(RAM\) \(the memory plan estimated a peak of ~[\d.]+ (MiB|GiB) with "
                        r"[\d.]+ (MiB|GiB) free when the run started\): lower train.batch_size or data.max_seq_len, "
                        r"or set train.gradient_checkpointing = true \(the checkpoints saved so far are kept\)",
                        result.error), result.error
    assert last_checkpoint(result.run_dir).name == "checkpoint-2"
    assert not (result.run_dir / "error.log").exists()
