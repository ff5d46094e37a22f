"""Several processes, one run: `accelerate launch -m studio train` on two CPU processes (gloo).

accelerate's `--cpu --num_processes 2` starts a single process unless MPI is installed; its
torchrun launcher (`--multi_gpu`) starts two, which use gloo on a machine without a GPU. That is
what these tests run, as a person would, in subprocesses.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from studio.core.config import RunConfig
from studio.core.variants import get_variant
from studio.core.errors import ConfigError
from studio.core.launchscript import LaunchPlan, write_launch_folder
from studio.core.telemetry import read_events
from studio.core.training import Session

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ROOT / "resources" / "datasets"
ACCELERATE = Path(sys.executable).with_name("accelerate")
pytestmark = pytest.mark.distributed


def config(tiny_llama, out: Path, variant: str = "lora", steps: int = 4) -> RunConfig:
    raw = {"model": {"source": tiny_llama},
           "data": {"path": str(DATASETS / "chat_sample.jsonl"), "max_seq_len": 64, "eval_fraction": 0.05},
           "variant": {"name": variant},
           "train": {"output_dir": str(out), "max_steps": steps, "batch_size": 4, "learning_rate": 1e-3,
                     "save_every": 2, "device": "cpu", "precision": "fp32", "gallery": False},
           "telemetry": {"every": 2}}
    return RunConfig.from_dict(raw, "test")


def env(home: Path) -> dict:
    e = dict(os.environ, LORA_STUDIO_HOME=str(home), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
             OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    e.pop("LORA_STUDIO_DEBUG", None)
    return e


def free_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch(cfg_path: Path, home: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", free_port(),
           "-m", "studio", "train", str(cfg_path), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(home), timeout=600, cwd=str(cfg_path.parent))


def single(cfg: RunConfig) -> Path:
    result = Session(cfg).run()
    assert result.status == "completed", result.error
    return result.run_dir


def adapter(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def reload_logits(tiny_llama: str, adapter_dir: Path) -> torch.Tensor:
    """The adapter in stock PEFT on the base model, on a fixed prompt."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    ids = torch.arange(3, 40).reshape(1, -1) % base.config.vocab_size
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_two_processes_write_one_run_and_save_the_single_process_adapter(tiny_llama, tmp_path, studio_home):
    cfg = config(tiny_llama, tmp_path / "ddp")
    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(cfg.to_toml(), encoding="utf-8")
    done = launch(cfg_path, studio_home)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr

    runs = [p for p in (tmp_path / "ddp").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1, runs                        # one run folder, made by the main process
    run = runs[0]
    assert done.stdout.strip().splitlines() == [str(run)]   # the folder printed once, not per process

    events = list(read_events(run / "events.jsonl"))
    started = [e for e in events if e["type"] == "run_started"]
    assert len(started) == 1 and started[0]["processes"] == 2 and started[0]["launch"] == "ddp"
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps == [1, 2, 3, 4]                       # each step logged once
    assert all(math.isfinite(e["loss"]) for e in events if e["type"] == "step")
    finished = [e for e in events if e["type"] == "run_finished"]
    assert len(finished) == 1 and finished[0]["status"] == "completed"
    ckpt = run / "checkpoints" / "checkpoint-4"
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()
    assert (ckpt / "studio_complete").is_file()
    assert not list(run.glob("error*.log"))

    # the same config on one process: the same adapter (gradients averaged over all label tokens)
    one = single(config(tiny_llama, tmp_path / "one"))
    a, b = adapter(run), adapter(one)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    # and stock PEFT reloads it to the same outputs
    la, lb = reload_logits(tiny_llama, run / "adapter"), reload_logits(tiny_llama, one / "adapter")
    torch.testing.assert_close(la, lb, rtol=1e-4, atol=1e-4 * float(lb.abs().max()))


def test_adalora_regulariser_keeps_its_weight_on_two_processes(tiny_llama, tmp_path, studio_home):
    """AdaLoRA adds an orthogonality term to each process's loss; the Trainer multiplies that
    loss by the number of processes, so the term is divided back (Variant.scale_loss_terms)."""
    cfg = config(tiny_llama, tmp_path / "ddp", variant="adalora", steps=4)
    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(cfg.to_toml(), encoding="utf-8")
    done = launch(cfg_path, studio_home)
    assert done.returncode == 0, done.stderr[-3000:]
    run = next(p for p in (tmp_path / "ddp").iterdir() if not p.name.startswith("."))
    one = single(config(tiny_llama, tmp_path / "one", variant="adalora", steps=4))
    a, b = adapter(run), adapter(one)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    saved = json.loads((run / "adapter" / "adapter_config.json").read_text())
    # the person's weight (the default), not the one scaled for two processes
    assert saved["orth_reg_weight"] == get_variant("adalora").options_cls().orth_reg_weight == 0.1


def test_a_classifier_trains_the_same_on_two_processes(tiny_bert, tmp_path, studio_home):
    """A classifier's loss is a mean over its batch that ignores the token count of all
    processes: it must not be multiplied by their number (which would double every gradient)."""
    import shutil

    bert = tmp_path / "bert"
    shutil.copytree(tiny_bert, bert)
    spec = json.loads((bert / "config.json").read_text())
    # no dropout: each process draws its own masks, which no single process could reproduce
    spec.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (bert / "config.json").write_text(json.dumps(spec))
    raw = {"model": {"source": str(bert), "task": "sequence-classification"},
           "data": {"path": str(DATASETS / "classification_sample.csv"), "max_seq_len": 64},
           "variant": {"name": "lora"},
           "train": {"output_dir": str(tmp_path / "ddp"), "max_steps": 4, "batch_size": 4, "learning_rate": 1e-3,
                     "device": "cpu", "precision": "fp32", "gallery": False}}
    cfg = RunConfig.from_dict(raw, "test")
    cfg_path = tmp_path / "cls.toml"
    cfg_path.write_text(cfg.to_toml(), encoding="utf-8")
    done = launch(cfg_path, studio_home)
    assert done.returncode == 0, done.stderr[-3000:]
    run = next(p for p in (tmp_path / "ddp").iterdir() if not p.name.startswith("."))
    raw["train"]["output_dir"] = str(tmp_path / "one")
    one = single(RunConfig.from_dict(raw, "test"))
    a, b = adapter(run), adapter(one)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    losses = [[e["loss"] for e in read_events(r / "events.jsonl") if e["type"] == "step"] for r in (run, one)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)   # the same loss, not twice it


def test_launch_checks_the_config_before_starting_processes(tiny_llama, tmp_path, studio_home):
    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(config(tiny_llama, tmp_path / "out").to_toml(), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "studio", "launch", str(cfg_path), "-n", "3", "--cpu"],
                          capture_output=True, text=True, env=env(studio_home), timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"lora-studio: error: {cfg_path}: train.batch_size: 4 examples cannot be split evenly across 3 "
        "processes; expected a multiple of 3"]
    assert not (tmp_path / "out").exists()


def test_a_failure_in_the_main_process_is_one_line_from_the_launcher(tiny_llama, tmp_path, studio_home):
    """A model that is not there: the main process says so once; the others end quietly; the
    launcher adds no traceback of its own."""
    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(config(tiny_llama, tmp_path / "out").to_toml(), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "studio", "launch", str(cfg_path), "-n", "2", "--cpu",
                           "--set", f"model.source={tmp_path / 'missing'}"],
                          capture_output=True, text=True, env=env(studio_home), timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert errors == [f"lora-studio: error: model.source: {tmp_path / 'missing'}: no such folder or file"]


def test_exported_launch_folder_runs_as_written(tiny_llama, tmp_path, studio_home):
    cfg = config(tiny_llama, tmp_path / "runs", steps=2)
    folder = write_launch_folder(cfg, tmp_path / "job", LaunchPlan(processes=2, cpu=True))
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["accelerate.yaml", "launch.sh", "run.toml"]
    assert os.access(folder / "launch.sh", os.X_OK)
    accel = yaml.safe_load((folder / "accelerate.yaml").read_text())
    assert accel["num_processes"] == 2 and accel["distributed_type"] == "MULTI_GPU"
    assert RunConfig.from_toml(folder / "run.toml").train.device == "cpu"

    done = subprocess.run(["bash", str(folder / "launch.sh")], capture_output=True, text=True,
                          env=env(studio_home), timeout=600, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1 and (runs[0] / "adapter" / "adapter_model.safetensors").is_file()
    started = [e for e in read_events(runs[0] / "events.jsonl") if e["type"] == "run_started"]
    assert started[0]["processes"] == 2


def test_fsdp_two_processes_save_the_single_process_adapter(tiny_llama, tmp_path, studio_home):
    """FSDP 2 (the exported strategy) on two CPU processes: the adapter saved from sharded
    training equals one process's."""
    cfg = config(tiny_llama, tmp_path / "fsdp", steps=3)
    folder = write_launch_folder(cfg, tmp_path / "job", LaunchPlan(processes=2, cpu=True, strategy="fsdp"))
    done = subprocess.run(["bash", str(folder / "launch.sh")], capture_output=True, text=True,
                          env=env(studio_home), timeout=600, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "telemetry is off" in done.stderr
    run = next(p for p in (tmp_path / "fsdp").iterdir() if not p.name.startswith("."))
    started = [e for e in read_events(run / "events.jsonl") if e["type"] == "run_started"]
    assert started[0]["launch"] == "fsdp"
    one = single(config(tiny_llama, tmp_path / "one", steps=3))
    a, b = adapter(run), adapter(one)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_launch_plans_that_cannot_run_are_refused_and_write_nothing(tiny_llama, tmp_path):
    cfg = config(tiny_llama, tmp_path / "runs")
    with pytest.raises(ConfigError, match=r"train.batch_size: 4 examples cannot be split evenly across 8"):
        write_launch_folder(cfg, tmp_path / "a", LaunchPlan(processes=4, machines=2))
    delta = config(tiny_llama, tmp_path / "runs", variant="delta-lora")
    with pytest.raises(ConfigError, match=r"variant.name: delta-lora .* FSDP shards them"):
        write_launch_folder(delta, tmp_path / "b", LaunchPlan(processes=2, strategy="fsdp"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="expected a new or empty folder"):
        write_launch_folder(cfg, busy, LaunchPlan())
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]

    # a Python whose path has a space still runs (the default is quoted once, not twice)
    spaced = write_launch_folder(cfg, tmp_path / "spaced", LaunchPlan(python="/opt/my env/bin/python"))
    shown = subprocess.run(["bash", "-c", f'sed -n "/^EXPORTED_PYTHON=/,/^PYTHON=/p" {spaced}/launch.sh > {tmp_path}/p.sh'
                            f' && source {tmp_path}/p.sh && printf %s "$PYTHON"'], capture_output=True, text=True)
    assert shown.stdout == "/opt/my env/bin/python"

    # two machines: the script takes its rank and the main address from the environment or SLURM
    folder = write_launch_folder(cfg, tmp_path / "multi", LaunchPlan(processes=2, machines=2, strategy="fsdp"))
    script = (folder / "launch.sh").read_text()
    assert "SLURM_NODEID" in script and "--machine_rank" in script
    assert subprocess.run(["bash", "-n", str(folder / "launch.sh")]).returncode == 0
    accel = yaml.safe_load((folder / "accelerate.yaml").read_text())
    assert accel["distributed_type"] == "FSDP" and accel["num_machines"] == 2 and accel["num_processes"] == 4
    assert accel["fsdp_config"]["fsdp_version"] == 2
    bare = subprocess.run(["bash", str(folder / "launch.sh")], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "MAIN_ADDR"))})
    assert bare.returncode != 0 and "set MAIN_ADDR" in bare.stderr
