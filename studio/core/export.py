"""What the gallery does with an adapter: merge it into its base and write a Hugging Face model
folder, export the PEFT folder alone, combine several, truncate one to a lower rank, and run it
next to its base in the playground (playground.py).

Every adapter in the gallery is a stock PEFT adapter for its ORIGINAL base model (Delta-LoRA
exports its moved weights as a rank-2r LoRA, LoRA-drop gives each tied module its own copy), so
loading is always `PeftModel.from_pretrained(base, folder)`, and merging is peft's per-layer
`merge()` followed by `merge_and_unload()`; combining is peft's `add_weighted_adapter`.
Written by hand here, because no library does it: the rank truncation (`resize`), which works on
the low-rank factors of every variant (telemetry/updates.py) instead of a dense ΔW.

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
from .gallery import (ADAPTER_FILES, META, TELEMETRY, UNCHANGED, Entry, Gallery, GalleryError, check_adapter_files,
                      check_name, same_base)
from .paths import atomic_dir, disk_full_error, temp_path
from .variants import REGISTRY, Variant, infer_variant

COMBINE_METHODS = ("linear", "svd", "cat", "ties", "dare_linear", "dare_ties", "magnitude_prune")
DENSITY_METHODS = ("ties", "dare_linear", "dare_ties", "magnitude_prune")
EQUAL_RANK_METHODS = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
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
            raise GalleryError(f"merging {name.removeprefix('base_model.model.')} gave NaN or infinite weights: "
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


# -- combine -----------------------------------------------------------------------------------

def combine_problem(entries: list[Entry], method: str) -> str | None:
    """Why this set cannot be combined with `method` (one line), or None if it can. Cheap."""
    if method not in COMBINE_METHODS:
        return f"method {method!r}: expected one of {', '.join(COMBINE_METHODS)}"
    if len(entries) < 2:
        return "choose at least two adapters to combine"
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        return "an adapter is chosen twice"
    first = entries[0]
    for e in entries[1:]:
        if not same_base(e, first):
            return (f"{e.name} was trained on {e.base_model or '?'} ({e.task}), {first.name} on "
                    f"{first.base_model or '?'} ({first.task}): adapters combine only on the same base model")
    for e in entries:
        saved = REGISTRY.get(infer_variant(e.config) or "")   # what the file is, whoever trained it
        if saved is None or saved.combine_refusal:
            kind = saved.display_name if saved else str(e.config.get("peft_type") or "unknown").lower()
            refusal = saved.combine_refusal if saved else Variant.combine_refusal
            return f"{e.name} is {'an' if kind[0].lower() in 'aeiou' else 'a'} {kind} adapter: {refusal}"
        if e.task == "sequence-classification" or e.config.get("modules_to_save"):
            return (f"{e.name} trains its own {'classifier head' if e.task != 'causal-lm' else 'extra modules'} "
                    "(modules_to_save), which peft cannot combine")
    if method in EQUAL_RANK_METHODS:
        ranks = {e.name: e.rank for e in entries}
        if any(e.config.get("rank_pattern") for e in entries):
            return f"{method} needs one rank everywhere, and an adapter has per-layer ranks; use cat or svd"
        if len(set(ranks.values())) > 1:
            listed = ", ".join(f"{n}: {r}" for n, r in ranks.items())
            return f"{method} needs adapters of equal rank ({listed}); use cat or svd"
    kinds = {type(e.config.get("target_modules")).__name__ for e in entries}
    if len(kinds) > 1:
        return "the adapters name their target modules in different ways (a pattern and a list); use resize first"
    return None


def combine(entries: list[Entry], weights: list[float], *, method: str = "linear", name: str | None = None,
            density: float = 0.5, gallery: Gallery | None = None, progress=None, should_stop=None) -> Entry:
    """peft's add_weighted_adapter over several gallery adapters of one base: a new entry."""
    gallery = gallery or Gallery()
    report = Reporter(progress, should_stop)
    problem = combine_problem(entries, method)
    if problem:
        raise GalleryError(f"combine: {problem}")
    weights = [float(w) for w in weights]
    if len(weights) != len(entries):
        raise GalleryError(f"combine: expected {len(entries)} weights (one per adapter), got {len(weights)}")
    if method in DENSITY_METHODS and not 0 < density <= 1:
        raise GalleryError(f"combine: density expected in (0, 1], got {density}")
    name = check_name(name) if name else gallery.unique_name(f"{entries[0].name}+{len(entries) - 1}-{method}")
    if (gallery.root / name).exists():
        raise GalleryError(f"gallery: an adapter named {name!r} already exists")

    model, tokenizer = load_adapted(entries[0], report=report)
    names = [ADAPTER]
    kwargs = {"density": density} if method in DENSITY_METHODS else {}
    try:
        for i, e in enumerate(entries[1:], start=1):
            report.check()
            report(f"loading {e.name}", 0.1 + 0.3 * i / len(entries))
            model.load_adapter(str(e.path), adapter_name=f"a{i}")
            names.append(f"a{i}")
        report.check()
        report(f"combining ({method})", 0.5)
        model.add_weighted_adapter(names, weights, "combined", combination_type=method, **kwargs)
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        first = first_line(e)
        raise GalleryError(f"combine: peft could not combine these adapters ({first[:300]})") from None
    report.check()
    first = entries[0]
    meta = {"base_model": first.base_model, "base_path": first.meta.get("base_path"),
            "base_fingerprint": first.base_fingerprint, "task": first.task, "variant": "lora",
            "labels": first.labels, "metrics": {},
            "options": {"r": int(model.peft_config["combined"].r), "method": method, "weights": weights,
                        **({"density": density} if kwargs else {})},
            "derived_from": {"combine": [e.name for e in entries], "method": method, "weights": weights}}
    def save(scratch: Path) -> Path:
        model.save_pretrained(str(scratch), selected_adapters=["combined"])
        return scratch / "combined"     # peft writes a non-default adapter into its own subfolder

    entry = _save_as_entry(gallery, name, meta, save, tokenizer, report)
    report(f"combined into {entry.name}", 1.0)
    return entry


def _save_as_entry(gallery: Gallery, name: str, meta: dict, save: Callable[[Path], Path], tokenizer,
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


# -- resize (truncated SVD of ΔW) ----------------------------------------------------------------

def _layer_svds(model) -> list[tuple]:
    """(update, Us, S, Vs) per adapted layer with U·K·Vᵀ = Us·diag(S)·Vsᵀ, S descending, in
    float64. Hand-written: a QR of each factor and the SVD of the small core (p×q), never the
    dense d_out×d_in ΔW; peft's svd combination is dense and works on LoRA only."""
    import torch

    from .telemetry.updates import f64, peft_updates

    out = []
    for u in peft_updates(model):
        U, V, K = f64(u.U).cpu(), f64(u.V).cpu(), f64(u.K).cpu()
        if U.shape[1] == 0 or V.shape[1] == 0:
            out.append((u, U[:, :0], torch.zeros(0, dtype=torch.float64), V[:, :0]))
            continue
        qu, ru = torch.linalg.qr(U)
        qv, rv = torch.linalg.qr(V)
        core = (ru * K) @ rv.T if K.dim() == 1 else ru @ K @ rv.T
        uc, s, vch = torch.linalg.svd(core, full_matrices=False)
        out.append((u, qu @ uc, s, qv @ vch.T))
    return out


def _curve(svds) -> dict:
    import torch

    max_rank = max((int(s.numel()) for _, _, s, _ in svds), default=0)
    total = float(sum(float((s ** 2).sum()) for _, _, s, _ in svds))
    kept = torch.zeros(max_rank, dtype=torch.float64)
    for _, _, s, _ in svds:
        if s.numel():
            e = torch.cumsum(s ** 2, 0)
            padded = torch.cat([e, e[-1:].expand(max_rank - e.numel())]) if e.numel() < max_rank else e
            kept += padded
    shares = [float(k / total) if total > 0 else 1.0 for k in kept]
    if shares:
        shares[-1] = 1.0
    return {"ranks": list(range(1, max_rank + 1)), "kept": shares, "max_rank": max_rank, "total_energy": total}


def energy_curve(entry: Entry, *, progress=None, should_stop=None) -> dict:
    """The share of ‖ΔW‖²_F (summed over layers) a uniform rank k keeps, for k = 1..max_rank.
    For DoRA, ΔW is the low-rank update of the direction (the magnitude is kept as it is)."""
    report = Reporter(progress, should_stop)
    model, _ = load_adapted(entry, report=report)
    report.check()
    report("computing the spectrum of every update", 0.6)
    curve = _curve(_layer_svds(model))
    curve["current_rank"] = entry.rank or curve["max_rank"]
    report("done", 1.0)
    return curve


def rank_for_energy(curve: dict, energy: float) -> int:
    for rank, kept in zip(curve["ranks"], curve["kept"]):
        if kept >= energy - 1e-12:
            return rank
    return curve["max_rank"]


def resize(entry: Entry, *, rank: int | None = None, energy: float | None = None, name: str | None = None,
           gallery: Gallery | None = None, progress=None, should_stop=None) -> Entry:
    """A new entry: every layer's ΔW truncated to `rank` by SVD (or to the smallest uniform rank
    that keeps `energy` of ‖ΔW‖²_F), written as a standard PEFT LoRA adapter (B = Us·√S,
    A = √S·Vsᵀ, scaling 1). DoRA stays DoRA (its magnitude is kept); a classifier head is kept."""
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.utils.other import ModulesToSaveWrapper

    gallery = gallery or Gallery()
    report = Reporter(progress, should_stop)
    if (rank is None) == (energy is None):
        raise InputError("resize: give either a rank or an energy share to keep")
    if energy is not None and not 0 < float(energy) <= 1:
        raise InputError(f"resize: energy expected in (0, 1], got {energy}")
    if rank is not None and (int(rank) != rank or int(rank) < 1):
        raise InputError(f"resize: rank expected a whole number of at least 1, got {rank}")
    if name:
        check_name(name)
        if (gallery.root / name).exists():
            raise GalleryError(f"gallery: an adapter named {name!r} already exists")

    model, tokenizer = load_adapted(entry, report=report)
    report.check()
    report("computing the spectrum of every update", 0.3)
    svds = _layer_svds(model)
    curve = _curve(svds)
    if curve["max_rank"] == 0:
        raise GalleryError(f"{entry.name}: the adapter's update is empty (nothing to resize)")
    if rank is not None and int(rank) > curve["max_rank"]:
        raise InputError(f"resize: rank {rank} is above this adapter's largest update rank ({curve['max_rank']})")
    k = int(rank) if rank is not None else rank_for_energy(curve, float(energy))
    kept = curve["kept"][k - 1]
    report(f"rank {k} keeps {kept:.2%} of ‖ΔW‖²", 0.5)

    heads = {n: {key: v.detach().clone() for key, v in m.modules_to_save[ADAPTER].state_dict().items()}
             for n, m in model.base_model.model.named_modules() if isinstance(m, ModulesToSaveWrapper)}
    is_dora = any(u.is_dora for u, *_ in svds)
    source_cfg = model.peft_config[ADAPTER]
    layers = {}
    for u, us, s, vs in svds:
        root = torch.sqrt(s[:k])
        b = torch.zeros(us.shape[0], k, dtype=torch.float64)
        a = torch.zeros(k, vs.shape[0], dtype=torch.float64)
        n = root.numel()
        b[:, :n] = us[:, :n] * root
        a[:n, :] = (vs[:, :n] * root).T
        layers[u.name] = (a, b, None if u.magnitude is None else u.magnitude.detach().clone())
    report.check()
    base = model.unload()
    del model
    dtype = next(base.parameters()).dtype
    config = LoraConfig(r=k, lora_alpha=k, target_modules=sorted(layers), lora_dropout=0.0, use_dora=is_dora,
                        task_type=getattr(source_cfg, "task_type", None),
                        modules_to_save=sorted({n.rsplit(".", 1)[-1] for n in heads}) or None)
    new = get_peft_model(base, config)
    with torch.no_grad():
        for layer_name, (a, b, magnitude) in layers.items():
            layer = new.base_model.model.get_submodule(layer_name)
            layer.lora_A[ADAPTER].weight.copy_(a.to(dtype))
            layer.lora_B[ADAPTER].weight.copy_(b.to(dtype))
            if magnitude is not None:
                layer.lora_magnitude_vector[ADAPTER].weight.copy_(magnitude.to(dtype))
        for head_name, state in heads.items():
            wrapper = new.base_model.model.get_submodule(head_name)
            wrapper.modules_to_save[ADAPTER].load_state_dict(state)
    new.peft_config[ADAPTER].base_model_name_or_path = source_cfg.base_model_name_or_path
    report.check()
    name = name or gallery.unique_name(f"{entry.name[:70]}-r{k}")
    meta = {key: entry.meta[key] for key in ("base_model", "base_path", "base_fingerprint", "task", "labels")
            if key in entry.meta}
    meta.update({"variant": infer_variant(new.peft_config[ADAPTER].to_dict()), "metrics": {},
                 "options": {"r": k, "alpha": float(k), "energy_kept": kept},
                 "derived_from": {"resize": entry.name, "rank": k, "energy_kept": kept,
                                  "from_variant": entry.variant}})
    def save(scratch: Path) -> Path:
        new.save_pretrained(str(scratch))
        return scratch

    result = _save_as_entry(gallery, name, meta, save, tokenizer, report)
    report(f"resized {entry.name} to rank {k} ({kept:.2%} of ‖ΔW‖² kept) as {result.name}", 1.0)
    return result
