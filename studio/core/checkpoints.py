"""What a run keeps in a checkpoint beyond the Trainer's own files, and putting it back on resume.

Beside each Trainer checkpoint (adapter weights, optimizer, scheduler, RNG, trainer_state.json)
the run saves the variant's state: `studio_state.json` (also kept in the run folder) and
`studio_state.safetensors` (AdaLoRA's importance scores, Delta-LoRA's moved W, ...), then, last,
the `studio_complete` marker (runfolder.CHECKPOINT_DONE). Resuming first reads every file the way
resuming will (check_checkpoint_files: the Trainer's pickles only as tensors), then the variant
puts its weights and state into the freshly built model (restore).
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import InputError
from .paths import fsync_file, write_text_atomic
from .runfolder import CHECKPOINT_DONE

STATE_JSON = "studio_state.json"          # variant state (JSON) kept in the run folder and checkpoints
STATE_TENSORS = "studio_state.safetensors"

# The Trainer's own state files are pickles; transformers reads them with weights_only=True.
TRAINER_PICKLES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt")


def check_checkpoint_files(checkpoint: Path) -> None:
    """Read a checkpoint's files the way resuming will, before anything is changed, so that a
    damaged or tampered file is one sentence naming it. The pickles are read with
    weights_only=True: a file holding anything but tensors and plain containers is refused
    without running it. The safetensors files are checked by safetensors itself."""
    import torch
    from transformers.trainer_pt_utils import safe_globals as trainer_safe_globals

    from .safeload import check_safetensors

    for path in sorted(checkpoint.glob("*.safetensors")):
        check_safetensors(path, InputError)
    for name in TRAINER_PICKLES:
        path = checkpoint / name
        if not path.is_file():
            continue
        try:
            with trainer_safe_globals():   # the Trainer's own allowlist (numpy RNG state)
                torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:   # UnpicklingError (a foreign object), RuntimeError/EOFError (damage)
            what = ("holds Python objects other than tensors, so it was not loaded (a tampered or foreign "
                    "file)" if "weights_only" in str(e) or "Unsupported global" in str(e)
                    else f"cannot be read ({type(e).__name__})")
            raise InputError(f"{path}: {what}; delete {checkpoint.name} to resume from the checkpoint "
                             "before it") from None


def saved_state(resume_dir: Path | None) -> dict:
    """The variant's JSON state a run folder keeps ({} for a new run)."""
    if resume_dir is None:
        return {}
    path = resume_dir / STATE_JSON
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return {}


def write_state(run_dir: Path, state: dict) -> None:
    write_text_atomic(run_dir / STATE_JSON, json.dumps(state, indent=1))


def restore(model, variant, opts, checkpoint: Path, ctx) -> int:
    """Put the checkpoint's adapter weights and the variant's extra state into the model
    before the Trainer loads optimizer, scheduler and data position from the same folder.
    Returns the checkpoint's step."""
    from safetensors.torch import load_file

    check_checkpoint_files(checkpoint)
    variant.load_checkpoint_weights(model, opts, checkpoint)
    tensors_path = checkpoint / STATE_TENSORS
    tensors = load_file(str(tensors_path)) if tensors_path.is_file() else {}
    variant.restore_state(model, opts, tensors, ctx)
    return int(checkpoint.name.split("-")[-1])


def save_state(model, variant, opts, run_dir: Path, checkpoint: Path) -> None:
    """The variant's state beside a checkpoint the Trainer has just saved."""
    from safetensors.torch import save_file

    tensors = variant.checkpoint_state(model, opts)
    if tensors:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                  str(checkpoint / STATE_TENSORS))
    state_json = run_dir / STATE_JSON
    if state_json.is_file():
        write_text_atomic(checkpoint / STATE_JSON, state_json.read_text(encoding="utf-8"))


def mark_complete(checkpoint: Path) -> None:
    """Every file on disk, then the marker that says the checkpoint is whole."""
    for f in checkpoint.iterdir():
        if f.is_file():
            fsync_file(f)
    (checkpoint / CHECKPOINT_DONE).write_text("", encoding="utf-8")
