"""Starting points by model size: storage, rank, batch, length, learning rate and checkpointing
(`lora-studio train CONFIG --preset 7-8b`, and the window's Preset menu).

A preset is a set of config overrides applied on top of a config; --set values given with it
win. The rank goes to the variant's own rank option (r for the LoRA family, init_r/target_r for
AdaLoRA); VeRA keeps its own (much larger) shared rank. The numbers follow the QLoRA paper and
the defaults of LLaMA-Factory and Unsloth for each size, checked with the memory plan (plan.py)
against a 24 GB GPU: the effective batch (batch_size x grad_accum) stays 16 where memory allows.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import RunConfig
from .errors import ConfigError
from .variants import get_variant


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    max_params: float          # billions of parameters this preset is meant for (upper end)
    settings: dict             # dotted key -> value (train, data, model sections)
    rank: int

    def overrides(self, variant: str) -> list[str]:
        """The preset as config overrides; the rank as `variant`'s own rank options."""
        return [f"{k}={_toml(v)}" for k, v in self.settings.items()] + get_variant(variant).rank_overrides(self.rank)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


PRESETS = {p.name: p for p in (
    Preset("small", "≤0.5B: the base as it comes (bf16 where the hardware has it), batch 4 × 1024", 0.6,
           {"model.dtype": "auto", "model.quantize": "none", "train.batch_size": 4, "train.grad_accum": 4,
            "data.max_seq_len": 1024, "train.learning_rate": 2e-4, "train.gradient_checkpointing": False}, 16),
    Preset("1-3b", "1–3B: bf16 base, checkpointing, batch 4 × 1024", 3.5,
           {"model.dtype": "auto", "model.quantize": "none", "train.batch_size": 4, "train.grad_accum": 4,
            "data.max_seq_len": 1024, "train.learning_rate": 2e-4, "train.gradient_checkpointing": True}, 16),
    Preset("7-8b", "7–8B: 4-bit base (QLoRA), checkpointing, batch 2 × 1024", 9.0,
           {"model.dtype": "auto", "model.quantize": "4bit", "train.batch_size": 2, "train.grad_accum": 8,
            "data.max_seq_len": 1024, "train.learning_rate": 2e-4, "train.gradient_checkpointing": True}, 16),
    Preset("13b+", "13B and up: 4-bit base, checkpointing, batch 1 × 512", float("inf"),
           {"model.dtype": "auto", "model.quantize": "4bit", "train.batch_size": 1, "train.grad_accum": 16,
            "data.max_seq_len": 512, "train.learning_rate": 1e-4, "train.gradient_checkpointing": True}, 8),
)}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"--preset: unknown preset '{name}' (expected one of {', '.join(PRESETS)})") from None


def apply_preset(cfg: RunConfig, name: str) -> RunConfig:
    return cfg.with_overrides(get_preset(name).overrides(cfg.variant_name))


def suggest(parameters: int | None) -> str | None:
    """The preset for a model of this many parameters (None when unknown)."""
    if not parameters:
        return None
    billions = parameters / 1e9
    return next(p.name for p in PRESETS.values() if billions <= p.max_params)
