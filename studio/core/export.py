"""Export: a gallery adapter merged into its base as a Hugging Face model folder, or its PEFT
folder alone; and what combine.py, resize.py and playground.py share: loading an adapter on its
base, progress and stop, and saving a model in memory as a new gallery entry.

Every adapter in the gallery is a stock PEFT adapter for its ORIGINAL base model (Delta-LoRA
exports its moved weights as a rank-2r LoRA, LoRA-drop gives each tied module its own copy), so
loading is always `PeftModel.from_pretrained(base, folder)`, and merging is peft's per-layer
`merge()` followed by `merge_and_unload()`.

Long functions take `progress(message, fraction=None)` and `should_stop()`; a stop raises
`Cancelled`, and nothing is left behind: results are written to a temporary folder beside the
target and renamed into place only when complete (paths.atomic_dir): a process killed at any
point leaves the target (and the gallery) as it was, and a full disk raises DiskFullError naming
the target, with the temporary files removed.
torch, transformers and peft are imported inside the functions: the window imports this module.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Callable

from .errors import Cancelled, InputError, first_line
from .names import PEFT_PREFIX
from .gallery import (ADAPTER_FILES, META, TELEMETRY, UNCHANGED, Entry, Gallery, GalleryError, check_adapter_files)
from .paths import atomic_dir, disk_full_error, temp_path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.txt", "vocab.json",
                   "merges.txt", "added_tokens.json")
ADAPTER = "default"


class Reporter:
    """progress/should_stop with defaults, and the stop check."""

    def __init__(self, progress: Callable | None, should_stop: Callable[[], bool] | None):
        self._progress = progress
        self._should_stop = should_stop

    def __call__(self, message: str, fraction: float | None = None) -> None:
        if self._progress is not None:
            self._progress(message, fraction)

    def check(self) -> None:
        if self._should_stop is not None and self._should_stop():
            raise Cancelled("cancelled; nothing was written")


# -- resolving an adapter ----------------------------------------------------------------------

def entry_from(ref: str | Path, gallery: Gallery | None = None) -> Entry:
    """A gallery entry by name, or an adapter folder (or a run folder holding adapter/) given by path."""
    gallery = gallery or Gallery()
    text = str(ref)
    path = Path(text).expanduser()
    looks_like_path = "/" in text or "\\" in text or text.startswith(".")
    if path.is_dir() and (looks_like_path or not (gallery.root / text).is_dir()):
        folder = (path / "adapter" if (path / "adapter" / ADAPTER_FILES[0]).is_file() else path).resolve()
        if not all((folder / f).is_file() for f in ADAPTER_FILES):
            raise GalleryError(f"{path}: not an adapter folder (expected {' and '.join(ADAPTER_FILES)})")
        return Entry(folder.parent.name if folder.name == "adapter" else folder.name, folder,
                     _json(folder / META), _json(folder / "adapter_config.json"))
    if looks_like_path:
        raise GalleryError(f"{text}: no such folder (and not a gallery name)")
    return gallery.get(text)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        raise GalleryError(f"{path}: not valid JSON") from None


def resolve_base(entry: Entry):
    """The entry's base model as a local folder, checked against the fingerprint it trained on."""
    from .models import ResolvedModel, fingerprint, resolve_source

    path = entry.meta.get("base_path")
    if path and Path(path, "config.json").is_file():
        resolved = ResolvedModel(entry.base_model, str(path), "folder", fingerprint(Path(path)))
        if not entry.base_fingerprint or resolved.fingerprint == entry.base_fingerprint:
            return resolved
    if not entry.base_model:
        raise GalleryError(f"{entry.name}: its base model is unknown (no base_model in {META})")
    resolved = resolve_source(entry.base_model)
    if entry.base_fingerprint and resolved.fingerprint != entry.base_fingerprint:
        raise GalleryError(f"{entry.name}: the base model {entry.base_model} has changed since this adapter was "
                           f"trained (fingerprint {resolved.fingerprint}, expected {entry.base_fingerprint})")
    return resolved


def _head_size(entry: Entry) -> int:
    """Labels of a classifier adapter with no label names on record: the rows of its saved head."""
    from safetensors import safe_open

    with safe_open(str(entry.path / "adapter_model.safetensors"), "pt") as f:
        keys = [k for k in f.keys() if "lora_" not in k]
        # the head's output layer: RoBERTa-style heads have classifier.dense (hidden) before out_proj
        for ending in ("out_proj.weight", "classifier.weight", "score.weight"):
            for key in keys:
                if key.endswith(ending):
                    return int(f.get_slice(key).get_shape()[0])
    raise GalleryError(f"{entry.name}: a sequence-classification adapter without a saved classifier head")


def load_tokenizer_for(entry: Entry, resolved=None):
    """The tokenizer saved with the adapter (the run's chat template), else the base model's."""
    from transformers import AutoTokenizer

    from .models import load_tokenizer

    if (entry.path / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(entry.path))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        return tok
    return load_tokenizer(resolved or resolve_base(entry))


def load_base_model(entry: Entry, resolved, *, dtype=None, pad_token_id=None):
    from .models import load_model

    labels = entry.labels
    num_labels = 0
    if entry.task == "sequence-classification" and not labels:
        num_labels = _head_size(entry)
    return load_model(resolved, entry.task, label_names=labels or None, num_labels=num_labels, dtype=dtype,
                      pad_token_id=pad_token_id)


def tokenizer_files(entry: Entry, resolved) -> list[Path]:
    """The tokenizer's files: those saved with the adapter (the run's chat template), else the base's."""
    for folder in (entry.path, Path(resolved.path)):
        if (folder / "tokenizer_config.json").is_file():
            return [folder / n for n in TOKENIZER_FILES if (folder / n).is_file()]
    return []


def pad_token_id(files: list[Path]) -> int | None:
    """The padding token's id from tokenizer files, without loading the tokenizer (the pad
    token, else the end-of-sequence token, as models.load_tokenizer chooses)."""
    by_name = {f.name: f for f in files}
    try:
        config = json.loads(by_name["tokenizer_config.json"].read_text(encoding="utf-8"))
        vocab = json.loads(by_name["tokenizer.json"].read_text(encoding="utf-8"))
    except (KeyError, OSError, ValueError):
        return None

    def text(token):
        return token.get("content") if isinstance(token, dict) else token

    ids = {t.get("content"): t.get("id") for t in vocab.get("added_tokens") or []}
    model_vocab = (vocab.get("model") or {}).get("vocab")
    if isinstance(model_vocab, dict):
        ids = {**model_vocab, **ids}
    for key in ("pad_token", "eos_token", "unk_token"):
        token = text(config.get(key))
        if token is not None and isinstance(ids.get(token), int):
            return ids[token]
    return None


def load_adapted(entry: Entry, *, dtype=None, device=None, report: Reporter | None = None,
                 with_tokenizer: bool = True):
    """(peft model on the original base with the entry's adapter, tokenizer or None), in eval mode."""
    import transformers
    from peft import PeftModel

    transformers.utils.logging.disable_progress_bar()   # progress goes through `report`
    report = report or Reporter(None, None)
    report(f"loading the base model {entry.base_model}", 0.02)
    resolved = resolve_base(entry)
    tokenizer = load_tokenizer_for(entry, resolved) if with_tokenizer else None
    report.check()
    base = load_base_model(entry, resolved, dtype=dtype,
                           pad_token_id=tokenizer.pad_token_id if tokenizer is not None else None)
    report.check()
    report(f"loading the adapter {entry.name}", 0.1)
    check_adapter_files(entry.path, resolved.path)
    try:
        # low_cpu_mem_usage: the adapter's tensors are created empty and filled from the file
        # (no random init that the file overwrites anyway); AdaLoRA cannot be built that way.
        # Not on a bf16/fp16 base: peft then fills the adapter in the base's dtype and widens it
        # back to fp32, rounding every factor to 8 bits (a merged bf16 export was off by up to
        # 30 bf16 steps; tests/core/test_storage.py)
        import torch

        half = next(base.parameters()).dtype in (torch.bfloat16, torch.float16)
        model = PeftModel.from_pretrained(base, str(entry.path),
                                          low_cpu_mem_usage=entry.config.get("peft_type") == "LORA" and not half)
    except Exception as e:
        first = first_line(e)
        raise GalleryError(f"{entry.path}: stock PEFT could not load this adapter on {entry.base_model} "
                           f"({first[:300]})") from None
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer


# -- export ------------------------------------------------------------------------------------

def _check_out(out_dir: str | Path, gallery: Gallery | None, overwrite: bool, entry: Entry | None = None) -> Path:
    """The export target, refused when writing there could destroy something: the gallery, the
    studio's home, the adapter or its base model, or a folder that is not an earlier export."""
    from .paths import studio_home

    out = Path(out_dir).expanduser().resolve()
    root = (gallery or Gallery()).root.resolve()
    if out == root or root in out.parents:
        raise InputError(f"{out}: choose a folder outside the gallery")
    protected = [root, studio_home().resolve()]
    if entry is not None:
        protected.append(entry.path.resolve())
        if entry.meta.get("base_path"):
            protected.append(Path(entry.meta["base_path"]).resolve())
    for p in protected:
        if out == p or out in p.parents:
            raise InputError(f"{out}: holds {p}, which the export would replace; choose another folder")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out}: already exists and is not empty (choose a new folder, or overwrite)")
        if not ((out / "config.json").is_file() or (out / "adapter_config.json").is_file()):
            raise InputError(f"{out}: is not empty and is not a model or adapter folder; it is not replaced")
    return out


def export_adapter(entry: Entry, out_dir, *, overwrite: bool = False, progress=None, should_stop=None,
                   gallery: Gallery | None = None) -> Path:
    """The adapter alone, as a PEFT folder (adapter_config.json, adapter_model.safetensors, the
    tokenizer, studio.json and any variant sidecar), which stock PEFT loads on the base model."""
    report = Reporter(progress, should_stop)
    check_adapter_files(entry.path)   # never hand on a damaged file
    out = _check_out(out_dir, gallery, overwrite, entry)
    with atomic_dir(out, hint=_export_hint(out)) as tmp:
        files = [f for f in entry.path.iterdir() if f.is_file() and f.name != TELEMETRY]
        for i, f in enumerate(files):
            report.check()
            shutil.copy2(f, tmp / f.name)
            report(f"copying {f.name}", (i + 1) / len(files))
        report.check()
    report(f"exported the adapter to {out}", 1.0)
    return out


def _export_hint(out: Path) -> str:
    before = "is as it was" if out.exists() else "was not written"
    return f"{out} {before}; free some space and export again"


def merge_layers(model, report: Reporter, start: float = 0.2, end: float = 0.7):
    """peft's merge, one adapted layer at a time (progress, stop between layers), then unload:
    each layer's weight is replaced in place, so memory stays near one copy of the model."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    import torch

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for i, (name, layer) in enumerate(layers):
        report.check()
        # in place (safe_merge would clone every weight: a second copy of the model in memory);
        # the finiteness check is safe_merge's, done on the merged weight itself
        layer.merge(safe_merge=False)
        weight = getattr(layer.get_base_layer(), "weight", None)
        # a NaN or inf anywhere makes the sum non-finite: one reduction, no bool copy of W
        if weight is not None and not torch.isfinite(weight.sum(dtype=torch.float32)):
            raise GalleryError(f"merging {name.removeprefix(PEFT_PREFIX)} gave NaN or infinite weights: "
                               "the adapter is broken (nothing was written)")
        if i % 8 == 0 or i == len(layers) - 1:
            report(f"merging layer {i + 1} of {len(layers)}", start + (end - start) * (i + 1) / max(1, len(layers)))
    with warnings.catch_warnings():   # the layers are merged already; peft says so per layer
        warnings.simplefilter("ignore")
        return model.merge_and_unload()


MERGE_DTYPES = ("auto", "fp32", "bf16", "fp16")


def export_merged(entry: Entry, out_dir, *, overwrite: bool = False, progress=None, should_stop=None,
                  gallery: Gallery | None = None, durable: bool = False, dtype: str = "auto") -> Path:
    """Merge the adapter into its base model and write a standard Hugging Face folder
    (safetensors, config.json, generation_config.json, tokenizer) that stock transformers loads
    with no PEFT, in `dtype`: "auto" is the base's own dtype (its config's), else fp32, bf16 or
    fp16. The base is loaded from its original weights in that dtype, never from a 4-bit copy,
    whatever storage the run trained on (a QLoRA adapter merges into the full-precision base,
    as QLoRA does), and merged one layer at a time in place (merge_layers)."""
    if dtype not in MERGE_DTYPES:
        raise GalleryError(f"--dtype: expected one of {', '.join(MERGE_DTYPES)}, got '{dtype}'")
    report = Reporter(progress, should_stop)
    out = _check_out(out_dir, gallery, overwrite, entry)
    # the tokenizer is copied file by file, not loaded: it is exactly what the adapter used
    resolved = resolve_base(entry)
    tokenizer = tokenizer_files(entry, resolved)
    if dtype == "auto":
        torch_dtype = "auto"
    else:
        from .storage import torch_dtype as to_torch

        torch_dtype = to_torch(dtype)
    model, _ = load_adapted(entry, dtype=torch_dtype, report=report, with_tokenizer=False)
    if getattr(model.config, "pad_token_id", None) is None:   # as training set it (batches need it)
        model.config.pad_token_id = pad_token_id(tokenizer)
    merged = merge_layers(model, report)
    del model
    report.check()
    report("writing the merged model", 0.75)
    # Not fsynced (durable=False): the folder still appears whole or not at all, but an OS crash
    # within the kernel's write-back window could lose it; it is re-made from the gallery entry
    # in seconds, and forcing gigabytes to disk costs ~15% of the export (bench_export.py).
    with atomic_dir(out, durable=durable, hint=_export_hint(out)) as tmp:
        merged.save_pretrained(str(tmp))
        report.check()
        for f in tokenizer:
            shutil.copy2(f, tmp / f.name)
        report.check()
    report(f"exported the merged model to {out}", 1.0)
    return out


def save_as_entry(gallery: Gallery, name: str, meta: dict, save: Callable[[Path], Path], tokenizer,
                   report: Reporter) -> Entry:
    """A new gallery entry from a model in memory: `save(scratch)` writes the PEFT files into a
    hidden scratch folder in the gallery (and returns where they are), the tokenizer joins them,
    and add_folder copies them in atomically; the scratch folder goes whatever happens."""
    gallery.root.mkdir(parents=True, exist_ok=True)
    gallery.sweep()
    scratch = temp_path(gallery.root, name, ".new")   # hidden: never listed, swept if we are killed
    try:
        folder = save(scratch)
        tokenizer.save_pretrained(str(folder))
        report.check()
        return gallery.add_folder(folder, name, meta)
    except Exception as e:
        full = disk_full_error(e, gallery.root / name, UNCHANGED, where=scratch)
        if full is not None:
            raise full from e
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
