"""The maths of each variant, checked through our variant objects (each paper's update rule and defaults).

Every test builds a tiny random Llama in-process (hidden 64, 2 layers, vocab 128, seeded), wraps it with
`get_variant(name).build(...)`, and drives it with random token batches. One test per acceptance row:

    LoRA      init == base; merged == adapter; scaling alpha/r (alpha/sqrt(r) with rsLoRA)
    LoRA+     param-group lrs (A = lr, B = ratio*lr, embedding = lr_embedding); weight decay reaches groups
    VeRA      init == base, lambda_b = 0, lambda_d = d_initial; trainable = sum(d_out + r);
              shared projections frozen; merged == adapter
    LoRA-FA   A bitwise frozen; exp_avg_B == (1-b1)(1/s^2) g_B (AA^T)^-1; trainable count excludes A
    AdaLoRA   total_step required; our build rejects short runs; init == base; budget reached under a real
              Trainer with our callbacks; orthogonality term in the loss; current_ranks
    DoRA      init == base; m == ||W0||_row; merged rows have norm m; merged == adapter;
              dW_eff = diag(c)(W0 + sBA) - W0 equals merge - W0

Figures worth a look are printed (run with -s).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from studio.core.variants import BuildContext, get_variant

VOCAB, SEQ, BATCH = 128, 12, 2
N_LINEAR = 7 * 2  # all-linear on 2 Llama layers: q k v o gate up down


# -- helpers ---------------------------------------------------------------------------------------


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def tokens(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (BATCH, SEQ), generator=g)


def context(total_steps: int = 10, learning_rate: float = 1e-2, **kw) -> BuildContext:
    return BuildContext(task="causal-lm", total_steps=total_steps, learning_rate=learning_rate,
                        device=torch.device("cpu"), **kw)


def build(name: str, ctx: BuildContext | None = None, **options):
    """(variant, opts, ctx, peft model, logits of the base model before wrapping)."""
    variant = get_variant(name)
    opts = variant.options_cls(**options)
    opts.check()
    ctx = ctx or context()
    base = tiny_llama()
    with torch.no_grad():
        base_logits = base(tokens()).logits
    model = variant.build(base, opts, ctx)
    model.eval()  # dropout is 0 anyway; eval keeps every forward deterministic
    return variant, opts, ctx, model, base_logits


@torch.no_grad()
def logits(model, ids=None) -> torch.Tensor:
    return model(ids if ids is not None else tokens()).logits


@torch.no_grad()
def merged_logits(model) -> torch.Tensor:
    return logits(copy.deepcopy(model).merge_and_unload())


def causal_loss(model, seed: int):
    ids = tokens(seed)
    return model(input_ids=ids, labels=ids).loss


def train(model, optimizer, steps: int = 3) -> list[float]:
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = causal_loss(model, seed=100 + step)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    optimizer.zero_grad()
    return losses


def adamw(model, lr: float = 1e-2):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_layers(model):
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# -- LoRA ------------------------------------------------------------------------------------------


def test_lora_init_equals_base_exactly():
    *_, model, base_logits = build("lora", r=8, alpha=16)
    assert len(lora_layers(model)) == N_LINEAR
    assert torch.equal(logits(model), base_logits)


def test_lora_merged_matches_adapter_after_training():
    _, _, _, model, _ = build("lora", r=8, alpha=16)
    train(model, adamw(model), steps=3)
    assert all(m.lora_B["default"].weight.abs().max() > 0 for _, m in lora_layers(model))
    diff = max_abs(merged_logits(model), logits(model))
    print(f"\nLoRA merged vs adapter max|d logits| = {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.parametrize("use_rslora, expected", [(False, 16 / 8), (True, 16 / math.sqrt(8))])
def test_lora_scaling(use_rslora, expected):
    _, _, _, model, _ = build("lora", r=8, alpha=16, use_rslora=use_rslora)
    layers = lora_layers(model)
    assert all(m.scaling["default"] == pytest.approx(expected, rel=1e-12) for _, m in layers)
    # and the forward really is W0 x + s B A x
    name, layer = layers[0]
    with torch.no_grad():
        torch.nn.init.normal_(layer.lora_B["default"].weight)
        x = torch.randn(3, layer.in_features)
        delta = layer(x) - layer.get_base_layer()(x)
        expected_delta = expected * layer.lora_B["default"](layer.lora_A["default"](x))
    assert max_abs(delta, expected_delta) <= 1e-5


# -- LoRA+ -----------------------------------------------------------------------------------------


def _lora_plus_groups(weight_decay: float = 0.0):
    ctx = context(learning_rate=2e-4, weight_decay=weight_decay)
    variant, opts, ctx, model, _ = build("lora-plus", ctx, r=8, alpha=16, lr_ratio=16.0, lr_embedding=1e-6,
                                         target_modules="q_proj,v_proj,embed_tokens")
    optimizer = variant.make_optimizer(model, opts, ctx)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    # every trainable parameter is in exactly one group
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(named) == len(group_of)
    return model, optimizer, {n: group_of[id(p)] for n, p in named.items()}


def test_lora_plus_group_learning_rates():
    _, optimizer, groups = _lora_plus_groups()
    assert isinstance(optimizer, torch.optim.AdamW)
    kinds = {"A": [], "B": [], "embedding": []}
    for name, group in groups.items():
        if "lora_embedding_" in name:
            kinds["embedding"].append(group["lr"])
        elif "lora_A" in name:
            kinds["A"].append(group["lr"])
        elif "lora_B" in name:
            kinds["B"].append(group["lr"])
        else:
            pytest.fail(f"unexpected trainable parameter {name}")
    assert len(kinds["A"]) == len(kinds["B"]) == 4 and len(kinds["embedding"]) == 2
    print(f"\nLoRA+ lrs: A {set(kinds['A'])}, B {set(kinds['B'])}, embedding {set(kinds['embedding'])}")
    assert all(lr == pytest.approx(2e-4, rel=1e-12) for lr in kinds["A"])
    assert all(lr == pytest.approx(3.2e-3, rel=1e-12) for lr in kinds["B"])
    assert all(lr == pytest.approx(1e-6, rel=1e-12) for lr in kinds["embedding"])


def test_lora_plus_weight_decay_reaches_groups():
    _, optimizer, groups = _lora_plus_groups(weight_decay=0.1)
    assert {g["weight_decay"] for g in groups.values()} == {0.1}
    # and with ctx.weight_decay = 0 every group really has none
    _, _, groups = _lora_plus_groups(weight_decay=0.0)
    assert {g["weight_decay"] for g in groups.values()} == {0.0}


# -- VeRA ------------------------------------------------------------------------------------------


def vera_layers(model):
    from peft.tuners.vera import VeraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, VeraLayer)]


def test_vera_init_equals_base_and_scaling_vectors_start_right():
    _, opts, _, model, base_logits = build("vera", r=16, d_initial=0.1)
    layers = vera_layers(model)
    assert len(layers) == N_LINEAR
    assert torch.equal(logits(model), base_logits)
    for _, layer in layers:
        assert torch.equal(layer.vera_lambda_b["default"], torch.zeros(layer.out_features))
        assert torch.equal(layer.vera_lambda_d["default"], torch.full((opts.r,), 0.1))


def test_vera_trainable_count():
    _, opts, _, model, _ = build("vera", r=16, d_initial=0.1)
    expected = sum(layer.out_features + opts.r for _, layer in vera_layers(model))
    print(f"\nVeRA trainable = {trainable(model)} (sum over layers of d_out + r = {expected})")
    assert trainable(model) == expected == 2 * (64 + 32 + 32 + 64 + 128 + 128 + 64 + 7 * 16)


def test_vera_projections_frozen_and_merged_matches_adapter():
    _, _, _, model, _ = build("vera", r=16, d_initial=0.1)
    shared_a = model.base_model.vera_A["default"].clone()
    shared_b = model.base_model.vera_B["default"].clone()
    assert not any("vera_A" in n or "vera_B" in n for n, p in model.named_parameters() if p.requires_grad)
    train(model, adamw(model), steps=3)
    assert torch.equal(model.base_model.vera_A["default"], shared_a)
    assert torch.equal(model.base_model.vera_B["default"], shared_b)
    assert all(layer.vera_lambda_b["default"].abs().max() > 0 for _, layer in vera_layers(model))
    diff = max_abs(merged_logits(model), logits(model))
    print(f"\nVeRA merged vs adapter max|d logits| = {diff:.2e}")
    assert diff <= 1e-5


def first_step_moves(variant, opts, ctx, model) -> dict[str, tuple[float, float]]:
    """{parameter name: (its group's lr, the largest |change| of one entry)} after one step of the
    variant's optimizer. Adam's first step moves an entry with a gradient by lr * g / |g|: by
    its group's learning rate, whatever the gradient's size."""
    optimizer = variant.make_optimizer(model, opts, ctx)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert len(lr_of) == len(before)   # every trainable parameter is in one group
    model.train()
    causal_loss(model, seed=7).backward()
    optimizer.step()
    return {n: (lr_of[id(p)], float((p.detach() - before[n]).abs().max()))
            for n, p in model.named_parameters() if p.requires_grad}


def test_vera_vectors_learn_at_lr_ratio_times_the_learning_rate():
    """VeRA's paper trains its vectors at ~10x LoRA's learning rate: lr_ratio scales
    train.learning_rate for them, so one learning rate serves a sweep across variants."""
    assert get_variant("vera").options_cls().lr_ratio == pytest.approx(10.0)
    variant, opts, ctx, model, _ = build("vera", context(learning_rate=1e-3), r=16, d_initial=0.1, lr_ratio=10.0)
    moves = first_step_moves(variant, opts, ctx, model)
    assert all(lr == pytest.approx(1e-2) for lr, _ in moves.values())
    # lambda_b starts at 0 and has a gradient; lambda_d's gradient is 0 until lambda_b moves
    moved = [move for n, (_, move) in moves.items() if "vera_lambda_b" in n]
    assert len(moved) == N_LINEAR and all(move == pytest.approx(1e-2, rel=1e-3) for move in moved)
    variant, opts, ctx, model, _ = build("vera", context(learning_rate=1e-3), r=16, lr_ratio=1.0)
    assert variant.make_optimizer(model, opts, ctx) is None   # the Trainer's own AdamW at the run's rate


# -- LoRA-FA ---------------------------------------------------------------------------------------


def test_lora_fa_trainable_count_excludes_a():
    _, opts, _, model, _ = build("lora-fa", r=8, alpha=16)
    layers = lora_layers(model)
    assert not any(m.lora_A["default"].weight.requires_grad for _, m in layers)
    assert trainable(model) == sum(m.out_features * opts.r for _, m in layers)


def test_lora_fa_a_bitwise_frozen_after_step():
    variant, opts, ctx, model, _ = build("lora-fa", r=8, alpha=16)
    optimizer = variant.make_optimizer(model, opts, ctx)
    before = {n: m.lora_A["default"].weight.clone() for n, m in lora_layers(model)}
    train(model, optimizer, steps=2)
    for name, layer in lora_layers(model):
        assert torch.equal(layer.lora_A["default"].weight, before[name]), name
        assert layer.lora_B["default"].weight.abs().max() > 0, name


def test_lora_fa_exp_avg_is_projected_gradient():
    variant, opts, ctx, model, _ = build("lora-fa", r=8, alpha=16)
    optimizer = variant.make_optimizer(model, opts, ctx)
    beta1 = optimizer.param_groups[0]["betas"][0]
    optimizer.zero_grad()
    causal_loss(model, seed=7).backward()
    expected = {}
    for name, layer in lora_layers(model):
        a = layer.lora_A["default"].weight.detach().double()
        g_b = layer.lora_B["default"].weight.grad.detach().double()
        s = layer.scaling["default"]
        expected[name] = (1 - beta1) * (1 / s**2) * g_b @ torch.linalg.inv(a @ a.T)
    optimizer.step()
    worst = 0.0
    for name, want in expected.items():
        got = optimizer.state[f"{name}.lora"]["exp_avg_B"].double()
        rel = ((got - want).norm() / want.norm()).item()
        worst = max(worst, rel)
        assert rel <= 2e-2, f"{name}: relative error {rel:.3e}"
    print(f"\nLoRA-FA exp_avg_B vs (1-b1)(1/s^2) g_B (AA^T)^-1: worst relative error {worst:.2e}")


# -- AdaLoRA ---------------------------------------------------------------------------------------

ADA_T = 20
ADA_OPTS = dict(init_r=12, target_r=4, alpha=32.0, tinit=2, tfinal=4, deltaT=1)


def test_adalora_requires_total_step_and_a_long_enough_run():
    from peft import AdaLoraConfig

    from studio.core.errors import ConfigError

    with pytest.raises(ValueError):
        AdaLoraConfig(init_r=12, target_r=4, target_modules=["q_proj"], total_step=None)
    variant = get_variant("adalora")
    for total_steps in (0, 6, 5):  # tinit + tfinal == 6
        with pytest.raises(ConfigError):
            variant.build(tiny_llama(), variant.options_cls(**ADA_OPTS), context(total_steps=total_steps))
    variant.build(tiny_llama(), variant.options_cls(**ADA_OPTS), context(total_steps=7))


def test_adalora_schedule_is_a_fraction_of_the_run_or_steps():
    from studio.core.config import RunConfig
    from studio.core.errors import ConfigError

    variant = get_variant("adalora")
    said = []
    ctx = context(total_steps=56, emit=said.append)
    model = variant.build(tiny_llama(), variant.options_cls(init_r=6, target_r=2, tinit=0.1, tfinal=0.5), ctx)
    config = model.peft_config["default"]
    assert (config.tinit, config.tfinal, config.total_step) == (5, 28, 56)
    assert any("first 5 steps" in e["message"] and "by step 28" in e["message"] and "last 28 of 56" in e["message"]
               for e in said if e["type"] == "progress")
    model = variant.build(tiny_llama(), variant.options_cls(init_r=6, target_r=2, tinit=3, tfinal=0.25), ctx)
    assert (model.peft_config["default"].tinit, model.peft_config["default"].tfinal) == (3, 14)
    # the defaults leave steps to prune in in any run, however short
    for total in (1, 2, 3, 7):
        variant.build(tiny_llama(), variant.options_cls(), context(total_steps=total))
    with pytest.raises(ConfigError, match=r"variant.tinit \+ variant.tfinal \(4 \+ 2 steps\)"):
        variant.build(tiny_llama(), variant.options_cls(tinit=4, tfinal=0.5), context(total_steps=5))
    for bad, message in (({"tinit": 1.5}, "variant.tinit: expected a fraction of the run below 1 or a whole number"),
                         ({"tinit": 0.6, "tfinal": 0.5}, "variant.tfinal: tinit \\+ tfinal must leave part")):
        with pytest.raises(ConfigError, match=message):
            RunConfig.from_dict({"variant": {"name": "adalora", **bad}}, "test")


def test_adalora_init_equals_base():
    *_, model, base_logits = build("adalora", context(total_steps=ADA_T), **ADA_OPTS)
    assert torch.equal(logits(model), base_logits)


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int = 16):
        g = torch.Generator().manual_seed(3)
        self.ids = torch.randint(0, VOCAB, (n, SEQ), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


@pytest.fixture(scope="module")
def adalora_trained(tmp_path_factory):
    """An AdaLoRA model after ADA_T optimizer steps of a real Trainer with our callbacks."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class LambdaCount(TrainerCallback):  # runs after our allocation callback
        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.last = sum(int((p != 0).sum()) for n, p in model.named_parameters() if "lora_E" in n)

    variant, opts, ctx, model, _ = build("adalora", context(total_steps=ADA_T, learning_rate=1e-2), **ADA_OPTS)
    counter = LambdaCount()
    args = TrainingArguments(output_dir=str(tmp_path_factory.mktemp("adalora")), max_steps=ADA_T,
                             per_device_train_batch_size=4, learning_rate=ctx.learning_rate, report_to=[],
                             use_cpu=True, save_strategy="no", logging_steps=1, seed=0,
                             disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=_Tokens(),
                      callbacks=[*variant.callbacks(model, opts, ctx), counter])
    trainer.train()
    assert trainer.state.global_step == ADA_T
    return model, opts, counter.last


def test_adalora_without_pruning_trains_and_scores(tmp_path):
    """target_r == init_r prunes nothing; peft's allocator would fail on a budget of zero ranks to
    cut (kthvalue with k = 0), so only the importance scores are updated."""
    from transformers import Trainer, TrainingArguments

    from studio.core.variants.adalora import live_ranks, sensitivity

    variant, opts, ctx, model, _ = build("adalora", context(total_steps=6, learning_rate=1e-2),
                                         init_r=4, target_r=4, tinit=0, tfinal=0)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4,
                             learning_rate=ctx.learning_rate, report_to=[], use_cpu=True, save_strategy="no",
                             seed=0, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=_Tokens(), optimizers=(variant.make_optimizer(model, opts, ctx), None),
            callbacks=variant.callbacks(model, opts, ctx)).train()
    assert set(live_ranks(model).values()) == {4}
    assert sum(int((p != 0).sum()) for n, p in model.named_parameters() if "lora_E" in n) == 4 * N_LINEAR
    assert len(sensitivity(model)) == N_LINEAR


def test_adalora_reaches_target_budget_under_trainer(adalora_trained):
    model, opts, last_lambda_count = adalora_trained
    pattern = model.peft_config["default"].rank_pattern
    assert pattern and len(pattern) == N_LINEAR
    kept = sum(sum(bool(x) for x in mask) for mask in pattern.values())
    print(f"\nAdaLoRA after {ADA_T} steps: rank_pattern keeps {kept}, nonzero lambda on the final step "
          f"{last_lambda_count} (target_r * modules = {opts.target_r * N_LINEAR}, "
          f"init_r * modules = {opts.init_r * N_LINEAR})")
    assert kept == opts.target_r * N_LINEAR
    assert last_lambda_count == opts.target_r * N_LINEAR


def test_adalora_current_ranks(adalora_trained, tmp_path):
    from peft.tuners.adalora import AdaLoraLayer

    from studio.core.variants.adalora import current_ranks

    model, opts, _ = adalora_trained
    modules = {n.removeprefix("base_model.model.") for n, m in model.named_modules()
               if isinstance(m, AdaLoraLayer)}

    def check(ranks):
        assert set(ranks) == modules
        # the budget is shared: the ranks sum to target_r * modules (single modules may differ from target_r)
        assert sum(ranks.values()) == opts.target_r * N_LINEAR
        for name, rank in ranks.items():
            lam = model.base_model.model.get_submodule(name).lora_E["default"]
            assert int((lam != 0).sum()) == rank, name

    live = current_ranks(model)
    print(f"\nAdaLoRA current_ranks (live): {live}")
    check(live)  # what a live rank display reads during training
    saved = copy.deepcopy(model)
    saved.save_pretrained(str(tmp_path))  # rewrites the (copied) config's rank_pattern keys
    check(current_ranks(saved))


def test_adalora_loss_includes_orthogonality_regulariser():
    _, opts, _, model, _ = build("adalora", context(total_steps=ADA_T), **ADA_OPTS)
    ids = tokens(5)
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
        plain = model.base_model.model(input_ids=ids, labels=ids).loss.item()  # skips AdaLoraModel.forward
        terms = [torch.linalg.matrix_norm(p @ p.T - torch.eye(p.shape[0])) if "lora_A" in n
                 else torch.linalg.matrix_norm(p.T @ p - torch.eye(p.shape[1]))
                 for n, p in model.named_parameters() if "lora_A" in n or "lora_B" in n]
        regulariser = torch.stack(terms).mean().item()
        model.peft_config["default"].orth_reg_weight = 0.0
        loss_without = model(input_ids=ids, labels=ids).loss.item()
    delta = loss - plain
    print(f"\nAdaLoRA loss {loss:.4f} - CE {plain:.4f} = {delta:.4f}; "
          f"orth_reg_weight * regulariser = {opts.orth_reg_weight * regulariser:.4f}")
    assert delta > 0
    assert delta == pytest.approx(opts.orth_reg_weight * regulariser, rel=1e-4)
    assert loss_without == pytest.approx(plain, abs=1e-6)


def test_adalora_singular_values_learn_at_lambda_lr_ratio():
    """lambda (lora_E) starts at 0 and Adam moves it by about its learning rate per step, while a
    LoRA layer's update grows ~sqrt(d_out) times faster at the same rate: lambda_lr_ratio gives the
    singular values a rate of their own; P and Q keep the run's."""
    variant, opts, ctx, model, _ = build("adalora", context(total_steps=ADA_T, learning_rate=1e-3),
                                         **{**ADA_OPTS, "lambda_lr_ratio": 30.0})
    moves = first_step_moves(variant, opts, ctx, model)
    for name, (lr, move) in moves.items():
        if "lora_E" in name:
            assert lr == pytest.approx(3e-2)
            assert move == pytest.approx(3e-2, rel=1e-3), name   # every lambda has a gradient
        else:
            assert "lora_A" in name or "lora_B" in name, name
            assert lr == pytest.approx(1e-3)
            assert move <= 1e-3 * 1.001   # P and Q: the orthogonality term's gradient at most


# -- DoRA ------------------------------------------------------------------------------------------


def dora_parts(layer):
    """(W0, A, B, s, m) of a DoRA layer, detached fp64."""
    f = lambda t: t.detach().double()  # noqa: E731
    return (f(layer.get_base_layer().weight), f(layer.lora_A["default"].weight), f(layer.lora_B["default"].weight),
            layer.scaling["default"], f(layer.lora_magnitude_vector["default"].weight))


@pytest.fixture(scope="module")
def dora_trained():
    """A DoRA model after 3 AdamW steps, and a merged copy of it."""
    _, _, _, model, _ = build("dora", r=8, alpha=16)
    train(model, adamw(model), steps=3)
    merged = copy.deepcopy(model).merge_and_unload()
    return model, merged


def test_dora_init_equals_base_and_magnitude_is_row_norm():
    *_, model, base_logits = build("dora", r=8, alpha=16)
    assert len(lora_layers(model)) == N_LINEAR
    assert torch.equal(logits(model), base_logits)
    for name, layer in lora_layers(model):
        w0, _, _, _, m = dora_parts(layer)
        assert torch.allclose(m, torch.linalg.vector_norm(w0, dim=1), rtol=1e-6, atol=0), name


def test_dora_merged_rows_have_norm_m(dora_trained):
    model, merged = dora_trained
    worst = 0.0
    for name, layer in lora_layers(model):
        w0, _, b, _, m = dora_parts(layer)
        assert b.abs().max() > 0 and not torch.equal(m, torch.linalg.vector_norm(w0, dim=1)), name
        w = merged.get_submodule(name.removeprefix("base_model.model.")).weight.detach().double()
        rel = ((torch.linalg.vector_norm(w, dim=1) - m).abs() / m).max().item()
        worst = max(worst, rel)
        assert rel <= 1e-5, name
    print(f"\nDoRA merged row norms vs m: worst relative error {worst:.2e}")


def test_dora_merged_logits_match_adapter(dora_trained):
    model, merged = dora_trained
    diff = max_abs(logits(merged), logits(model))
    print(f"\nDoRA merged vs adapter max|d logits| = {diff:.2e}")
    assert diff <= 1e-5


def test_dora_delta_formula_matches_merge(dora_trained):
    model, merged = dora_trained
    worst = 0.0
    for name, layer in lora_layers(model):
        w0, a, b, s, m = dora_parts(layer)
        v = w0 + s * b @ a
        c = m / torch.linalg.vector_norm(v, dim=1)
        delta_formula = c[:, None] * v - w0
        delta_merge = merged.get_submodule(name.removeprefix("base_model.model.")).weight.detach().double() - w0
        err = max_abs(delta_formula, delta_merge)
        worst = max(worst, err)
        assert err <= 1e-6, name
    print(f"\nDoRA dW_eff formula vs merge - W0: worst max|d| {worst:.2e}")
