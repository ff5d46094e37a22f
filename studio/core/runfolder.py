"""The run folder: making one, holding it alone while a run trains it, finding its checkpoints,
and clearing what a killed process left half-written in it.

    RUN/config.toml          the run's config (written once, when the folder is made)
    RUN/events.jsonl         the event log, locked while a process trains the run
    RUN/run.lock             the process training it (runlock.py), for a window that opens it
    RUN/studio_state.json    the variant's state (checkpoints.py)
    RUN/checkpoints/checkpoint-N/    the Trainer's checkpoints; `studio_complete`, written last,
                                     marks one whole (a crash mid-save leaves none)
    RUN/adapter/             the saved adapter (written whole, by one rename)

Nothing here imports torch: the window asks for a run's last checkpoint with it.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from . import runlock
from .config import RunConfig
from .errors import ConfigError, TrainingError
from .paths import DiskFullError, disk_full_error, sweep_stale, write_text_atomic
from .telemetry.events import EventLog, LogBusy, Sink, read_events

CHECKPOINT_DONE = "studio_complete"  # written last in a checkpoint: a crash mid-save leaves none
START_AGAIN = "free some space and start the run again"


def new_run_dir(output_dir: str, variant: str) -> Path:
    base = Path(output_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        name = f"{stamp}-{variant}" + (f"-{i}" if i else "")
        path = base / name
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise TrainingError(f"train.output_dir: could not create a new run folder in {base}")


def checkpoint_folders(run_dir: Path) -> list[Path]:
    """Every checkpoint-N folder of a run, complete or not, by step."""
    return sorted((p for p in (Path(run_dir) / "checkpoints").glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[-1].isdigit()), key=lambda p: int(p.name.split("-")[-1]))


def _complete(checkpoint: Path) -> bool:
    return (checkpoint / "trainer_state.json").is_file() and (checkpoint / CHECKPOINT_DONE).is_file()


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that was written completely (Trainer state and our variant state)."""
    ckpts = [p for p in checkpoint_folders(run_dir) if _complete(p)]
    return ckpts[-1] if ckpts else None


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders a crash or a full disk interrupted (no marker): never resumed from."""
    return [p for p in checkpoint_folders(run_dir) if not _complete(p)]


def finished_status(run_dir: Path) -> str | None:
    """The status of the last run_finished event in a run folder's log, if any."""
    path = run_dir / "events.jsonl"
    status = None
    if path.is_file():
        for event in read_events(path):
            if event.get("type") == "run_finished":
                status = event.get("status")
    return status


def check_resumable(resume_dir: Path, main_process: bool = True) -> None:
    """A ConfigError unless `resume_dir` is a run folder that no process is training and that
    has not completed."""
    if not (resume_dir / "config.toml").is_file():
        raise ConfigError(f"{resume_dir}: not a run folder (no config.toml)")
    pid = runlock.holder(resume_dir) if main_process else None
    if pid is not None:   # besides the lock on the event log, which not every filesystem has
        raise ConfigError(f"{resume_dir}: this run is still running in process {pid} "
                          f"(if it is not, delete {resume_dir / runlock.LOCK})")
    if finished_status(resume_dir) == "completed":
        raise ConfigError(f"{resume_dir}: this run already completed; nothing to resume "
                          "(start a new run with more steps)")


def open_run_folder(cfg: RunConfig, resume_dir: Path | None, sink: Sink | None) -> tuple[Path, EventLog]:
    """Make a new run folder for `cfg` (or reopen `resume_dir`) and open its event log, locked:
    one process trains a run folder at a time (a second resume, a GUI and a CLI). A folder this
    call made and could not finish is removed again."""
    fresh = None
    try:
        if resume_dir is not None:
            run_dir = resume_dir
        else:
            run_dir = fresh = new_run_dir(cfg.train.output_dir, cfg.variant_name)
            write_text_atomic(run_dir / "config.toml", cfg.to_toml(), hint=START_AGAIN)
        log = EventLog(run_dir / "events.jsonl", forward=sink, exclusive=True)
    except LogBusy:
        raise ConfigError(f"{run_dir}: another lora-studio process is training this run right now "
                          "(wait for it to end, or stop it, before resuming)") from None
    except (OSError, DiskFullError) as e:
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)   # nothing of this run is in it yet
        if isinstance(e, DiskFullError):
            raise
        full = disk_full_error(e, getattr(e, "filename", None) or cfg.train.output_dir, START_AGAIN)
        if full is not None:
            raise full from None
        raise ConfigError(f"train.output_dir: cannot write the run folder ({e.strerror}: {e.filename})") from None
    return run_dir, log


def clean_after_crash(run_dir: Path, progress) -> None:
    """What a killed or failed process left half-written in this run folder, which this
    process now holds alone: checkpoints without their marker, temporary adapter folders
    and files. The complete checkpoints and the adapter are untouched."""
    for folder in incomplete_checkpoints(run_dir):
        shutil.rmtree(folder, ignore_errors=True)
        progress(f"removed {folder.name}: it was cut short while being saved")
    for where in (run_dir, run_dir / "checkpoints", *checkpoint_folders(run_dir)):
        sweep_stale(where, everything=True)


def claim(run_dir: Path) -> None:
    """Name this process in the run folder's run.lock (runlock.py), for a window that opens the
    folder meanwhile; the event log's lock is what keeps a second writer out."""
    try:
        runlock.claim(run_dir)
    except (AttributeError, OSError):
        pass


def release(run_dir: Path) -> None:
    try:
        runlock.release(run_dir)
    except (AttributeError, OSError):
        pass
