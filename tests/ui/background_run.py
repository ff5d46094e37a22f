"""A tiny real training run in a subprocess, for the chart and history tests.

The run goes in a subprocess: it keeps torch out of the test process (whose heap every test's
teardown walks, see conftest.py) and trains on the other core while synthetic tests run.

    proc = start_run(folder, {"name": "adalora", ...})   # at module start
    run_dir, events = finish_run(folder, proc)           # the run folder, the events its sink got live
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
RUN_SCRIPT = r"""
import json, sys
from pathlib import Path
folder, variant, tests = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
sys.path.insert(0, tests)
from tiny_models import make_tiny_llama
from studio.core.config import RunConfig
from studio.core.training import Session
raw = {"model": {"source": make_tiny_llama(folder / "model")},
       "data": {"path": str(Path(tests).parent / "resources" / "datasets" / "chat_sample.jsonl"),
                "eval_fraction": 0.1, "max_seq_len": 64},
       "variant": variant,
       "train": {"output_dir": str(folder / "runs"), "max_steps": 8, "batch_size": 4, "learning_rate": 5e-3,
                 "save_every": 0, "eval_every": 4, "device": "cpu", "precision": "fp32"},
       "telemetry": {"every": 2, "budget": 0}}
events = []
result = Session(RunConfig.from_dict(raw, "test")).run(sink=events.append)
(folder / "live.json").write_text(json.dumps({"run_dir": str(result.run_dir), "status": result.status,
                                              "error": result.error, "events": events}))
"""


def start_run(folder: Path, variant: dict) -> subprocess.Popen:
    """Start an 8-step run of `variant` on a tiny Llama (telemetry every 2 steps) in `folder`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    with open(folder / "log.txt", "wb") as log:
        return subprocess.Popen([sys.executable, "-c", RUN_SCRIPT, str(folder), json.dumps(variant), str(TESTS)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=TESTS.parent)


def finish_run(folder: Path, proc: subprocess.Popen) -> tuple[Path, list[dict]]:
    """Wait for the run; (its run folder, the events its sink received live)."""
    code = proc.wait(timeout=300)
    assert code == 0, (folder / "log.txt").read_text(errors="replace")[-3000:]
    live = json.loads((folder / "live.json").read_text())
    assert live["status"] == "completed", live["error"]
    return Path(live["run_dir"]), live["events"]


def stop_run(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
