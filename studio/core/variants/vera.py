"""VeRA (Kopiczko et al. 2024): one pair of frozen random matrices shared by every layer;
each layer trains only two scaling vectors, b (d_out, starts at 0) and d (r, starts at d_initial).
There is no alpha. Built on peft's VeraConfig; the projections are saved with the adapter.

The vectors learn at lr_ratio (10) times train.learning_rate, as the paper trains VeRA at about
ten times LoRA's rate (its Tables 8-9). b starts at zero and Adam moves each entry by about the
learning rate per step, so at LoRA's rate a run of a few hundred steps ends with b, and the
update, still near zero; the ratio keeps one learning rate right for LoRA and VeRA alike (a
sweep across variants, the default config)."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option
from .base import CommonOptions, Variant, register


@dataclass
class VeraOptions(CommonOptions):
    r: int = option(256, "Rank of the shared random projections (much larger than LoRA's)", min=1, max=8192)
    alpha: float = option(0.0, "Not used by VeRA (it has no alpha); kept for a common form", min=0.0)
    d_initial: float = option(0.1, "Starting value of the d vector (paper: small, <= 0.1)", min=0.0, max=10.0)
    projection_prng_key: int = option(0, "Seed of the shared random projections", min=0)
    lr_ratio: float = option(10.0, "Learning rate of the vectors as a multiple of train.learning_rate "
                                   "(the paper trains VeRA at ~10x LoRA's rate)", min=0.0, max=1000.0, legacy=1.0)


class Vera(Variant):
    name = "vera"
    description = "Frozen random A and B shared by all layers; only two scaling vectors per layer train."
    paper = "Kopiczko et al. 2024, VeRA: Vector-based Random Matrix Adaptation (arXiv:2310.11454)"
    options_cls = VeraOptions
    rank_option = None   # r is the width of the shared random projections, not a per-layer rank
    title = "VeRA"
    saved_as = "vera"
    peft_type = "VERA"
    order = 30

    def recognizes(self, config: dict) -> bool:
        return config.get("peft_type") == "VERA"

    def adapter_numbers(self, opts, targets):
        """b (d_out) and d (r) per layer train; the shared A and B are sized for the widest layer."""
        r = int(opts.r)
        d_in = max((i for _, i in targets), default=0)
        d_out = max((o for o, _ in targets), default=0)
        return sum(o + r for o, _ in targets), r * (d_in + d_out), 0

    def build(self, model, opts, ctx):
        from peft import VeraConfig, get_peft_model

        config = VeraConfig(r=opts.r, target_modules=self.target_modules(opts), d_initial=opts.d_initial,
                            projection_prng_key=opts.projection_prng_key, save_projection=True,
                            vera_dropout=opts.dropout, task_type=self.task_type(ctx))
        return get_peft_model(model, config)

    def make_optimizer(self, model, opts, ctx):
        return self.adamw_with_ratios(model, ctx, {"vera_lambda_": opts.lr_ratio})


register(Vera())
