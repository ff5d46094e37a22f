"""DoRA (Liu et al. 2024): W' = m * V / ||V||_row with V = W0 + s·BA. The magnitude m (one per
output row, starting at ||W0||_row) and LoRA's A, B train; ||V|| is detached in the gradient as in
the paper's section 4.3. Built on peft's LoraConfig(use_dora=True)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Variant, register
from .lora import LoraOptions, lora_init_kwargs


@dataclass
class DoraOptions(LoraOptions):
    pass


class Dora(Variant):
    name = "dora"
    description = "Weight split into magnitude and direction; LoRA updates the direction, the magnitude trains."
    paper = "Liu et al. 2024, DoRA: Weight-Decomposed Low-Rank Adaptation (arXiv:2402.09353)"
    options_cls = DoraOptions
    title = "DoRA"
    saved_as = "dora"
    order = 70
    combine_refusal = "its magnitude vector cannot be combined (resize it to a LoRA first)"

    def recognizes(self, config: dict) -> bool:
        return config.get("peft_type") == "LORA" and bool(config.get("use_dora"))

    def adapter_numbers(self, opts, targets):
        """LoRA's A and B plus the magnitude, one number per output row."""
        lora, frozen, copies = super().adapter_numbers(opts, targets)
        return lora + sum(d_out for d_out, _ in targets), frozen, copies

    def build(self, model, opts, ctx):
        from peft import get_peft_model

        return get_peft_model(model, self.lora_config(opts, ctx, use_dora=True, **lora_init_kwargs(opts)))


register(Dora())
