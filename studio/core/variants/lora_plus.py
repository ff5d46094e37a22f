"""LoRA+ (Hayou et al. 2024): LoRA with a learning rate for B that is lr_ratio times A's.

peft's `create_loraplus_optimizer` builds the parameter groups (A -> lr; B and every trainable
1-D parameter -> lr * ratio; LoRA on embeddings -> lr_embedding). Weight decay must go through
`loraplus_weight_decay`: a plain `weight_decay` is overwritten in every group.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option
from .base import Variant, register
from .lora import LoraOptions, lora_init_kwargs


@dataclass
class LoraPlusOptions(LoraOptions):
    lr_ratio: float = option(16.0, "Learning rate of B divided by that of A (the paper suggests 2^4)",
                             min=1.0, max=1024.0)
    lr_embedding: float = option(1e-6, "Learning rate for LoRA on embedding layers", min=0.0, max=1.0)


class LoraPlus(Variant):
    name = "lora-plus"
    description = "LoRA with a much higher learning rate for B than for A (ratio ~16)."
    paper = "Hayou et al. 2024, LoRA+: Efficient Low Rank Adaptation of Large Models (arXiv:2402.12354)"
    options_cls = LoraPlusOptions
    title = "LoRA+"
    order = 20

    def build(self, model, opts, ctx):
        from peft import get_peft_model

        return get_peft_model(model, self.lora_config(opts, ctx, **lora_init_kwargs(opts)))

    def make_optimizer(self, model, opts, ctx):
        import torch
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(
            model=model, optimizer_cls=torch.optim.AdamW, lr=ctx.learning_rate,
            loraplus_lr_ratio=opts.lr_ratio, loraplus_weight_decay=ctx.weight_decay,
            loraplus_lr_embedding=opts.lr_embedding)


register(LoraPlus())
