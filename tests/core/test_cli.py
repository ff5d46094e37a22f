"""`lora-studio` from outside: exit codes, one-line errors, a tiny run, resume, stop.

Most cases call `studio.cli.main` in-process (torch is imported once); two run the installed
console script in a subprocess, as a person would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from studio.cli import main
from studio.core.telemetry import read_events

DEFAULT = ROOT / "resources" / "configs" / "default.toml"


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("lora-studio: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def tiny_args(tiny_llama, out, *extra):
    return ["train", DEFAULT, "--set", f"model.source={tiny_llama}", "--set", f"train.output_dir={out}",
            "--set", "train.max_steps=2", "--set", "data.max_seq_len=64", "--set", "train.eval_every=0",
            *extra]


def test_variants_lists_all_eight(capsys):
    code, out, _ = run_cli(capsys, "variants")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names == ["lora", "lora-plus", "vera", "lora-fa", "lora-drop", "adalora", "dora", "delta-lora"]


def test_variants_json_carries_option_bounds(capsys):
    code, out, _ = run_cli(capsys, "variants", "--json")
    data = json.loads(out)
    ratio = next(f for f in data["lora-plus"]["options"] if f["name"] == "lr_ratio")
    assert ratio["default"] == 16.0 and ratio["min"] == 1.0 and ratio["help"]


# -- malformed configs: exit 2, one line naming the file and field -------------------------------

BAD_CONFIGS = {
    "syntax": ("[train\nbatch_size = 4\n", "not valid TOML"),
    "unknown-section": ("[trian]\nbatch_size = 4\n", "unknown section [trian]"),
    "unknown-key": ("[train]\nbatchsize = 4\n", "train.batchsize: unknown key"),
    "wrong-type": ('[train]\nbatch_size = "four"\n', "train.batch_size: expected an integer"),
    "out-of-range": ("[train]\nbatch_size = 0\n", "train.batch_size: expected an integer >= 1, got 0"),
    "bad-choice": ('[train]\nprecision = "fp8"\n', "train.precision: expected one of"),
    "bad-variant": ('[variant]\nname = "lora-max"\n', "variant.name: expected one of lora"),
    "foreign-option": ('[variant]\nname = "lora"\nlr_ratio = 16\n', "variant.lr_ratio: not an option of lora"),
    "delta-dropout": ('[variant]\nname = "delta-lora"\ndropout = 0.1\n', "variant.dropout: expected 0"),
    # nan passes every bound check and inf fails far from here: both are refused where they are read
    "nan": ("[train]\nlearning_rate = nan\n", "train.learning_rate: expected a finite number from 0.0 to 1.0, got nan"),
    "inf": ("[train]\nepochs = inf\n", "train.epochs: expected a finite number"),
    "variant-nan": ('[variant]\nname = "lora-plus"\nlr_ratio = nan\n', "variant.lr_ratio: expected a finite number"),
    "huge-epochs": ("[train]\nepochs = 1e308\n", "train.epochs: expected a number from 0.0 to 1000000.0"),
    "huge-seed": ("[train]\nseed = 99999999999\n", "train.seed: expected an integer from 0 to 2147483647"),
    "key-with-newline": ('[train]\n"batch\\nsize" = 4\n', "train.'batch\\nsize': unknown key"),
    "deep": ("[train]\nseed = " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_malformed_config_exits_2_with_one_line(case, tmp_path, capsys):
    text, fragment = BAD_CONFIGS[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, out, err = run_cli(capsys, "train", path)
    assert code == 2
    assert_one_line_error(err, "bad.toml", fragment)
    assert out == ""


def test_missing_config_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", tmp_path / "nope.toml")
    assert code == 2
    assert_one_line_error(err, "nope.toml", "no such config file")


def test_bad_set_override(capsys):
    code, _, err = run_cli(capsys, "train", DEFAULT, "--set", "train.max_steps=-3")
    assert code == 2
    assert_one_line_error(err, "train.max_steps", ">= 0")
    code, _, err = run_cli(capsys, "train", DEFAULT, "--set", "max_steps=3")
    assert code == 2
    assert_one_line_error(err, "expected section.key=value")


def test_unknown_model_source_offline(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", DEFAULT, "--set", "model.source=nobody/no-such-model",
                           "--set", f"train.output_dir={tmp_path}")
    assert code == 2
    assert_one_line_error(err, "model.source", "nobody/no-such-model")
    assert not any(tmp_path.iterdir()), "bad input must leave no run folder behind"


# -- malformed datasets: exit 2, one line naming the file and line/row ----------------------------

BAD_DATA = {
    "truncated.jsonl": (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assis\n', "line 2"),
    "empty.jsonl": (b"", "empty"),
    "binary.jsonl": (bytes(range(256)) * 4, "UTF-8"),
    "missing.jsonl": (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}\n', "content"),
    "roles.jsonl": (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]}\n',
                    "'bot'"),
    "deep.jsonl": (b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "line 1: nested too deeply"),
    "huge.jsonl": (b'{"text": 1e999}\n', "line 1: 'text' is the number 1e999, too large to store"),
    "blank.jsonl": (b'{"text": ""}\n{"text": ""}\n', "no row has any text"),
    "utf16.jsonl": ('{"text": "hi"}\n'.encode("utf-16"), "UTF-16 text; expected UTF-8"),
    # the loaders' own "Failed to read file ..." log lines must not add to the one line
    "ragged.csv": (b"text\nfine\na,b,c\n", "not a valid CSV table"),
    "twice.jsonl": (b'{"text": "a", "text": "b"}\n', "line 1: the key 'text' appears twice"),
}


@pytest.mark.parametrize("name", list(BAD_DATA))
def test_malformed_dataset_exits_2_with_one_line(name, tiny_llama, tmp_path, capsys):
    raw, fragment = BAD_DATA[name]
    path = tmp_path / name
    path.write_bytes(raw)
    out_dir = tmp_path / "runs"
    code, out, err = run_cli(capsys, *tiny_args(tiny_llama, out_dir, "--set", f"data.path={path}"))
    assert code == 2
    assert_one_line_error(err, name, fragment)
    assert not out_dir.exists() or not any(out_dir.iterdir())


# -- a real run, resume ---------------------------------------------------------------------------

def test_train_tiny_run_and_resume(tiny_llama, tmp_path, capsys):
    out_dir = tmp_path / "runs"
    code, out, err = run_cli(capsys, *tiny_args(tiny_llama, out_dir, "--set", "train.max_steps=4",
                                                "--set", "train.save_every=2"))
    assert code == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    assert run_dir.parent == out_dir
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    events = list(read_events(run_dir / "events.jsonl"))
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3, 4]
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "completed"
    assert "step 4/4" in err

    # as if the run had died after its first checkpoint: resume picks up at step 2
    import shutil

    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-4")
    shutil.rmtree(run_dir / "adapter")
    from test_session import truncate_log_after_checkpoint

    truncate_log_after_checkpoint(run_dir, 2)
    code, out, err = run_cli(capsys, "train", "--resume", run_dir)
    assert code == 0, err
    assert Path(out.strip().splitlines()[-1]) == run_dir
    events = list(read_events(run_dir / "events.jsonl"))
    started = [e for e in events if e["type"] == "run_started"]
    assert len(started) == 2 and started[1]["resumed_from"].endswith("checkpoint-2")
    resumed_steps = [e["step"] for e in events[events.index(started[1]):] if e["type"] == "step"]
    assert resumed_steps == [3, 4]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path)
    assert code == 2
    assert_one_line_error(err, "not a run folder")


def test_stop_between_steps_still_saves_adapter(tiny_llama, tmp_path, recorder):
    """A stop request honoured between optimizer steps: the run ends 'stopped' with an adapter."""
    from studio.core.config import RunConfig
    from studio.core.training import Session

    cfg = RunConfig.from_toml(DEFAULT).with_overrides(
        [f"model.source={tiny_llama}", f"train.output_dir={tmp_path}", "train.max_steps=50",
         "data.max_seq_len=64", "train.eval_every=0", "train.save_every=0"])
    session = Session(cfg)

    def sink(event):
        recorder(event)
        if event["type"] == "step" and event["step"] == 2:
            session.control.stop()

    result = session.run(sink=sink)
    assert result.status == "stopped"
    steps = [e["step"] for e in recorder.of("step")]
    assert steps == [1, 2]
    assert (result.adapter_path / "adapter_model.safetensors").is_file()
    # a checkpoint at the stop, so that --resume continues from step 2
    assert [e["path"].rsplit("-", 1)[-1] for e in recorder.of("checkpoint")] == ["2"]
    assert (result.run_dir / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()


def test_resume_argument_mistakes(tiny_llama, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", DEFAULT, "--resume", tmp_path)
    assert code == 2
    assert_one_line_error(err, "either a CONFIG.toml or --resume")
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "gone")
    assert code == 2
    assert_one_line_error(err, "gone: no such run folder")


def test_resume_of_a_finished_run_does_not_train_past_its_end(tiny_llama, tmp_path, capsys):
    code, out, err = run_cli(capsys, *tiny_args(tiny_llama, tmp_path, "--set", "train.save_every=2"))
    assert code == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    before = (run_dir / "events.jsonl").read_text()
    code, _, err = run_cli(capsys, "train", "--resume", run_dir)
    assert code == 2
    assert_one_line_error(err, "already completed")
    assert (run_dir / "events.jsonl").read_text() == before


def test_set_errors_name_the_override_not_the_file(capsys):
    code, _, err = run_cli(capsys, "train", DEFAULT, "--set", "train.batch_size=abc")
    assert code == 2
    assert_one_line_error(err, "--set 'train.batch_size=abc'", "expected an integer")
    code, _, err = run_cli(capsys, "train", DEFAULT, "--set", "variant.r=0")
    assert_one_line_error(err, "--set 'variant.r=0'", "variant.r")


def test_switching_variant_takes_the_new_variants_defaults():
    from studio.core.config import RunConfig

    cfg = RunConfig.from_toml(DEFAULT)
    assert cfg.with_overrides(["variant.name=vera"]).variant["r"] == 256
    assert cfg.with_overrides(["variant.r=8", "variant.name=vera"]).variant["r"] == 8
    plus = cfg.with_overrides(["variant.name=lora-plus", "variant.lr_ratio=20"]).variant
    assert plus["lr_ratio"] == 20.0 and plus["r"] == 16


def test_ctrl_c_stops_saves_and_exits_130(tiny_llama, tmp_path):
    """One SIGINT to the real process: it stops between steps, keeps adapter and checkpoint."""
    import signal

    exe = Path(sys.executable).with_name("lora-studio")
    args = tiny_args(tiny_llama, tmp_path / "runs", "--set", "train.max_steps=500", "--json")
    proc = subprocess.Popen([str(exe), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for line in proc.stdout:  # --json: one event per line; interrupt once training is under way
            if json.loads(line)["type"] == "step":
                proc.send_signal(signal.SIGINT)
                break
        rest, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    events = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    finished = events[-1]
    assert finished["type"] == "run_finished" and finished["status"] == "stopped"
    run_dir = Path(err.strip().splitlines()[-1])  # with --json the folder is printed on stderr
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert list((run_dir / "checkpoints").glob("checkpoint-*"))
    assert "Traceback" not in err


def test_console_script_from_outside(tiny_llama, tmp_path):
    """The installed `lora-studio` entry point, as a person runs it."""
    exe = Path(sys.executable).with_name("lora-studio")
    env = dict(os.environ)
    proc = subprocess.run([str(exe), *map(str, tiny_args(tiny_llama, tmp_path / "runs"))],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    assert "Traceback" not in proc.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochs = 'many'\n")
    proc = subprocess.run([str(exe), "train", str(bad)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "train.epochs" in proc.stderr


def test_config_with_a_byte_order_mark_is_read(tmp_path):
    from studio.core.config import RunConfig

    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[train]\nmax_steps = 7\n")
    assert RunConfig.from_toml(path).train.max_steps == 7


@pytest.mark.parametrize("override, fragments", [
    ("train.learning_rate=nan", ("--set 'train.learning_rate=nan'", "expected a finite number")),
    ("variant.alpha=-inf", ("--set 'variant.alpha=-inf'", "variant.alpha: expected a finite number")),
    ("train.seed=1\nx = 2", ("train.seed: expected an integer", "'1\\nx = 2'")),
    ("train.output_dir=~no-such-user-here/runs", ("train.output_dir: cannot use", "'~no-such-user-here/runs'")),
])
def test_bad_set_values_exit_2(override, fragments, capsys):
    code, _, err = run_cli(capsys, "train", DEFAULT, "--set", override)
    assert code == 2
    assert_one_line_error(err, *fragments)


def test_empty_data_path_names_the_field(tiny_llama, tmp_path, capsys):
    out_dir = tmp_path / "runs"
    code, _, err = run_cli(capsys, *tiny_args(tiny_llama, out_dir, "--set", "data.path="))
    assert code == 2
    assert_one_line_error(err, "data.path: expected a data file (.jsonl, .json, .csv, .parquet, .txt), got ''")
    assert not out_dir.exists() or not any(out_dir.iterdir())
