"""LoRA-drop on a tiny random 8-layer Llama.

Acceptance (from the paper's selection rule): Σ I = 1 per type; the kept set is the minimal prefix reaching T;
stage-2 init == base exactly; trainable count == kept + one pair per type; shared grad == sum of
the per-layer grads of an untied copy; the saved adapter reloads in stock PEFT with the same
logits; a resumed run (saved_state) rebuilds the same ties.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from studio.core.variants import BuildContext, get_variant
from studio.core.variants.lora_drop import (LoraDropOptions, lora_modules, module_type, retie, select,
                                            selection_from_ties)
from tiny_models import pad_collator, random_token_dataset, tiny_llama_config

R = 4


@pytest.fixture(scope="module")
def base_state():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(8, pad_token_id=0)).state_dict()


def fresh_base(base_state):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_llama_config(8, pad_token_id=0))
    model.load_state_dict(base_state)
    return model


def make_ctx(events=None, **kw):
    kw.setdefault("train_dataset", random_token_dataset())
    return BuildContext(task=kw.pop("task", "causal-lm"), total_steps=3, learning_rate=1e-2, seed=0,
                        device=torch.device("cpu"), collator=pad_collator, batch_size=4,
                        emit=(events.append if events is not None else (lambda e: None)), **kw)


OPTS = LoraDropOptions(r=R, alpha=8.0, sample_fraction=0.25, threshold=0.9)
IDS = torch.randint(1, 128, (3, 11), generator=torch.Generator().manual_seed(7))


def logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def built(base_state):
    variant = get_variant("lora-drop")
    events = []
    ctx = make_ctx(events)
    model = variant.build(fresh_base(base_state), OPTS, ctx)
    init_state = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    return variant, ctx, events, model, init_state


def test_importance_sums_to_one_per_type(built):
    variant, ctx, events, model, _ = built
    importance = ctx.state["lora_drop"]["importance"]
    assert len(importance) == 8 * 7
    by_type = {}
    for name, value in importance.items():
        assert name.startswith("model.layers.")
        by_type[module_type(name)] = by_type.get(module_type(name), 0.0) + value
    assert sorted(by_type) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    for total in by_type.values():
        assert total == pytest.approx(1.0, abs=1e-9)
    assert all(v > 0 for v in importance.values())


def test_kept_is_minimal_prefix(built):
    variant, ctx, events, model, _ = built
    sel = ctx.state["lora_drop"]
    kept, importance = set(sel["kept"]), sel["importance"]
    for t in {module_type(n) for n in importance}:
        names = sorted((n for n in importance if module_type(n) == t), key=importance.get, reverse=True)
        mine = [n for n in names if n in kept]
        assert mine == names[:len(mine)], t                                    # a prefix
        assert sum(importance[n] for n in mine) >= OPTS.threshold - 1e-12       # reaches T
        assert sum(importance[n] for n in mine[:-1]) < OPTS.threshold            # minimal
    print(f"lora-drop: kept {len(kept)} of {len(importance)} modules")


def test_select_global_and_degenerate():
    raw = {"a.q": 6.0, "b.q": 3.0, "c.q": 1.0, "a.k": 0.0, "b.k": 0.0}
    kept, imp = select(raw, 0.9, "per-type")
    assert kept == ["a.q", "b.q", "a.k", "b.k"] and imp["a.k"] == 0.5
    kept, imp = select(raw, 0.6, "global")
    assert kept == ["a.q"] and sum(imp.values()) == pytest.approx(1.0)


def test_events(built):
    variant, ctx, events, model, _ = built
    ranks = next(e for e in events if e["type"] == "ranks")
    importance = next(e for e in events if e["type"] == "importance")
    sel = ctx.state["lora_drop"]
    assert ranks["kept"] == sel["kept"] and ranks["shared"] == sel["shared"]
    assert all(ranks["layers"][n] == (R if n in sel["kept"] else 0) for n in ranks["layers"])
    assert importance["layers"] == sel["importance"]
    json.dumps(ctx.state)            # plain data only
    json.dumps(events)


def test_stage2_init_equals_base(built, base_state):
    variant, ctx, events, model, _ = built
    want = logits(fresh_base(base_state))
    assert torch.equal(logits(model), want)
    for name, layer in lora_modules(model).items():   # W is the base weight (unload, not merge)
        assert torch.equal(layer.get_base_layer().weight, base_state[name + ".weight"])


def test_ties_and_trainable_count(built):
    variant, ctx, events, model, _ = built
    sel = ctx.state["lora_drop"]
    layers = lora_modules(model)
    for key, names in sel["shared"].items():
        first = layers[names[0]]
        for n in names[1:]:
            assert layers[n].lora_A["default"] is first.lora_A["default"]
            assert layers[n].lora_B["default"] is first.lora_B["default"]
    for n in sel["kept"]:
        assert all(layers[n].lora_A["default"] is not layers[m].lora_A["default"] for m in layers if m != n)
    pair = lambda n: R * (layers[n].in_features + layers[n].out_features)
    expected = sum(pair(n) for n in sel["kept"]) + sum(pair(names[0]) for names in sel["shared"].values())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == expected
    assert len(sel["shared"]) == len({module_type(n) for names in sel["shared"].values() for n in names})
    print(f"lora-drop: trainable {trainable} (kept {len(sel['kept'])}, shared groups {len(sel['shared'])})")
    assert selection_from_ties(model)["shared"] == {k: v for k, v in sel["shared"].items() if len(v) > 1}


def test_shared_grad_is_sum_of_untied_grads(built, base_state):
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    variant, ctx, events, model, _ = built
    tied = variant.build(fresh_base(base_state), OPTS, make_ctx(saved_state={"lora_drop": ctx.state["lora_drop"]}))
    with torch.no_grad():   # B = 0 would make every A gradient zero
        for p in tied.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    untied = get_peft_model(fresh_base(base_state), tied.peft_config["default"])
    set_peft_model_state_dict(untied, get_peft_model_state_dict(tied))
    batch = pad_collator([random_token_dataset()[i] for i in range(4)])
    for m in (tied, untied):
        m.train()
        m(**batch).loss.backward()
    t_layers, u_layers = lora_modules(tied), lora_modules(untied)
    worst = 0.0
    for names in ctx.state["lora_drop"]["shared"].values():
        for part in ("lora_A", "lora_B"):
            got = getattr(t_layers[names[0]], part)["default"].weight.grad
            want = sum(getattr(u_layers[n], part)["default"].weight.grad for n in names)
            worst = max(worst, ((got - want).abs().max() / want.abs().max()).item())
    print(f"lora-drop: shared grad vs sum of untied grads, max rel err {worst:.2e}")
    assert worst <= 1e-5


def test_train_export_reload_and_resume(built, base_state, tmp_path):
    from peft import PeftModel
    from transformers import Trainer, TrainingArguments

    variant, ctx, events, model, init_state = built
    sel = ctx.state["lora_drop"]
    shared_b = lora_modules(model)[next(iter(sel["shared"].values()))[0]].lora_B["default"].weight
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=3, per_device_train_batch_size=4,
                             learning_rate=1e-2, report_to=[], logging_strategy="no", save_strategy="no",
                             disable_tqdm=True, use_cpu=True, remove_unused_columns=False)
    assert variant.make_optimizer(model, OPTS, ctx) is None
    Trainer(model=model, args=args, train_dataset=ctx.train_dataset, data_collator=pad_collator,
            callbacks=variant.callbacks(model, OPTS, ctx)).train()
    assert shared_b.abs().max() > 0                       # the shared pair is trained, not frozen

    variant.export_adapter(model, OPTS, tmp_path / "adapter")
    sidecar = json.loads((tmp_path / "adapter" / "lora_drop.json").read_text())
    assert sidecar["kept"] == sel["kept"] and sidecar["shared"] == sel["shared"]
    want = logits(model)
    reloaded = PeftModel.from_pretrained(fresh_base(base_state), str(tmp_path / "adapter"))
    diff = (logits(reloaded) - want).abs().max().item()
    print(f"lora-drop: reload logits diff {diff:.2e}")
    assert diff <= 1e-6
    retie(reloaded, sidecar)
    assert selection_from_ties(reloaded) == selection_from_ties(model)
    assert (logits(reloaded) - want).abs().max().item() <= 1e-6

    # Resume: skip stage 1, same ties, and (same seed) the same stage-2 init as the first build.
    saved = json.loads(json.dumps(ctx.state))
    events2 = []
    resumed = variant.build(fresh_base(base_state), OPTS, make_ctx(events2, saved_state=saved))
    assert selection_from_ties(resumed) == selection_from_ties(model)
    assert all(torch.equal(v, init_state[k]) for k, v in resumed.state_dict().items() if "lora_" in k)
    assert any(e["type"] == "ranks" for e in events2)


def test_sequence_classification_head_untouched():
    """Stage 1 trains a copy of the score head (modules_to_save); stage 2 must start from the
    real base head, not from that copy."""
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = tiny_llama_config(2, pad_token_id=0)
    cfg.num_labels = 3
    state = LlamaForSequenceClassification(cfg).state_dict()
    base = LlamaForSequenceClassification(cfg)
    base.load_state_dict(state)
    variant = get_variant("lora-drop")
    ctx = make_ctx(task="sequence-classification", train_dataset=random_token_dataset(classes=3))
    model = variant.build(base, OPTS, ctx)
    ref = LlamaForSequenceClassification(cfg)
    ref.load_state_dict(state)
    assert torch.equal(logits(model), logits(ref))
