"""Delta-LoRA on a tiny random Llama, trained through a real transformers Trainer.

Acceptance (from the paper's update rule): W unchanged for t <= K; W_T - W_0 == λs(B_TA_T - B_{K+1}A_{K+1});
dropout != 0 rejected; the rank-2r export reloads in stock PEFT with the trained model's logits;
checkpoint_state / restore_state (and a real Trainer resume) reproduce W.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from studio.core.variants import BuildContext, get_variant
from studio.core.variants.delta_lora import DeltaLoraOptions, effective_start_step, lora_layers
from tiny_models import pad_collator, random_token_dataset, tiny_llama_config

K = 3
STEPS = 10
LAMBDA = 2.0


@pytest.fixture(scope="module")
def base_state():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).state_dict()


def fresh_base(base_state):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_llama_config())
    model.load_state_dict(base_state)
    return model


def make_ctx(total_steps=STEPS, **kw):
    kw.setdefault("task", "causal-lm")
    return BuildContext(total_steps=total_steps, learning_rate=1e-2, seed=0,
                        device=torch.device("cpu"), train_dataset=random_token_dataset(), collator=pad_collator,
                        batch_size=4, **kw)


def make_trainer(model, ctx, callbacks, out_dir, max_steps=STEPS, save_steps=None):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(out_dir), max_steps=max_steps, per_device_train_batch_size=ctx.batch_size,
        learning_rate=ctx.learning_rate, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        report_to=[], logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=0, data_seed=0,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500,
        remove_unused_columns=False, dataloader_num_workers=0)
    return Trainer(model=model, args=args, train_dataset=ctx.train_dataset, data_collator=pad_collator,
                   callbacks=callbacks)


def base_weights(model):
    return {name: layer.get_base_layer().weight.detach().clone() for name, layer in lora_layers(model).items()}


def adapter_pairs(model):
    return {name: (layer.lora_A["default"].weight.detach().clone(), layer.lora_B["default"].weight.detach().clone())
            for name, layer in lora_layers(model).items()}


def telescoped(model, anchor):
    out = {}
    for name, layer in lora_layers(model).items():
        a_t, b_t = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
        a_a, b_a = anchor[name]
        out[name] = LAMBDA * layer.scaling["default"] * (b_t @ a_t - b_a @ a_a)
    return out


def logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def trained(base_state, tmp_path_factory):
    """One 10-step run with K = 3; W and (A, B) recorded after every step."""
    from transformers import TrainerCallback

    variant = get_variant("delta-lora")
    opts = DeltaLoraOptions(r=4, alpha=8.0, update_ratio=LAMBDA, start_step=K)
    ctx = make_ctx()
    model = variant.build(fresh_base(base_state), opts, ctx)
    w0 = base_weights(model)
    history = {}

    class Recorder(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            history[state.global_step] = (base_weights(model), adapter_pairs(model))

    trainer = make_trainer(model, ctx, variant.callbacks(model, opts, ctx) + [Recorder()],
                           tmp_path_factory.mktemp("run"))
    assert variant.make_optimizer(model, opts, ctx) is None
    trainer.train()
    return variant, opts, ctx, model, w0, history


def test_dropout_rejected():
    with pytest.raises(ValueError, match=r"dropout: expected 0 for delta-lora .* got 0.1"):
        DeltaLoraOptions(dropout=0.1).check()
    DeltaLoraOptions(dropout=0.0).check()


def test_start_step_relative_to_short_runs():
    opts = DeltaLoraOptions(start_step=500)
    assert effective_start_step(opts, BuildContext(total_steps=200)) == 20
    assert effective_start_step(opts, BuildContext(total_steps=1000)) == 500
    assert effective_start_step(opts, BuildContext(total_steps=0)) == 500        # unknown length
    assert effective_start_step(opts, BuildContext(total_steps=200, saved_state={"delta_lora": {"start_step": 7}})) == 7


def test_build_no_dropout_and_state(trained):
    variant, opts, ctx, model, w0, history = trained
    from torch import nn

    assert ctx.state["delta_lora"]["start_step"] == K
    layers = lora_layers(model)
    assert len(layers) == 2 * 7
    assert all(isinstance(layer.lora_dropout["default"], nn.Identity) for layer in layers.values())
    assert all(not layer.get_base_layer().weight.requires_grad for layer in layers.values())


def test_w_unchanged_until_k_then_telescopes(trained):
    variant, opts, ctx, model, w0, history = trained
    # history[g] is after step t = g - 1; steps t <= K leave W alone, bitwise.
    for g in range(1, K + 2):
        for name, w in history[g][0].items():
            assert torch.equal(w, w0[name]), (g, name)
    assert any(not torch.equal(history[K + 2][0][n], w0[n]) for n in w0)
    # The anchor is (A, B) before step K+1, i.e. after step K.
    anchor = history[K + 1][1]
    tracker = variant.tracker(model, opts)
    for name, (a, b) in anchor.items():
        assert torch.equal(tracker.anchor[name][0], a) and torch.equal(tracker.anchor[name][1], b)
    expected = telescoped(model, anchor)
    w_t = base_weights(model)
    err = max((w_t[n] - w0[n] - expected[n]).abs().max().item() for n in w0)
    size = max(expected[n].abs().max().item() for n in w0)
    print(f"delta-lora telescoping: max err {err:.2e}, max entry {size:.2e}")
    assert size > 1e-4
    assert err <= 1e-6


def test_export_rank_2r_reloads_in_stock_peft(trained, base_state, tmp_path):
    import json

    from peft import PeftModel

    variant, opts, ctx, model, w0, history = trained
    ids = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(5))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    want = logits(model, ids)
    variant.export_adapter(model, opts, tmp_path)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())   # live model untouched
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 2 * opts.r and config["lora_alpha"] == pytest.approx(opts.alpha * 2)
    reloaded = PeftModel.from_pretrained(fresh_base(base_state), str(tmp_path))
    got = logits(reloaded, ids)
    diff = (got - want).abs().max().item()
    print(f"delta-lora export: logits diff {diff:.2e}")
    assert diff <= 1e-5
    # The plain rank-r adapter on the original base is NOT the trained model (W moved).
    model.save_pretrained(str(tmp_path / "plain"))
    plain = PeftModel.from_pretrained(fresh_base(base_state), str(tmp_path / "plain"))
    assert (logits(plain, ids) - want).abs().max().item() > 1e-4


def test_export_before_any_update_is_plain(base_state, tmp_path):
    from peft import PeftModel

    variant = get_variant("delta-lora")
    opts = DeltaLoraOptions(r=4, alpha=8.0, start_step=K)
    model = variant.build(fresh_base(base_state), opts, make_ctx())
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B["default"].weight.normal_(0, 0.05)
    ids = torch.randint(0, 128, (2, 9))
    variant.export_adapter(model, opts, tmp_path)
    reloaded = PeftModel.from_pretrained(fresh_base(base_state), str(tmp_path))
    assert reloaded.peft_config["default"].r == 4
    assert (logits(reloaded, ids) - logits(model, ids)).abs().max().item() <= 1e-6


def test_checkpoint_state_round_trip(trained, base_state):
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    variant, opts, ctx, model, w0, history = trained
    tensors = variant.checkpoint_state(model, opts)
    assert len(tensors) == 2 * len(w0)
    ctx2 = make_ctx(saved_state={"delta_lora": dict(ctx.state["delta_lora"])})
    model2 = variant.build(fresh_base(base_state), opts, ctx2)
    set_peft_model_state_dict(model2, get_peft_model_state_dict(model))
    variant.restore_state(model2, opts, tensors, ctx2)
    w_want, w_got = base_weights(model), base_weights(model2)
    err = max((w_want[n] - w_got[n]).abs().max().item() for n in w_want)
    print(f"delta-lora restore: max W err {err:.2e}")
    assert err <= 1e-6
    assert variant.tracker(model2, opts).anchor.keys() == w_want.keys()
    # Before K+1 the state is empty and restore leaves W = W0.
    fresh = variant.build(fresh_base(base_state), opts, make_ctx())
    assert variant.checkpoint_state(fresh, opts) == {}


def test_trainer_resume_matches_uninterrupted(base_state, tmp_path):
    """Session flow: checkpoint_state in on_save, a rebuilt model, restore_state before
    trainer.train(resume_from_checkpoint=...) (the Trainer loads the adapter after that)."""
    from safetensors.torch import load_file, save_file
    from transformers import TrainerCallback

    variant = get_variant("delta-lora")
    opts = DeltaLoraOptions(r=4, alpha=8.0, update_ratio=LAMBDA, start_step=K)

    class SaveVariantState(TrainerCallback):
        def __init__(self, model):
            self.model = model

        def on_save(self, args, state, control, **kwargs):
            path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", "variant_state.safetensors")
            save_file(variant.checkpoint_state(self.model, opts), path)

    ctx = make_ctx(total_steps=8)
    full = variant.build(fresh_base(base_state), opts, ctx)
    make_trainer(full, ctx, variant.callbacks(full, opts, ctx) + [SaveVariantState(full)], tmp_path / "a",
                 max_steps=8, save_steps=6).train()

    ckpt = tmp_path / "a" / "checkpoint-6"
    ctx2 = make_ctx(total_steps=8, saved_state={"delta_lora": dict(ctx.state["delta_lora"])})
    resumed = variant.build(fresh_base(base_state), opts, ctx2)
    variant.restore_state(resumed, opts, load_file(str(ckpt / "variant_state.safetensors")), ctx2)
    make_trainer(resumed, ctx2, variant.callbacks(resumed, opts, ctx2), tmp_path / "b",
                 max_steps=8).train(resume_from_checkpoint=str(ckpt))
    w_full, w_res = base_weights(full), base_weights(resumed)
    err = max((w_full[n] - w_res[n]).abs().max().item() for n in w_full)
    moved = max((w_full[n] - base_state[n.removeprefix("base_model.model.") + ".weight"]).abs().max().item()
                for n in w_full)
    print(f"delta-lora trainer resume: max W diff vs uninterrupted {err:.2e} (W moved {moved:.2e})")
    assert err <= 1e-5


def test_export_keeps_classifier_head(tmp_path):
    """Sequence classification: the trained copy of the score head (modules_to_save) must be in
    the rank-2r export too."""
    from datasets import Dataset
    from peft import PeftModel
    from transformers import LlamaForSequenceClassification

    cfg = tiny_llama_config()
    cfg.num_labels, cfg.pad_token_id = 3, 0
    torch.manual_seed(0)
    state = LlamaForSequenceClassification(cfg).state_dict()

    def base():
        model = LlamaForSequenceClassification(cfg)
        model.load_state_dict(state)
        return model

    rows = random_token_dataset(n=24)["input_ids"]
    ds = Dataset.from_dict({"input_ids": rows, "labels": [i % 3 for i in range(len(rows))]})

    def collate(batch):
        out = pad_collator([{"input_ids": r["input_ids"], "labels": r["input_ids"]} for r in batch])
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"],
                "labels": torch.tensor([r["labels"] for r in batch])}

    variant = get_variant("delta-lora")
    opts = DeltaLoraOptions(r=4, alpha=8.0, start_step=0)
    ctx = make_ctx(total_steps=4, task="sequence-classification")
    ctx.train_dataset = ds
    model = variant.build(base(), opts, ctx)
    trainer = make_trainer(model, ctx, variant.callbacks(model, opts, ctx), tmp_path / "run", max_steps=4)
    trainer.data_collator = collate
    trainer.train()
    assert variant.tracker(model, opts).anchor
    variant.export_adapter(model, opts, tmp_path / "adapter")
    ids = torch.randint(1, 128, (2, 10), generator=torch.Generator().manual_seed(3))
    reloaded = PeftModel.from_pretrained(base(), str(tmp_path / "adapter"))
    diff = (logits(reloaded, ids) - logits(model, ids)).abs().max().item()
    assert diff <= 1e-5
