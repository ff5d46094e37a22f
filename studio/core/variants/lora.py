"""LoRA (Hu et al. 2021): frozen W plus a trainable low-rank update s·BA, A random, B zero,
s = alpha / r (alpha / sqrt(r) with rsLoRA). Built entirely on peft's LoraConfig."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option
from .base import CommonOptions, Variant, register


@dataclass
class LoraOptions(CommonOptions):
    use_rslora: bool = option(False, "Scale by alpha / sqrt(r) instead of alpha / r (rank-stabilised LoRA)")
    init: str = option("kaiming", "How A starts (B always starts at zero)", choices=("kaiming", "gaussian"))


def lora_init_kwargs(opts) -> dict:
    return {"use_rslora": opts.use_rslora,
            "init_lora_weights": True if opts.init == "kaiming" else "gaussian"}


class Lora(Variant):
    name = "lora"
    description = "Frozen weights plus a trainable low-rank update BA (A random, B zero), scaled by alpha/r."
    paper = "Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models (arXiv:2106.09685)"
    options_cls = LoraOptions
    title = "LoRA"
    order = 10
    combine_refusal = ""

    def recognizes(self, config: dict) -> bool:
        return config.get("peft_type") == "LORA" and not config.get("use_dora")

    def build(self, model, opts, ctx):
        from peft import get_peft_model

        return get_peft_model(model, self.lora_config(opts, ctx, **lora_init_kwargs(opts)))


register(Lora())
