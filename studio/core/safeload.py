"""Safe loading: which files the studio reads, and checks that make a bad file a one-line error.

The rules (only safetensors are read):
- weights (base models, adapters, our checkpoint state) are read from .safetensors only; a folder
  whose weights are pickles (pytorch_model.bin, *.pt, *.pth, *.ckpt) is refused with a sentence
  that says how to convert it;
- the Trainer's own checkpoint files (optimizer.pt, scheduler.pt, rng_state.pth) are pickles;
  transformers reads them with torch.load(weights_only=True), which refuses any object that is
  not a tensor or plain container, so a crafted file cannot run code (tests prove it);
- remote code runs only when model.trust_remote_code is on (models.py warns when it is);
- nothing is fetched from the network unless the model source is a hub id (models.py passes
  local_files_only for every local source).

Before anything opens a weight file, `check_weight_file` looks at its type and size (a named pipe
would block the open forever). safetensors validates a file when it is opened (the header is parsed
and its offsets must cover the file exactly), so `check_safetensors` costs a header read, not a
load. The adapter-to-base shape check below reads headers only as well; no library offers it
before a full load.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .names import PEFT_PREFIX
from .errors import InputError, first_line

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MIN_WEIGHT_BYTES = 8   # a safetensors file's header length alone takes 8 bytes


def weight_file_problem(path: Path, min_size: int = MIN_WEIGHT_BYTES) -> str | None:
    """Why `path` cannot be a weight file, from its type and size alone (None when it may be).

    Checked before anything opens it: opening a named pipe waits for a writer forever, and a
    device or socket is no file to read weights from."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ("a symbolic link that leads nowhere (its target is missing, or it loops)"
                if os.path.islink(path) else "no such file")
    except OSError as e:
        return f"cannot read ({e.strerror})"
    mode = st.st_mode
    if not stat.S_ISREG(mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a folder" if stat.S_ISDIR(mode) else "not a regular file")
        return f"{kind}, not a regular file"
    if not os.access(path, os.R_OK):
        return "cannot read (permission denied)"
    if st.st_size < min_size:
        return (f"only {st.st_size} bytes, too small to be a weight file (at least {min_size} bytes); "
                "it may be truncated: copy or download it again")
    return None


def check_weight_file(path: Path, error: type[InputError] = InputError, what: str = "",
                      min_size: int = MIN_WEIGHT_BYTES) -> None:
    """Raise `error` naming the file when it is not a regular, readable file of at least `min_size` bytes."""
    reason = weight_file_problem(Path(path), min_size)
    if reason is not None:
        raise error(f"{what}: {path}: {reason}" if what else f"{path}: {reason}")


def special_files(folder: Path) -> list[Path]:
    """The named pipes, sockets and devices in `folder` (links followed): a loader that opens one
    of them waits forever or reads nonsense."""
    found = []
    for entry in sorted(Path(folder).iterdir()):
        try:
            mode = entry.stat().st_mode
        except OSError:   # a broken link: no hang, and the loader says what it misses
            continue
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            found.append(entry)
    return found


def safetensors_error(path: Path) -> str | None:
    """Why `path` is not a readable safetensors file (None when it is)."""
    from safetensors import safe_open

    reason = weight_file_problem(Path(path))
    if reason is not None:
        return reason
    try:
        with safe_open(str(path), framework="numpy") as f:   # the header only; numpy, so no torch import
            f.keys()
    except Exception as e:   # SafetensorError, OSError: the reason is all a person needs
        return first_line(e).removeprefix("Error while deserializing header: ")
    return None


def check_safetensors(path: Path, error: type[InputError] = InputError, what: str = "") -> None:
    """Raise `error` naming the file when it is not a complete safetensors file."""
    check_weight_file(path, error, what)
    reason = safetensors_error(Path(path))
    if reason is not None:
        prefix = f"{what}: " if what else ""
        raise error(f"{prefix}{path}: not a valid safetensors file ({reason}); "
                    "it may be truncated or damaged: copy or download it again")


def pickle_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)


def tensor_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """name -> shape from safetensors headers (no tensor data is read)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        check_safetensors(path)
        with safe_open(str(path), framework="numpy") as f:
            for key in f.keys():
                shapes[key] = tuple(f.get_slice(key).get_shape())
    return shapes


def _find(shapes: dict[str, tuple[int, ...]], module: str) -> tuple[int, ...] | None:
    """The base weight of `module`, allowing for a prefix the two checkpoints name differently
    (a classifier's adapter says bert.encoder..., a bare encoder's file says encoder...)."""
    parts = module.split(".")
    for start in range(len(parts)):
        key = ".".join(parts[start:]) + ".weight"
        if key in shapes:
            return shapes[key]
    for key, shape in shapes.items():     # the file has a prefix the adapter has not
        if key.endswith("." + module + ".weight"):
            return shape
    return None


def adapter_base_mismatch(adapter_dir: Path, base_dir: Path) -> str | None:
    """A sentence naming the first adapted layer whose shape does not fit the base model, or None.

    Compares each LoRA-style pair (lora_A: r x in, lora_B: out x r) with the base layer's
    weight (out x in) from the headers of both folders. Layers the base files do not name (tied
    or renamed weights) are skipped rather than guessed at."""
    adapter_file = Path(adapter_dir) / "adapter_model.safetensors"
    base_files = sorted(Path(base_dir).glob("*.safetensors"))
    if not adapter_file.is_file() or not base_files:
        return None
    adapter = tensor_shapes([adapter_file])
    base = tensor_shapes(base_files)
    for key, a_shape in sorted(adapter.items()):
        if ".lora_A." not in key or len(a_shape) != 2:
            continue
        module = key.split(".lora_A.")[0].removeprefix(PEFT_PREFIX)
        b_shape = adapter.get(key.replace(".lora_A.", ".lora_B."))
        w_shape = _find(base, module)
        if w_shape is None or len(w_shape) != 2 or b_shape is None:
            continue
        out_features, in_features = w_shape
        fits = (a_shape[1], b_shape[0]) in ((in_features, out_features), (out_features, in_features))  # Conv1D
        if not fits:
            return (f"layer {module} is {in_features}->{out_features} in the base model, but the adapter "
                    f"was made for {a_shape[1]}->{b_shape[0]}: it belongs to a different base model")
    return None
