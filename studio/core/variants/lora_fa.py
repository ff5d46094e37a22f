"""LoRA-FA (Zhang et al. 2023): A random and frozen after init, only B trains.

peft's `create_lorafa_optimizer` freezes every lora_A and returns an AdamW that projects B's
gradient onto the best full-fine-tuning approximation, g_B (1/s^2) (A A^T)^-1, before its moments.
It pairs lora_A/lora_B parameters by order, so it does not combine with DoRA.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Variant, register
from .lora import LoraOptions, lora_init_kwargs


@dataclass
class LoraFAOptions(LoraOptions):
    pass


class LoraFA(Variant):
    name = "lora-fa"
    description = "LoRA with A frozen after its random init; only B trains (less activation memory)."
    paper = "Zhang et al. 2023, LoRA-FA: Memory-efficient Low-rank Adaptation (arXiv:2308.03303)"
    options_cls = LoraFAOptions
    title = "LoRA-FA"
    order = 40
    needs_whole_weights = "projects B's gradient through the whole frozen A in its optimizer"

    def adapter_numbers(self, opts, targets):
        """B trains; A is frozen."""
        r = int(opts.r)
        return sum(r * d_out for d_out, _ in targets), sum(r * d_in for _, d_in in targets), 0

    def build(self, model, opts, ctx):
        from peft import get_peft_model

        peft_model = get_peft_model(model, self.lora_config(opts, ctx, **lora_init_kwargs(opts)))
        freeze_lora_a(peft_model)
        return peft_model

    def make_optimizer(self, model, opts, ctx):
        from peft.optimizers import create_lorafa_optimizer

        return create_lorafa_optimizer(model=model, r=opts.r, lora_alpha=opts.alpha, lr=ctx.learning_rate,
                                       weight_decay=ctx.weight_decay)  # rsLoRA is read from the LoraConfig


def freeze_lora_a(model) -> None:
    # Frozen at build time too, so the trainable count a person sees before training is right.
    for name, param in model.named_parameters():
        if "lora_A" in name:
            param.requires_grad_(False)


register(LoraFA())
