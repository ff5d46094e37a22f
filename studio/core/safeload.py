"""Safe loading: which files the studio reads, and checks that make a bad file a one-line error.

The rules (DESIGN.md, "only safetensors are read"):
- weights (base models, adapters, our checkpoint state) are read from .safetensors only; a folder
  whose weights are pickles (pytorch_model.bin, *.pt, *.pth, *.ckpt) is refused with a sentence
  that says how to convert it;
- the Trainer's own checkpoint files (optimizer.pt, scheduler.pt, rng_state.pth) are pickles;
  transformers reads them with torch.load(weights_only=True), which refuses any object that is
  not a tensor or plain container, so a crafted file cannot run code (tests prove it);
- remote code runs only when model.trust_remote_code is on (models.py warns when it is);
- nothing is fetched from the network unless the model source is a hub id (models.py passes
  local_files_only for every local source).

safetensors validates a file when it is opened (the header is parsed and its offsets must cover
the file exactly), so `check_safetensors` costs a header read, not a load. The adapter-to-base
shape check below reads headers only as well; no library offers it before a full load.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def safetensors_error(path: Path) -> str | None:
    """Why `path` is not a readable safetensors file (None when it is)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:   # the header only; numpy, so no torch import
            f.keys()
    except Exception as e:   # SafetensorError, OSError: the reason is all a person needs
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return text.removeprefix("Error while deserializing header: ")
    return None


def check_safetensors(path: Path, error: type[InputError] = InputError, what: str = "") -> None:
    """Raise `error` naming the file when it is not a complete safetensors file."""
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
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
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
