"""A run as a ready-to-run folder for a multi-GPU workstation or a cluster node.

    from studio.core.launchscript import LaunchPlan, write_launch_folder
    write_launch_folder(config, "~/jobs/chat-lora", LaunchPlan(processes=4, machines=2, strategy="ddp"))

The folder holds three files, written together (atomic_dir: all of them or none):

    run.toml          the run config, data paths made absolute
    accelerate.yaml   accelerate's launch config: DDP or FSDP, processes, machines
    launch.sh         `lora-studio launch run.toml --config-file accelerate.yaml` with the
                      machine's rank and the main machine's address from the environment
                      (MACHINE_RANK / MAIN_ADDR, or SLURM's own variables)

No torch here: the window writes it (studio.ui imports no torch).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .config import RunConfig, resolved_paths
from .distributed import World, check_variant, per_process_batch
from .variants import get_variant
from .errors import ConfigError
from .paths import atomic_dir

STRATEGIES = {
    "ddp": "DDP: every process holds the whole model and its share of each batch",
    "fsdp": "FSDP (version 2): parameters sharded across processes, for models that do not fit one GPU",
}


@dataclass
class LaunchPlan:
    processes: int = 2          # processes (GPUs) on each machine
    machines: int = 1
    strategy: str = "ddp"       # a key of STRATEGIES
    cpu: bool = False           # CPU processes (gloo) instead of GPUs
    main_port: int = 29500
    python: str = ""            # the Python that has lora-studio installed (default: this one)

    @property
    def total(self) -> int:
        return self.processes * self.machines

    def check(self, config: RunConfig) -> None:
        """ConfigError naming the field, for a plan that cannot run this config."""
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.processes < 1 or self.machines < 1:
            raise ConfigError("processes and machines: expected at least 1 each")
        if not 1 <= self.main_port <= 65535:
            raise ConfigError(f"main port: expected 1..65535, got {self.main_port}")
        world = World(size=self.total, mode=self.strategy)
        per_process_batch(config.train.batch_size, world)
        if self.strategy == "fsdp":
            check_variant(get_variant(config.variant_name), world)


def _distributed_type(plan: LaunchPlan) -> str:
    if plan.strategy == "fsdp":
        return "FSDP"
    return "MULTI_GPU" if plan.total > 1 else "'NO'"


def accelerate_yaml(plan: LaunchPlan, config: RunConfig) -> str:
    lines = [
        "# accelerate launch config, written by LoRA Studio (see `accelerate launch --help`)",
        "compute_environment: LOCAL_MACHINE",
        "debug: false",
        # on CPUs too: accelerate's MULTI_GPU launcher is torchrun, whose processes use gloo there
        f"distributed_type: {_distributed_type(plan)}",
        "downcast_bf16: 'no'",
    ]
    if plan.strategy == "fsdp":
        lines += [
            "fsdp_config:",
            "  fsdp_version: 2",
            "  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP",
            "  fsdp_reshard_after_forward: true",
            "  fsdp_state_dict_type: FULL_STATE_DICT",
            "  fsdp_offload_params: false",
            "  fsdp_cpu_ram_efficient_loading: false",
            f"  fsdp_activation_checkpointing: {'true' if config.train.gradient_checkpointing else 'false'}",
        ]
    lines += [
        "gpu_ids: all",
        "machine_rank: 0",
        "main_process_ip: 127.0.0.1",
        f"main_process_port: {plan.main_port}",
        "main_training_function: main",
        # the run config decides the precision (train.precision); the launcher leaves it alone
        "mixed_precision: 'no'",
        f"num_machines: {plan.machines}",
        f"num_processes: {plan.total}",
        "rdzv_backend: static",
        "same_network: true",
        "use_cpu: false",
        "",
    ]
    return "\n".join(lines)


def launch_sh(plan: LaunchPlan, config: RunConfig, name: str) -> str:
    # the standalone app's executable is no Python: a frozen export names the PATH's python3
    python = plan.python or ("python3" if getattr(sys, "frozen", False) else sys.executable)
    where = f"{plan.machines} machines x {plan.processes}" if plan.machines > 1 else f"{plan.processes}"
    unit = "CPU processes" if plan.cpu else "GPUs"
    head = f"""#!/usr/bin/env bash
# LoRA Studio: run "{name}" on {where} {unit} ({plan.strategy.upper()}), exported {datetime.now():%Y-%m-%d %H:%M}.
# {config.variant_name}, {config.model.source}; a step is {config.train.batch_size} examples in all,
# {config.train.batch_size // plan.total} in each process. The run folder appears in {config.train.output_dir}.
#
#   bash launch.sh                          # run it (extra arguments go to lora-studio launch,
#                                           #   e.g. --set train.max_steps=500)
#   PYTHON=/path/to/venv/bin/python bash launch.sh   # another Python with lora-studio installed
"""
    if plan.machines > 1:
        head += f"""#
# {plan.machines} machines: start this script on every one of them, with the same files.
#   MACHINE_RANK=0 MAIN_ADDR=node01 bash launch.sh   # on node01, the main machine
#   MACHINE_RANK=1 MAIN_ADDR=node01 bash launch.sh   # on the next one, and so on
# Under SLURM, rank and address come from the job:
#   sbatch --nodes={plan.machines} --ntasks-per-node=1 --gpus-per-node={plan.processes} --wrap "srun bash launch.sh"
# The data paths in run.toml and the output folder must exist on every machine (a shared disk).
"""
    body = f"""set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
EXPORTED_PYTHON={shlex.quote(python)}
PYTHON="${{PYTHON:-$EXPORTED_PYTHON}}"
"""
    if plan.machines > 1:
        body += f"""MACHINE_RANK="${{MACHINE_RANK:-${{SLURM_NODEID:-0}}}}"
if [ -z "${{MAIN_ADDR:-}}" ] && [ -n "${{SLURM_JOB_NODELIST:-}}" ]; then
  MAIN_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
fi
MAIN_ADDR="${{MAIN_ADDR:?set MAIN_ADDR to the address of the main machine (where MACHINE_RANK=0 runs)}}"
MAIN_PORT="${{MAIN_PORT:-{plan.main_port}}}"
exec "$PYTHON" -m studio launch "$HERE/run.toml" --config-file "$HERE/accelerate.yaml" "$@" -- \\
  --machine_rank "$MACHINE_RANK" --main_process_ip "$MAIN_ADDR" --main_process_port "$MAIN_PORT"
"""
    else:
        body += """exec "$PYTHON" -m studio launch "$HERE/run.toml" --config-file "$HERE/accelerate.yaml" "$@"
"""
    return head + body


def write_launch_folder(config: RunConfig, folder: str | Path, plan: LaunchPlan) -> Path:
    """Write run.toml, accelerate.yaml and launch.sh into `folder` (a new or empty folder)."""
    plan.check(config)
    folder = Path(folder).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder}: expected a new or empty folder for the launch files")
    cfg = resolved_paths(config)
    if plan.cpu:
        cfg.train.device = "cpu"
    elif cfg.train.device == "cpu":
        cfg.train.device = "auto"
    name = " ".join(folder.name.split())   # it goes into a comment line of launch.sh
    if folder.exists():
        folder.rmdir()   # empty: atomic_dir puts the finished folder in its place
    with atomic_dir(folder) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "run.toml").write_text(cfg.to_toml(), encoding="utf-8")
        (tmp / "accelerate.yaml").write_text(accelerate_yaml(plan, cfg), encoding="utf-8")
        script = tmp / "launch.sh"
        script.write_text(launch_sh(plan, cfg, name), encoding="utf-8")
        script.chmod(0o755)
    return folder
