"""`lora-studio launch`: one run on several processes (GPUs, or CPU processes talking over gloo).

    lora-studio launch CONFIG.toml --processes 4                 # 4 GPUs of this machine (DDP)
    lora-studio launch CONFIG.toml --processes 2 --cpu           # 2 CPU processes (gloo)
    lora-studio launch CONFIG.toml --config-file accelerate.yaml # FSDP, DeepSpeed, several nodes
    lora-studio launch CONFIG.toml -n 8 -- --machine_rank 1 --main_process_ip node01 ...

It is `accelerate launch -m studio train CONFIG.toml` (which works as well), run by accelerate's
own launcher in this process, with what a person should see added: the config is checked before
any process starts (one line naming the field), every value accelerate would otherwise warn
about is given, a free port is picked, and a failed process ends the launch with its own error
line, not the launcher's traceback. Stopping: Ctrl-C stops every process after the current step
and saves the adapter and a checkpoint (resume with `lora-studio train --resume RUN_FOLDER`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from studio.cli.common import BAD_INPUT, FAILED, INTERRUPTED, error_line

SHUTDOWN_TIMEOUT_S = 900


def add_command(sub) -> None:
    launch = sub.add_parser(
        "launch", help="train on several processes (GPUs or CPU) through accelerate",
        description="Train one run on several processes: DDP on this machine's GPUs by default; "
                    "FSDP, DeepSpeed or several machines with an accelerate config file. "
                    "Arguments after `--` go to `accelerate launch` unchanged.")
    launch.add_argument("config", nargs="?",
                        help="the run config (.toml); train.batch_size is the batch of the whole run")
    launch.add_argument("--resume", metavar="RUN_FOLDER", help="continue a run from its last checkpoint")
    launch.add_argument("-n", "--processes", type=int, default=None,
                        help="processes to start (default: every visible GPU, or 2 on a machine without one)")
    launch.add_argument("--cpu", action="store_true", help="run the processes on the CPU (gloo), even with GPUs")
    launch.add_argument("--config-file", metavar="ACCELERATE.yaml",
                        help="an accelerate config (accelerate config / the window's launch script export)")
    launch.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key (repeatable)")
    launch.add_argument("--json", action="store_true", help="print every event as a JSON line on stdout")
    launch.add_argument("--export", metavar="FOLDER",
                        help="do not train: write run.toml, accelerate.yaml and launch.sh into FOLDER, for "
                             "this or another machine (with --machines and --strategy)")
    launch.add_argument("--machines", type=int, default=1, help="with --export: machines of the job (default 1)")
    launch.add_argument("--strategy", choices=("ddp", "fsdp"), default="ddp",
                        help="with --export: DDP (default) or FSDP (version 2, sharded parameters)")
    # what follows `--` is split off before parsing (studio.cli.main), into accelerate_args
    launch.set_defaults(func=cmd_launch, accelerate_args=[])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_in(config_file: str) -> int | None:
    import yaml

    try:
        with open(config_file, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise ValueError(f"{config_file}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{config_file}:{where}: not a valid accelerate config (YAML)") from None
    if not isinstance(data, dict):
        raise ValueError(f"{config_file}: expected an accelerate config (a YAML mapping)")
    n = data.get("num_processes")
    return n if isinstance(n, int) else None


def accelerate_arguments(args, processes: int) -> list[str]:
    """`accelerate launch` arguments for this launch, up to the script to run."""
    extra = list(args.accelerate_args or [])
    if args.config_file:
        out = ["--config_file", args.config_file]
        if args.processes:
            out += ["--num_processes", str(processes)]
    else:
        # --multi_gpu is accelerate's torchrun launcher; on CPUs its processes talk over gloo
        # (accelerate's own --cpu starts a single process unless MPI is installed)
        out = ["--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no"]
    if not any(a.startswith("--main_process_port") for a in extra) and not args.config_file:
        out += ["--main_process_port", str(_free_port())]
    return out + extra


def cmd_launch(args) -> int:
    from studio.core.config import RunConfig
    from studio.core.errors import StudioError

    if getattr(sys, "frozen", False):
        error_line("launch: the standalone app cannot start Python processes; install lora-studio with "
                   "pip or pipx on the machine that trains (see README)")
        return BAD_INPUT
    try:
        if bool(args.config) == bool(args.resume):
            error_line("launch: expected a CONFIG.toml or --resume RUN_FOLDER (one of them)")
            return BAD_INPUT
        if args.resume and args.set:
            error_line("launch: --set cannot change a run being resumed; start a new run instead")
            return BAD_INPUT
        source = Path(args.resume) / "config.toml" if args.resume else Path(args.config)
        if args.resume and not source.is_file():
            error_line(f"{args.resume}: not a run folder (expected config.toml inside)")
            return BAD_INPUT
        config = RunConfig.from_toml(source)
        if args.set:
            config = config.with_overrides(args.set)
        processes = args.processes
        if args.config_file:
            in_file = _processes_in(args.config_file)
            processes = processes or in_file
        gpus = 0 if args.cpu else _visible_gpus()
        if processes is None:
            processes = gpus or 2   # every GPU, or two CPU processes to try it out
        if processes < 1:
            error_line(f"--processes: expected at least 1, got {processes}")
            return BAD_INPUT
        if gpus and processes > gpus and not args.config_file and not args.export:
            error_line(f"--processes: {processes} processes need {processes} GPUs, this machine has "
                       f"{gpus} (one process per GPU; --cpu runs CPU processes)")
            return BAD_INPUT
        total = processes * (args.machines if args.export else 1)
        if config.train.batch_size % total:
            error_line(f"{source}: train.batch_size: {config.train.batch_size} examples cannot be split "
                       f"evenly across {total} processes; expected a multiple of {total}")
            return BAD_INPUT
        if args.export:
            from studio.core.launchscript import LaunchPlan, write_launch_folder

            plan = LaunchPlan(processes=processes, machines=args.machines, strategy=args.strategy, cpu=args.cpu)
            folder = write_launch_folder(config, args.export, plan)
            print(folder / "launch.sh")
            return 0
    except StudioError as e:
        error_line(str(e))
        return e.exit_code
    except ValueError as e:
        error_line(str(e))
        return BAD_INPUT

    # torchrun's default is one thread per process, whatever the machine has
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    train_args = (["--resume", args.resume] if args.resume else [args.config]) \
        + [x for kv in args.set for x in ("--set", kv)]
    if args.cpu and not args.resume:
        train_args += ["--set", "train.device=cpu"]
    if args.json:
        train_args.append("--json")
    return run_launcher(accelerate_arguments(args, processes) + ["-m", "studio", "train"] + train_args)


def _visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:   # no torch build with CUDA: CPU processes
        return 0


def run_launcher(argv: list[str]) -> int:
    """accelerate's launcher, in this process; the exit code of the first process that failed."""
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # the launcher's own notes (which process it sent SIGTERM, which failed) repeat, less
    # clearly, what the processes print themselves
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    # On Ctrl-C the launcher passes SIGINT to the processes, which finish the step and save a
    # checkpoint and the adapter; it kills them after this many seconds (torch's default is 30)
    os.environ.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT_S))
    args = launch_command_parser().parse_args(argv)
    try:
        launch_command(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = failure.exitcode
        if code is None or code < 0 or code not in (1, 2, 130):
            ended = f"signal {-code}" if code and code < 0 else f"exit code {code}"
            error_line(f"process {rank} ended with {ended} (the processes' own output is above)")
        return code if code and code > 0 else FAILED
    except (SignalException, KeyboardInterrupt):
        # the first Ctrl-C returns here once the processes have stopped and saved; a second one
        # interrupts that wait, and then nothing is left to wait for: the processes are killed
        _kill_children()
        return INTERRUPTED
    return 0


def _kill_children() -> None:
    try:
        import psutil   # installed with accelerate

        for child in psutil.Process().children(recursive=True):
            child.kill()
    except Exception:   # gone already, or no psutil: the processes end when their step does
        pass


COMMANDS = ("launch",)


if __name__ == "__main__":   # pragma: no cover
    sys.exit(run_launcher(sys.argv[1:]))
