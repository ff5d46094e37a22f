"""Why a run failed, in one sentence: out of memory (with the memory plan's estimate beside it),
a full disk (naming what was being written), a lost peer process, a NaN loss; anything else is
its first line, with the traceback kept in the run folder (error.log)."""

from __future__ import annotations

import math
import shutil
import traceback
from pathlib import Path

from . import distributed
from .config import RunConfig
from .errors import one_line
from .paths import DiskFullError, disk_full_error
from .runfolder import START_AGAIN, incomplete_checkpoints


def out_of_memory(kind: str, estimate: str = "") -> str:
    where = {"cuda": "GPU memory", "mps": "GPU memory (Apple)"}.get(kind, "memory (RAM)")
    beside = f" ({estimate})" if estimate else ""
    return (f"out of {where}{beside}: lower train.batch_size or data.max_seq_len, or set "
            "train.gradient_checkpointing = true (the checkpoints saved so far are kept)")


def out_of_memory_in(e: BaseException, estimate: str = "") -> str | None:
    """The out-of-memory sentence for an allocator's error that is not a MemoryError, else None."""
    text = str(e)
    if type(e).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text:
        return out_of_memory("cuda", estimate)
    if "MPS backend out of memory" in text:
        return out_of_memory("mps", estimate)
    if "can't allocate memory" in text or "DefaultCPUAllocator" in text:
        return out_of_memory("cpu", estimate)
    return None


def plan_estimate(cfg: RunConfig, source: str, device) -> str:
    """'the plan estimated a peak of ~3.1 GiB with 2.0 GiB free': the memory plan of this run,
    told beside an out-of-memory failure ("" when the model's shapes cannot be read)."""
    from . import plan

    try:
        cfg = cfg.copy()
        cfg.model.source = source
        est = plan.estimate(cfg, device=device.type if device.type in ("cpu", "cuda") else "cpu")
    except Exception:   # a remote-code or odd model: the failure is told without it
        return ""
    free = f" with {plan.gib(est.free_bytes)} free" if est.free_bytes is not None else ""
    return f"the memory plan estimated a peak of ~{plan.gib(est.peak_bytes)}{free} when the run started"


def finite(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and math.isfinite(value))


def diverged(step: int) -> str:
    return (f"the loss became NaN or infinite at step {step}: "
            "lower train.learning_rate (no adapter was saved)")


def resume_hint(run_dir: Path) -> str:
    return f"free some space and resume with lora-studio train --resume {run_dir}"


def disk_full(e: BaseException, run_dir: Path | None, output_dir: str, opened: bool) -> DiskFullError | None:
    """A full disk while training, as one sentence naming what was being written; None when `e`
    is something else. A checkpoint it interrupted (no marker) is removed, which gives back the
    space it took; the checkpoints before it are untouched. `opened`: this process holds the run
    folder (its event log is open), so it may remove what it finds half-written."""
    if run_dir is None:
        where = getattr(e, "filename", None) or output_dir
        return disk_full_error(e, where, START_AGAIN)
    partial = incomplete_checkpoints(run_dir) if opened else []
    where = getattr(e, "path", None) if isinstance(e, DiskFullError) else None
    where = where or (partial[-1] if partial else None) or getattr(e, "filename", None) or run_dir
    full = disk_full_error(e, where, resume_hint(run_dir))
    if full is not None:
        for folder in partial:
            shutil.rmtree(folder, ignore_errors=True)
    return full


def sentence(e: BaseException, *, full: DiskFullError | None, estimate: str, world: distributed.World,
             run_dir: Path | None) -> str:
    """One line for an exception that is not a StudioError (a library failure or a bug): what
    the process that failed says, a full disk, running out of memory, or else the exception's
    first line, with the traceback written to the run folder. Call it while handling `e`."""
    if not world.is_main and distributed.lost_peer(e):
        return distributed.LOST_PEER   # the failed process says why
    if full is not None:
        return str(full)
    oom = out_of_memory_in(e, estimate)
    if oom is not None:
        return oom
    error = one_line(e)
    if run_dir is not None:
        name = "error.log" if world.is_main else f"error-process{world.rank}.log"
        try:
            (run_dir / name).write_text(traceback.format_exc(), encoding="utf-8")
            error += f" (details in {run_dir / name})"
        except OSError:  # the disk that failed the run may fail this too
            pass
    return error
