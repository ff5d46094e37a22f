"""AdaLoRA (Zhang et al. 2023): SVD-shaped adapters ΔW = P diag(λ) Q whose ranks are moved
between layers during training by an importance score; orthogonality of P and Q is encouraged
by a regulariser added to the loss.

peft does the maths (AdaLoraConfig, RankAllocator). Two things it leaves to the training loop,
and which this module supplies: `update_and_allocate(step)` after every optimizer step and before
gradients are zeroed (transformers' Trainer never calls it), and a task_type so that
AdaLoraModel.forward adds the orthogonality term to the loss.

Defaults, and why they differ from peft's (issue 17: with peft's, a run of a few hundred steps
learned nothing):
  lambda_lr_ratio 30   λ starts at 0 and Adam moves a scalar by about the learning rate per step,
                       while a LoRA layer's update grows ~sqrt(d_out) times faster at the same
                       rate (each of B's d_out entries moves by it); at LoRA's rate λ, and so ΔW,
                       stays near zero for the first thousand steps. λ learns at 30x the rate
                       (measured: 0/36 -> 26/36 held-out facts on SmolLM2, README), P and Q at 1x.
  tinit 0.1, tfinal 0.5  the paper's schedule, as fractions of the run (its GLUE scripts warm up
                       for about a tenth of the run and hold the final budget for about half);
                       peft's 0 and 0 prune from the first step on scores that are still noise.
  orth_reg_weight 0.1  the paper's coefficient (its code, mean over matrices, as peft computes
                       it); peft's 0.5 added +1.2 to the first loss of SmolLM2.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..names import PEFT_PREFIX
from ..options import check_run_fraction, option, steps_of_run
from .base import CommonOptions, Variant, register


@dataclass
class AdaLoraOptions(CommonOptions):
    r: int = option(12, "Not used: AdaLoRA starts every layer at init_r", min=1, max=4096)
    alpha: float = option(32.0, "Scale of the update: ΔW is multiplied by alpha / init_r", min=0.0)
    init_r: int = option(12, "Rank every layer starts with", min=1, max=4096)
    target_r: int = option(8, "Average rank per layer at the end (the final budget)", min=1, max=4096)
    tinit: float = option(0.1, "Warm-up before ranks are pruned: a fraction of the run's optimizer steps "
                               "(below 1), or a number of steps", min=0.0, run_fraction=True)
    tfinal: float = option(0.5, "Steps at the end with the final budget fixed: a fraction of the run's "
                                "optimizer steps (below 1), or a number of steps", min=0.0, run_fraction=True)
    deltaT: int = option(1, "Reallocate ranks every deltaT optimizer steps", min=1)
    beta1: float = option(0.85, "EMA factor for the sensitivity", min=0.0, max=1.0)
    beta2: float = option(0.85, "EMA factor for the uncertainty", min=0.0, max=1.0)
    orth_reg_weight: float = option(0.1, "Weight of the orthogonality regulariser in the loss (the paper's 0.1)",
                                    min=0.0)
    lambda_lr_ratio: float = option(30.0, "Learning rate of the singular values λ as a multiple of "
                                          "train.learning_rate (P and Q learn at 1x)", min=0.0, max=1000.0,
                                    legacy=1.0)

    def check(self) -> None:
        super().check()
        if self.target_r > self.init_r:
            raise ValueError(f"target_r: expected at most init_r ({self.init_r}), got {self.target_r}")
        for name in ("tinit", "tfinal"):
            check_run_fraction(name, getattr(self, name))
        if self.tinit < 1 and self.tfinal < 1 and self.tinit + self.tfinal >= 1:
            raise ValueError(f"tfinal: tinit + tfinal must leave part of the run for pruning, got "
                             f"{self.tinit:g} + {self.tfinal:g} of the run")


class AdaLora(Variant):
    name = "adalora"
    description = "SVD-shaped adapters whose ranks are reallocated between layers during training by importance."
    paper = "Zhang et al. 2023, AdaLoRA: Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning (arXiv:2303.10512)"
    options_cls = AdaLoraOptions
    title = "AdaLoRA"
    saved_as = "adalora"
    peft_type = "ADALORA"
    order = 60
    needs_whole_weights = "reallocates ranks from every weight and gradient between steps"

    def recognizes(self, config: dict) -> bool:
        return config.get("peft_type") == "ADALORA"

    def adapter_numbers(self, opts, targets):
        """P (r x d_in), Q (d_out x r) and λ (r) per layer, at the starting rank init_r."""
        r = int(opts.init_r)
        return sum(r * (d_in + d_out) + r for d_out, d_in in targets), 0, 0

    def rank_overrides(self, rank: int) -> list[str]:
        """The preset's rank is the final average budget; layers start half as high again."""
        return [f"variant.init_r={rank + rank // 2}", f"variant.target_r={rank}"]
    rank_option = "init_r"

    def build(self, model, opts, ctx):
        from peft import AdaLoraConfig, get_peft_model

        from ..errors import ConfigError

        tinit, tfinal = steps_of_run(opts.tinit, ctx.total_steps), steps_of_run(opts.tfinal, ctx.total_steps)
        if ctx.total_steps <= tinit + tfinal:
            raise ConfigError(
                f"variant.tinit + variant.tfinal ({tinit} + {tfinal} steps) must be less than the run's "
                f"{ctx.total_steps} optimizer steps")
        config = AdaLoraConfig(init_r=opts.init_r, target_r=opts.target_r, tinit=tinit, tfinal=tfinal,
                               deltaT=opts.deltaT, beta1=opts.beta1, beta2=opts.beta2,
                               orth_reg_weight=opts.orth_reg_weight, total_step=ctx.total_steps,
                               lora_alpha=opts.alpha, lora_dropout=opts.dropout,
                               target_modules=self.target_modules(opts), task_type=self.task_type(ctx))
        if opts.target_r == opts.init_r:
            ctx.emit({"type": "progress", "message": f"AdaLoRA: target_r equals init_r, so every layer keeps "
                                                     f"rank {opts.init_r} (nothing is pruned)"})
        else:
            ctx.emit({"type": "progress", "message": (
                f"AdaLoRA schedule: every layer keeps rank {opts.init_r} for the first {tinit} steps, ranks "
                f"are pruned to an average of {opts.target_r} by step {ctx.total_steps - tfinal}, and that "
                f"budget is held for the last {tfinal} of {ctx.total_steps} steps")})
        peft_model = get_peft_model(model, config)
        # peft 0.21 upcasts a half base's adapter to fp32 by putting `param.to(fp32)` back into
        # each ParameterDict, which makes a new Parameter that requires grad: AdaLoRA's ranknum
        # (the r in s/(r + 1e-5)) then trains with the rest and drifts off its value (6 became
        # 6.012 in 5 steps on a bf16 base). It is a constant: freeze it again.
        for name, param in peft_model.named_parameters():
            if ".ranknum." in name:
                param.requires_grad_(False)
        return peft_model

    def make_optimizer(self, model, opts, ctx):
        return self.adamw_with_ratios(model, ctx, {"lora_E": opts.lambda_lr_ratio})

    def callbacks(self, model, opts, ctx):
        # target_r == init_r prunes nothing, and peft's allocator cannot mask a budget of zero
        # ranks (kthvalue with k = 0): only the importance scores are kept up to date then
        return [make_allocation_callback(prune=opts.target_r < opts.init_r)]

    def scale_loss_terms(self, model, opts, factor: int) -> None:
        # AdaLoraModel.forward reads the weight from its config at every step
        for config in getattr(model, "peft_config", {}).values():
            config.orth_reg_weight = opts.orth_reg_weight / factor

    def telemetry_events(self, model, opts) -> list[dict]:
        inner = getattr(model, "module", model)
        ranks = live_ranks(inner)
        events = [{"type": "ranks", "layers": ranks, "budget": sum(ranks.values()),
                   "target_budget": opts.target_r * len(ranks)}]
        scores = sensitivity(inner)
        if scores:
            events.append({"type": "importance", "method": SENSITIVITY, "layers": scores})
        return events

    # Resume. The adapter a checkpoint holds is pruned to the rank pattern (peft resizes it on
    # save), while training keeps full init_r tensors and masks them; and the rank allocator's
    # running sensitivity averages live only in memory. So a checkpoint also keeps the full
    # tensors, the allocator state and the rank pattern, and a resume restores exactly those.

    def checkpoint_state(self, model, opts) -> dict:
        import torch

        inner = getattr(model, "module", model)
        out = {f"param::{k}": v for k, v in inner.state_dict().items() if ".lora_" in k}
        allocator = inner.base_model.rankallocator
        for kind in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            for name, value in getattr(allocator, kind).items():
                out[f"{kind}::{name}"] = value
        pattern = inner.peft_config["default"].rank_pattern or {}
        for name, mask in pattern.items():
            out[f"rank_pattern::{name}"] = torch.tensor([bool(m) for m in mask], dtype=torch.uint8)
        return out

    def load_checkpoint_weights(self, model, opts, checkpoint) -> None:
        pass  # the pruned adapter file is not loadable into the full tensors: restore_state does it

    def restore_state(self, model, opts, tensors, ctx) -> None:
        inner = getattr(model, "module", model)
        params = {k.split("::", 1)[1]: v for k, v in tensors.items() if k.startswith("param::")}
        if params:
            missing = set(params) - set(inner.state_dict())
            if missing:
                raise ValueError(f"AdaLoRA checkpoint does not match the model ({sorted(missing)[0]} ...)")
            inner.load_state_dict(params, strict=False)
        allocator = inner.base_model.rankallocator
        for kind in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            setattr(allocator, kind, {k.split("::", 1)[1]: v for k, v in tensors.items()
                                      if k.startswith(f"{kind}::")})
        pattern = {k.split("::", 1)[1]: [bool(x) for x in v.tolist()] for k, v in tensors.items()
                   if k.startswith("rank_pattern::")}
        inner.peft_config["default"].rank_pattern = pattern or None


def make_allocation_callback(prune: bool = True):
    from transformers import TrainerCallback

    class RankAllocationCallback(TrainerCallback):
        """Calls AdaLoRA's update_and_allocate after each optimizer step (grads still present);
        without pruning, only the allocator's importance scores (the sensitivity chart)."""

        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            # model may arrive wrapped (DDP / accelerate); the PEFT model is what has base_model
            peft_model = getattr(model, "module", model)
            if prune:
                peft_model.base_model.update_and_allocate(state.global_step)
            else:
                peft_model.base_model.rankallocator.update_ipt(peft_model.base_model.model)

    return RankAllocationCallback()


SENSITIVITY = "adalora sensitivity (Σ triplet scores)"


def _layer_name(key: str, part: str) -> str:
    return key.split(f".{part}")[0].removeprefix(PEFT_PREFIX)


def live_ranks(model) -> dict[str, int]:
    """The rank of every AdaLoRA layer now: from the rank pattern once ranks have been allocated,
    init_r (the size of λ) before that."""
    from peft.tuners.adalora import AdaLoraLayer

    pattern = current_ranks(model)
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, AdaLoraLayer) and "default" in module.lora_E:
            name = name.removeprefix(PEFT_PREFIX)
            out[name] = pattern.get(name, int(module.lora_E["default"].numel()))
    return out


def sensitivity(model) -> dict[str, float]:
    """Each layer's importance as AdaLoRA scores it: per triplet i, the smoothed sensitivity ×
    uncertainty of λ_i plus the means over P's column i and Q's row i (peft's
    RankAllocator.mask_to_budget, which keeps the same numbers private), summed over the layer's
    triplets. Empty before the first update and after the final-budget phase resets the scores."""
    allocator = model.base_model.rankallocator
    ipt, unc = allocator.exp_avg_ipt, allocator.exp_avg_unc
    per_layer: dict[str, object] = {}
    for key in ipt:
        if key not in unc:
            continue
        score = ipt[key] * unc[key]
        if ".lora_E" in key:
            part = score.flatten()
            name = _layer_name(key, "lora_E")
        elif ".lora_A" in key:
            part = score.mean(dim=1).flatten()
            name = _layer_name(key, "lora_A")
        elif ".lora_B" in key:
            part = score.mean(dim=0).flatten()
            name = _layer_name(key, "lora_B")
        else:
            continue
        per_layer[name] = part if name not in per_layer else per_layer[name] + part
    return {name: float(v.sum()) for name, v in per_layer.items()}


def current_ranks(model) -> dict[str, int]:
    """Live ranks per adapted module, read from peft's rank_pattern (a nonzero count of λ is
    wrong between mask steps: the optimizer revives zeroed entries)."""
    config = model.peft_config["default"]
    pattern = config.rank_pattern or {}
    out = {}
    for key, mask in pattern.items():
        # keys are "<module>.lora_E" after save_pretrained and "<module>.lora_E.<adapter>" while training
        module = key.split(".lora_E")[0].removeprefix(PEFT_PREFIX)
        out[module] = int(sum(bool(m) for m in mask))
    return out


register(AdaLora())
