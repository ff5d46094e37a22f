"""Resize: an adapter's update truncated to a lower rank by SVD, as a new gallery entry, and the
energy curve (the share of ‖ΔW‖² each rank keeps) a person picks the rank on.

Written by hand, because no library does it: the truncation works on the low-rank factors of
every variant (telemetry/updates.py), never on a dense ΔW; peft's svd combination is dense and
takes LoRA only.

Long functions take `progress(message, fraction=None)` and `should_stop()`; a stop raises
`Cancelled`, and the gallery is left as it was (export.save_as_entry writes the new entry
atomically). torch, transformers and peft are imported inside the functions: the window imports
this module.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .export import ADAPTER, Reporter, load_adapted, save_as_entry
from .gallery import Entry, Gallery, GalleryError, check_name
from .variants import infer_variant


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

    result = save_as_entry(gallery, name, meta, save, tokenizer, report)
    report(f"resized {entry.name} to rank {k} ({kept:.2%} of ‖ΔW‖² kept) as {result.name}", 1.0)
    return result
