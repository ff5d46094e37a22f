"""Combine: several LoRA adapters of one base made into a new gallery entry with peft's
`add_weighted_adapter` (linear, svd, cat, ties, dare_*, magnitude_prune); `combine_problem` says
cheaply, before anything loads, why a set cannot be combined.

Long functions take `progress(message, fraction=None)` and `should_stop()`; a stop raises
`Cancelled`, and the gallery is left as it was (export.save_as_entry writes the new entry
atomically). torch, transformers and peft are imported inside the functions: the window imports
this module.
"""

from __future__ import annotations

from pathlib import Path

from .errors import first_line
from .export import ADAPTER, Reporter, load_adapted, save_as_entry
from .gallery import Entry, Gallery, GalleryError, check_name, same_base
from .variants import REGISTRY, Variant, infer_variant

COMBINE_METHODS = ("linear", "svd", "cat", "ties", "dare_linear", "dare_ties", "magnitude_prune")
DENSITY_METHODS = ("ties", "dare_linear", "dare_ties", "magnitude_prune")
EQUAL_RANK_METHODS = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")


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

    entry = save_as_entry(gallery, name, meta, save, tokenizer, report)
    report(f"combined into {entry.name}", 1.0)
    return entry
