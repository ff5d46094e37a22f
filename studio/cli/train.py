"""`lora-studio train`: one run from a config (or a resumed run), told on the terminal as it goes.

    lora-studio train CONFIG.toml [--set section.key=value ...] [--preset NAME] [--json]
    lora-studio train --resume RUN_FOLDER

Prints the run folder on stdout when done. A progress bar with loss and ETA on a terminal, a line
every few seconds otherwise (logs, CI); `--json` prints every event as a JSON line on stdout
instead. The text for each event is made in one place: `event_line`. Ctrl-C stops after the
current step, saving the adapter and a checkpoint (exit 130); a second Ctrl-C aborts.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from studio.cli.common import BAD_INPUT, FAILED, INTERRUPTED, error_line, print_json
from studio.core.units import hms
from studio.core.events import describe
from studio.core.telemetry.monitor import RELATIVE_UPDATE

PROGRESS_GRACE_S = 2.0   # progress held back this long when the output is not a terminal


def event_line(event: dict) -> str | None:
    """The line a person reads for a run event (studio.core.events.describe, the window's log line
    too), or None for the events told otherwise: steps (the progress bar), telemetry (summarised
    when the run ends, telemetry_summary) and a failed run (its error line)."""
    if event.get("type") == "run_finished" and event.get("status") == "failed":
        return None
    return describe(event)


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
            print_json(event, one_line=True)
            return
        kind = event.get("type")
        if kind == "progress":
            if self.tty:  # a status line that the next output overwrites (a GGUF conversion takes a while)
                self.stream.write(f"\r\033[K{event_line(event)}")
                self.stream.flush()
            else:
                # held back a moment: bad input (found in the first second) then prints its one error
                # line alone; a long preparation (a large dataset, a GGUF conversion) is told as it goes
                now = time.monotonic()
                self.pending.append(event_line(event))
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
            self._line(event_line(event))
        elif kind == "step":
            self.total = event.get("total_steps") or self.total
            self.loss = event.get("loss")
            self._bar(event["step"])
        elif kind in ("eval", "checkpoint", "paused", "resumed"):
            self._line(event_line(event))
        elif kind == "spectra":
            self.spectra = event
        elif kind == "importance" and event.get("method") == RELATIVE_UPDATE:
            self.relative = event
        elif kind == "ranks" and "budget" in event:
            self.ranks = event
        elif kind == "run_finished" and event.get("status") != "failed":
            for line in telemetry_summary(self.spectra, self.relative, self.ranks, event):
                self._line(line)
            self._line(event_line(event))

    def _bar(self, step: int) -> None:
        now = time.monotonic()
        elapsed = now - (self.start or now)
        eta = elapsed / step * (self.total - step) if step and self.total else 0.0
        loss = f"{self.loss:.4f}" if isinstance(self.loss, (int, float)) else "-"
        text = f"step {step}/{self.total} loss {loss} elapsed {hms(elapsed)} ETA {hms(eta)}"
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
            error_line("train: give either a CONFIG.toml or --resume RUN_FOLDER, not both "
                       "(a resumed run uses the config.toml in its folder)")
            return BAD_INPUT
        if args.resume:
            run_dir = Path(args.resume)
            if not run_dir.is_dir():
                error_line(f"{run_dir}: no such run folder")
                return BAD_INPUT
            if not (run_dir / "config.toml").is_file():
                error_line(f"{run_dir}: not a run folder (expected config.toml inside)")
                return BAD_INPUT
            config = RunConfig.from_toml(run_dir / "config.toml")
        elif args.config:
            config = RunConfig.from_toml(args.config)
            run_dir = None
        else:
            error_line("train: expected a CONFIG.toml or --resume RUN_FOLDER")
            return BAD_INPUT
        if args.set and args.resume:
            error_line("train: --set cannot change a run being resumed (it continues with the config.toml "
                       "in its folder); start a new run instead")
            return BAD_INPUT
        if args.preset and args.resume:
            error_line("train: --preset cannot change a run being resumed; start a new run instead")
            return BAD_INPUT
        if args.preset:   # first: --set values given with it win
            from studio.core.presets import apply_preset

            config = apply_preset(config, args.preset)
        if args.set:
            config = config.with_overrides(args.set)
    except StudioError as e:
        error_line(str(e))
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
        if result.error and result.exit_code == FAILED and result.error != LOST_PEER:
            error_line(f"process {world().rank}: {result.error}")
        return result.exit_code
    if result.error:
        error_line(result.error)
    if result.run_dir is not None:
        # with --json stdout is events only (run_started carries run_dir); the folder goes to stderr
        print(result.run_dir, file=sys.stderr if args.json else sys.stdout)
    if interrupts["n"] and result.status == "stopped":
        return INTERRUPTED  # stopped by Ctrl-C: the adapter and a checkpoint are saved, but the run is not done
    return result.exit_code


def add_command(sub) -> None:
    train = sub.add_parser("train", help="train an adapter from a run config (TOML)")
    train.add_argument("config", nargs="?", help="the run config, e.g. resources/configs/default.toml")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one config key (repeatable), e.g. --set train.max_steps=50")
    train.add_argument("--preset", metavar="NAME", help="a starting point by model size: small, 1-3b, 7-8b, 13b+ "
                       "(storage, rank, batch, length, learning rate, checkpointing; --set wins)")
    train.add_argument("--resume", metavar="RUN_FOLDER", help="continue a run from its last checkpoint")
    train.add_argument("--json", action="store_true", help="print every event as a JSON line on stdout")
    train.set_defaults(func=cmd_train)


COMMANDS = ("train",)
