"""`lora-studio`: the window and the command line.

    lora-studio                                                    open the window (default run loaded)
    lora-studio CONFIG.toml | RUN_FOLDER                           open the window with a config or a past run
    lora-studio train CONFIG.toml [--set section.key=value ...]   train; prints the run folder
    lora-studio train --resume RUN_FOLDER                          continue from its last checkpoint
    lora-studio launch CONFIG.toml --processes N [--cpu]           train on N processes (accelerate, DDP)
    lora-studio variants [--options]                               the variants and their options
    lora-studio models [--json] [--filter TEXT]                    models already here (see cli_models.py)
    lora-studio plan CONFIG.toml [--json]                          estimated peak memory (see cli_plan.py)
    lora-studio gallery|export|combine|resize|generate ...         finished adapters (see cli_gallery.py)

Exit codes: 0 success, 1 a failure while training, 2 bad input (config, dataset, model), 130
interrupted. Errors are one line naming the file, line or field; no traceback unless
LORA_STUDIO_DEBUG=1 (a failed run also keeps the full trace in its folder's error.log).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from studio.cli_gallery import COMMANDS as GALLERY_COMMANDS
from studio.core.storage import held_text
from studio.core.telemetry.monitor import RELATIVE_UPDATE


def _err(message: str) -> None:
    clear = "\r\033[K" if sys.stderr.isatty() else ""  # over a progress status line, if any
    print(f"{clear}lora-studio: error: {message}", file=sys.stderr)


PROGRESS_GRACE_S = 2.0   # progress held back this long when the output is not a terminal


class ProgressSink:
    """Shows a run on the terminal: a progress bar with loss and ETA on a TTY, a line every few
    seconds otherwise (logs, CI); `--json` prints every event as a JSON line on stdout instead."""

    def __init__(self, json_lines: bool = False, stream=None):
        self.json_lines = json_lines
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total = 0
        self.start = None
        self.last_print = 0.0
        self.loss = None
        self.pending: list[str] = []
        self.first_pending = 0.0              # when the first held-back progress line came
        self.speaking = False                 # progress lines go out as they come
        self.spectra: dict | None = None       # the latest telemetry, summarised when the run ends
        self.relative: dict | None = None
        self.ranks: dict | None = None

    def __call__(self, event: dict) -> None:
        if self.json_lines:
            print(json.dumps(event), flush=True)
            return
        kind = event.get("type")
        if kind == "progress":
            if self.tty:  # a status line that the next output overwrites (a GGUF conversion takes a while)
                self.stream.write(f"\r\033[K{event.get('message', '')}")
                self.stream.flush()
            else:
                # held back a moment: bad input (found in the first second) then prints its one error
                # line alone; a long preparation (a large dataset, a GGUF conversion) is told as it goes
                now = time.monotonic()
                self.pending.append(event.get("message", ""))
                self.first_pending = self.first_pending or now
                if self.speaking or now - self.first_pending >= PROGRESS_GRACE_S:
                    self.speaking = True
                    for message in self.pending:
                        self._line(message)
                    self.pending = []
        elif kind == "run_started":
            for message in self.pending:
                self._line(message)
            self.pending = []
            self.total = event.get("total_steps", 0)
            self.start = time.monotonic()
            self._line(f"{event['config']['variant']['name']}: {event['trainable_params']:,} trainable of "
                       f"{event['total_params']:,} parameters, {len(event['adapted_layers'])} adapted layers, "
                       f"{event.get('train_examples', '?')} training examples on {event['device']} "
                       f"({held_text(event)})")
        elif kind == "step":
            self.total = event.get("total_steps") or self.total
            self.loss = event.get("loss")
            self._bar(event["step"])
        elif kind == "eval":
            metrics = ", ".join(f"{k.removeprefix('eval_')} {v:.4g}" for k, v in event.items()
                                if k.startswith("eval_") and isinstance(v, (int, float)))
            self._line(f"eval at step {event['step']}: {metrics}")
        elif kind == "checkpoint":
            self._line(f"checkpoint: {event['path']}")
        elif kind in ("paused", "resumed"):
            self._line(f"{kind} at step {event['step']}")
        elif kind == "spectra":
            self.spectra = event
        elif kind == "importance" and event.get("method") == RELATIVE_UPDATE:
            self.relative = event
        elif kind == "ranks" and "budget" in event:
            self.ranks = event
        elif kind == "run_finished" and event.get("status") != "failed":
            for line in telemetry_summary(self.spectra, self.relative, self.ranks, event):
                self._line(line)
            self._line(f"run {event['status']} at step {event['step']}")

    def _bar(self, step: int) -> None:
        now = time.monotonic()
        elapsed = now - (self.start or now)
        eta = elapsed / step * (self.total - step) if step and self.total else 0.0
        loss = f"{self.loss:.4f}" if isinstance(self.loss, (int, float)) else "-"
        text = f"step {step}/{self.total} loss {loss} elapsed {_hms(elapsed)} ETA {_hms(eta)}"
        if self.tty:
            width = 24
            done = int(width * step / self.total) if self.total else 0
            self.stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {text}   ")
            self.stream.flush()
        elif now - self.last_print >= 2.0 or step == self.total:
            self.last_print = now
            self._line(text)

    def _line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()


def telemetry_summary(spectra: dict | None, relative: dict | None, ranks: dict | None,
                      finished: dict) -> list[str]:
    """A few lines on what the adapters did, from the last telemetry events of a run."""
    import statistics

    lines = []
    layers = (spectra or {}).get("layers") or {}
    measured = {name: v for name, v in layers.items() if v.get("k90") and v.get("stable_rank") is not None}
    if measured:
        k90 = sorted(v["k90"] for v in measured.values())
        widest = max(measured, key=lambda n: (measured[n]["k90"], measured[n].get("stable_rank") or 0))
        width = max(len(v["sv"]) for v in measured.values())
        stable = statistics.median(v["stable_rank"] for v in measured.values())
        lines.append(f"update spectra at step {spectra['step']} ({len(layers)} layers): rank holding 90% of "
                     f"‖ΔW‖² median {statistics.median(k90):g}, at most {k90[-1]} ({widest}), of {width}; "
                     f"median stable rank {stable:.2f}")
    values = {n: v for n, v in ((relative or {}).get("layers") or {}).items() if isinstance(v, (int, float))}
    if values:
        top = max(values, key=values.get)
        lines.append(f"largest relative update ‖ΔW‖/‖W0‖: {values[top]:.2e} in {top}")
    if ranks:
        lines.append(f"AdaLoRA rank budget: {ranks['budget']} (target {ranks.get('target_budget', '?')})")
    train_s, tele_s = finished.get("train_s"), finished.get("telemetry_s")
    if train_s and tele_s is not None:
        lines.append(f"telemetry: {tele_s:.2f} s during training ({100 * tele_s / train_s:.2f}% of "
                     f"{train_s:.1f} s), {finished.get('final_telemetry_s') or 0:.2f} s at the end")
    return lines


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def cmd_train(args) -> int:
    from studio.core.config import RunConfig
    from studio.core.distributed import LOST_PEER, world
    from studio.core.errors import StudioError
    from studio.core.training import RunControl, Session

    # Under `accelerate launch` every process runs this; the main one speaks for the run, the
    # others only for a failure of their own.
    main_process = world().is_main

    try:
        if args.resume and args.config:
            _err("train: give either a CONFIG.toml or --resume RUN_FOLDER, not both "
                 "(a resumed run uses the config.toml in its folder)")
            return 2
        if args.resume:
            run_dir = Path(args.resume)
            if not run_dir.is_dir():
                _err(f"{run_dir}: no such run folder")
                return 2
            if not (run_dir / "config.toml").is_file():
                _err(f"{run_dir}: not a run folder (expected config.toml inside)")
                return 2
            config = RunConfig.from_toml(run_dir / "config.toml")
        elif args.config:
            config = RunConfig.from_toml(args.config)
            run_dir = None
        else:
            _err("train: expected a CONFIG.toml or --resume RUN_FOLDER")
            return 2
        if args.set and args.resume:
            _err("train: --set cannot change a run being resumed (it continues with the config.toml "
                 "in its folder); start a new run instead")
            return 2
        if args.preset and args.resume:
            _err("train: --preset cannot change a run being resumed; start a new run instead")
            return 2
        if args.preset:   # first: --set values given with it win
            from studio.core.presets import apply_preset

            config = apply_preset(config, args.preset)
        if args.set:
            config = config.with_overrides(args.set)
    except StudioError as e:
        _err(str(e))
        return e.exit_code

    control = RunControl()
    interrupts = {"n": 0}

    def on_sigint(signum, frame):
        interrupts["n"] += 1
        if interrupts["n"] == 1:
            if main_process:
                print("\nstopping after this step (the adapter will be saved); Ctrl-C again to abort",
                      file=sys.stderr)
            control.stop()
        else:
            raise KeyboardInterrupt

    # Under a launch the launcher passes a Ctrl-C on to every process as SIGINT (they stop at the
    # same step) and sends SIGTERM when another process failed: that one ends a process at once.
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        session = Session(config, resume_dir=run_dir, control=control)
        result = session.run(sink=ProgressSink(json_lines=args.json))
    finally:
        signal.signal(signal.SIGINT, previous)
    if not main_process:
        # bad input is the same in every process, and a lost peer reports its own failure
        if result.error and result.exit_code == 1 and result.error != LOST_PEER:
            _err(f"process {world().rank}: {result.error}")
        return result.exit_code
    if result.error:
        _err(result.error)
    if result.run_dir is not None:
        # with --json stdout is events only (run_started carries run_dir); the folder goes to stderr
        print(result.run_dir, file=sys.stderr if args.json else sys.stdout)
    if interrupts["n"] and result.status == "stopped":
        return 130  # stopped by Ctrl-C: the adapter and a checkpoint are saved, but the run is not done
    return result.exit_code


def cmd_variants(args) -> int:
    from studio.core.options import describe_fields
    from studio.core.variants import REGISTRY

    if args.json:
        print(json.dumps({name: {"description": v.description, "options": describe_fields(v.options_cls)}
                          for name, v in REGISTRY.items()}, indent=1))
        return 0
    width = max(len(n) for n in REGISTRY)
    for name, v in REGISTRY.items():
        print(f"{name:<{width}}  {v.description}")
        if args.options:
            for f in describe_fields(v.options_cls):
                bounds = ""
                if "choices" in f:
                    bounds = f" ({'/'.join(map(str, f['choices']))})"
                elif "min" in f or "max" in f:
                    bounds = f" [{f.get('min', '')}..{f.get('max', '')}]"
                print(f"    {f['name']} = {f['default']!r}{bounds}  {f['help']}")
    return 0


def cmd_gui(args) -> int:
    from studio.ui.app import main as gui_main

    return gui_main(args.path, screenshot=args.screenshot, screenshot_delay=args.screenshot_delay)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora-studio",
                                     description="Parameter-efficient fine-tuning: LoRA and seven variants.")
    parser.epilog = ("With no command, or with a CONFIG.toml or RUN_FOLDER, lora-studio opens the window: "
                     "lora-studio [CONFIG.toml | RUN_FOLDER]")
    sub = parser.add_subparsers(dest="command")
    gui = sub.add_parser("gui", help="open the window (the default with no command)")
    gui.add_argument("path", nargs="?", help="a run config (.toml) or a run folder to open")
    gui.add_argument("--screenshot", metavar="FILE.png",
                     help="save a picture of the window once it has painted, then quit (works offscreen)")
    gui.add_argument("--screenshot-delay", type=float, default=1.0, metavar="SECONDS",
                     help="how long the window runs before the picture is taken (default 1)")
    gui.set_defaults(func=cmd_gui)

    train = sub.add_parser("train", help="train an adapter from a run config (TOML)")
    train.add_argument("config", nargs="?", help="the run config, e.g. resources/configs/default.toml")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one config key (repeatable), e.g. --set train.max_steps=50")
    train.add_argument("--preset", metavar="NAME", help="a starting point by model size: small, 1-3b, 7-8b, 13b+ "
                       "(storage, rank, batch, length, learning rate, checkpointing; --set wins)")
    train.add_argument("--resume", metavar="RUN_FOLDER", help="continue a run from its last checkpoint")
    train.add_argument("--json", action="store_true", help="print every event as a JSON line on stdout")
    train.set_defaults(func=cmd_train)

    variants = sub.add_parser("variants", help="list the LoRA variants")
    variants.add_argument("--options", action="store_true", help="also list each variant's options")
    variants.add_argument("--json", action="store_true", help="everything as JSON")
    variants.set_defaults(func=cmd_variants)

    from studio.cli_gallery import add_commands
    from studio.cli_launch import add_command as add_launch

    add_launch(sub)
    add_commands(sub)
    from studio.cli_info import add_command as add_info_command

    add_info_command(sub)
    from studio.cli_models import add_command as add_models_command

    add_models_command(sub)
    from studio.cli_plan import add_command as add_plan_command

    add_plan_command(sub)
    return parser


COMMANDS = ("train", "launch", "variants", "gui", "info", "models", "plan") + GALLERY_COMMANDS


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and not argv[0].startswith("-")):
        # no command, or a path: the window (Qt and the charts load only on this path)
        if len(argv) > 1:
            _err(f"expected one CONFIG.toml or RUN_FOLDER to open, got {len(argv)} arguments "
                 "(see lora-studio --help)")
            return 2
        from studio.ui.app import main as gui_main

        return gui_main(argv[0] if argv else None)
    parser = build_parser()
    extra: list[str] = []
    if argv[0] == "launch" and "--" in argv:   # the rest is for accelerate launch, as it is
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    args = parser.parse_args(argv)
    if extra:
        args.accelerate_args = extra
    if args.command is None:
        parser.print_help()
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not os.environ.get("LORA_STUDIO_DEBUG"):
        # the terminal shows our progress and one-line errors; library chatter stays out of it
        import warnings

        warnings.simplefilter("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # `lora-studio variants | head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as e:  # a bug: still one line unless debugging
        if os.environ.get("LORA_STUDIO_DEBUG"):
            raise
        _err(f"unexpected {type(e).__name__}: {e} (set LORA_STUDIO_DEBUG=1 for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
