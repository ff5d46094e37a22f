"""The frozen base held in bf16 or 4 bits (model.dtype, model.quantize; studio/core/storage.py).

Every variant trains on every storage and reloads in stock PEFT on the same storage with equal
outputs; 4-bit gradients are those of the de-quantized model; Delta-LoRA keeps the W it moves
exact; the rules that pick a storage, and the refusals, come before anything loads.

Tolerances (logits of the tiny Llama, whose largest logit is ~0.5):
    fp32            1e-5   (as tests/core/test_variants.py)
    bf16, 4bit      3e-2 of the largest logit: both sides compute in bf16 (8 bits of mantissa,
                    a relative step of 2^-8 = 4e-3 per rounding, over two layers and the head)
A quantized base is the same NF4 bytes on both sides (quantization is deterministic), so 4-bit
adds no error of its own to the comparison.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from conftest import DATASETS
from studio.core import storage
from studio.core.config import RunConfig
from studio.core.errors import ConfigError
from studio.core.training import Session

from test_variants import VARIANT_CASES

needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")

STORAGES = {   # name -> (model.dtype, model.quantize, train.precision)
    "fp32": ("fp32", "none", "fp32"),
    "bf16": ("bf16", "none", "auto"),
    "4bit": ("auto", "4bit", "bf16"),
}
TOLERANCE = {"fp32": 1e-5, "bf16": 3e-2, "4bit": 3e-2}


def _config(source, out, variant: str, held: str, steps: int = 2, **train) -> RunConfig:
    dtype, quantize, precision = STORAGES[held]
    raw = {
        "model": {"source": source, "dtype": dtype, "quantize": quantize},
        "data": {"path": str(DATASETS / "chat_sample.jsonl"), "eval_fraction": 0.0, "max_seq_len": 64},
        "variant": {"name": variant, **VARIANT_CASES[variant], **({"start_step": 1} if variant == "delta-lora" else {})},
        "train": {"output_dir": str(out), "max_steps": steps, "batch_size": 4, "learning_rate": 5e-3,
                  "save_every": 0, "eval_every": 0, "seed": 0, "device": "cpu", "precision": precision,
                  "gallery": False, **train},
    }
    return RunConfig.from_dict(raw, "test")


def _stock_base(source, held: str):
    """The base as stock transformers holds it for this storage (no studio code)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if held == "fp32":
        return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    if held == "bf16":
        return AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.bfloat16, device_map={"": "cpu"},
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16))
    # On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight at its first eval-mode
    # forward, and peft's DoRA then de-quantizes the repacked bytes as if they were plain NF4:
    # stock DoRA's logits were off by 0.14 (of 0.69) against the same model de-quantized to
    # bf16, and exact with the repacking off. The studio keeps it off (storage.py); so does the
    # stock side here, or it would compare with a wrong answer.
    storage.keep_4bit_differentiable(model)
    return model


def _logits(model, batch, held: str):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=held != "fp32"):
        return model(**batch).logits.float()


# -- the rules ---------------------------------------------------------------------------------

def test_auto_picks_bf16_only_where_the_hardware_multiplies_it(monkeypatch):
    storage.cpu_has_bf16.cache_clear()
    monkeypatch.setenv("LORA_STUDIO_CPU_FLAGS", "fpu sse avx2 amx_tile amx_bf16")
    assert storage.resolve("auto", "none", "auto", "cpu") == storage.Storage(
        "bf16", "none", "bf16", "this CPU has bf16 matrix units")
    storage.cpu_has_bf16.cache_clear()
    monkeypatch.setenv("LORA_STUDIO_CPU_FLAGS", "fpu sse avx2 avx512f")
    plain = storage.resolve("auto", "none", "auto", "cpu")
    assert (plain.dtype, plain.compute) == ("fp32", "fp32")
    storage.cpu_has_bf16.cache_clear()
    monkeypatch.setenv("LORA_STUDIO_CPU_FLAGS", "avx512_bf16")
    assert storage.resolve("auto", "none", "auto", "cpu").compute == "bf16"
    # a CPU run with fp32 storage asked for computes in fp32 (autocast over fp32 is slower there)
    assert storage.resolve("fp32", "none", "auto", "cpu").compute == "fp32"
    # an explicit fp32 compute keeps auto storage fp32 (the suite's runs, old behaviour)
    assert storage.resolve("auto", "none", "fp32", "cpu").dtype == "fp32"
    # GPUs: bf16 where it has it, fp16 where not; storage follows
    assert storage.resolve("auto", "none", "auto", "cuda").dtype == "bf16"
    assert storage.resolve("auto", "none", "auto", "cuda", gpu_bf16=False).dtype == "fp16"
    assert storage.resolve("fp32", "none", "auto", "cuda").compute == "bf16"   # autocast over fp32, as before
    assert storage.resolve("auto", "none", "auto", "mps").compute == "fp32"
    storage.cpu_has_bf16.cache_clear()


@pytest.mark.parametrize("args, expected", [
    (("bf16", "none", "fp32", "cpu"), "model.dtype: a base stored in bf16 computes in bf16"),
    (("fp16", "none", "auto", "cpu"), "model.dtype: fp16 needs a CUDA device"),
    (("bf16", "none", "auto", "cuda"), "model.dtype: this GPU does not support bf16"),
    (("auto", "4bit", "auto", "mps"), "model.quantize: 4bit runs on a CUDA GPU or a CPU"),
])
def test_combinations_that_cannot_run_are_one_line(args, expected):
    with pytest.raises(ConfigError) as info:
        storage.resolve(*args, gpu_bf16=False)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_4bit_without_bitsandbytes_names_the_package(monkeypatch):
    monkeypatch.setattr(storage, "bitsandbytes_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"^model.quantize: 4bit needs the bitsandbytes package "
                                          r"\(pip install bitsandbytes\)$"):
        storage.resolve("auto", "4bit", "auto", "cpu")


@needs_bnb
def test_delta_lora_on_4bit_is_refused_before_the_model_loads(tiny_llama, tmp_path, recorder, monkeypatch):
    import studio.core.models as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    result = Session(_config(tiny_llama, tmp_path, "delta-lora", "4bit")).run(sink=recorder)
    assert result.status == "failed" and result.exit_code == 2
    assert result.error.startswith("model.quantize: delta-lora moves the base weights W themselves")
    assert not list(tmp_path.iterdir())   # no run folder


@needs_bnb
def test_bitsandbytes_imports_without_asking_the_hub(tmp_path):
    """peft imports bitsandbytes as soon as it is installed; its CPU backend then asks the hub
    for a kernel and logs a trust/fallback message. In the studio nothing is fetched or said."""
    import subprocess
    import sys

    code = ("import logging, sys\n"
            "logging.basicConfig(level=logging.DEBUG)\n"
            "import studio.core, peft, transformers\n"
            "import bitsandbytes.backends.cpu.ops\n"
            "print('bitsandbytes' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "0"})
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
    assert "kernels-community" not in out.stderr and "trust" not in out.stderr.lower(), out.stderr


# -- every variant on every storage ---------------------------------------------------------------

@pytest.mark.parametrize("held", list(STORAGES))
@pytest.mark.parametrize("variant", list(VARIANT_CASES))
def test_variant_trains_on_storage_and_reloads_in_stock_peft(variant, held, tiny_llama, tmp_path, recorder):
    from peft import PeftModel

    if held == "4bit":
        if importlib.util.find_spec("bitsandbytes") is None:
            pytest.skip("bitsandbytes not installed")
        if variant == "delta-lora":
            pytest.skip("refused on 4bit (test_delta_lora_on_4bit_is_refused_before_the_model_loads)")
    steps = 3 if variant == "adalora" else 2   # tinit + tfinal < the run's steps
    session = Session(_config(tiny_llama, tmp_path, variant, held, steps=steps))
    result = session.run(sink=recorder)
    assert result.status == "completed", result.error
    started = recorder.of("run_started")[0]
    dtype, quantize, _ = STORAGES[held]
    assert (started["base_dtype"], started["quantize"]) == (("fp32" if held == "fp32" else "bf16"), quantize)
    losses = [e["loss"] for e in recorder.of("step")]
    assert len(losses) == steps and all(math.isfinite(x) for x in losses)
    # the adapter and its optimizer state are fp32 master weights, whatever the base
    trainable = [p for p in session.model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    # constants stay constants: peft's upcast over a half base made AdaLoRA's ranknum trainable
    ranknums = [p for n, p in session.model.named_parameters() if ".ranknum." in n]
    assert all(not p.requires_grad and p.item() == VARIANT_CASES[variant]["init_r"] for p in ranknums)

    enc = session.tokenizer(["The capital of France is Paris.", "Convert 3 kilometres to metres!"],
                            return_tensors="pt", padding=True)
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    expected = _logits(session.model.eval(), batch, held)
    reloaded = PeftModel.from_pretrained(_stock_base(tiny_llama, held), str(result.adapter_path)).eval()
    got = _logits(reloaded, batch, held)
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= TOLERANCE[held] * (scale if held != "fp32" else 1.0)


@needs_bnb
def test_4bit_gradients_are_those_of_the_dequantized_model(tiny_llama):
    """Compared with an fp32 model whose linear weights are the de-quantized NF4 weights, a
    LoRA on the 4-bit base gets the same loss and gradients, also after an evaluation pass
    (bitsandbytes' CPU inference repacking has no backward: storage.keep_4bit_differentiable)."""
    from peft import LoraConfig, get_peft_model

    from studio.core.models import ResolvedModel, load_model

    resolved = ResolvedModel(tiny_llama, tiny_llama, "folder", "-")
    quantized = load_model(resolved, "causal-lm", storage=storage.resolve("auto", "4bit", "fp32", "cpu"),
                           device=torch.device("cpu"))
    reference = load_model(resolved, "causal-lm", dtype=torch.float32)
    layers = dict(quantized.named_modules())
    for name, module in reference.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            assert storage.is_quantized_layer(layers[name])
            module.weight.data = storage.dense_weight(layers[name]).float().clone()
    ids = torch.randint(5, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    quantized.eval()
    with torch.no_grad():
        quantized(input_ids=ids)   # an evaluation first, as a run with eval_every does
    results = []
    for model in (quantized, reference):
        peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
        for i, (name, p) in enumerate(sorted(peft_model.named_parameters())):
            if p.requires_grad:
                p.data = torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) * 0.1
        peft_model.train()
        out = peft_model(input_ids=ids, labels=ids)
        out.loss.backward()
        results.append((out.loss.item(), {n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad}))
    (loss_q, grads_q), (loss_r, grads_r) = results
    assert loss_q == pytest.approx(loss_r, rel=1e-5)
    assert grads_q.keys() == grads_r.keys()
    for name in grads_r:
        assert torch.allclose(grads_q[name], grads_r[name], rtol=1e-4, atol=1e-6), name


def test_delta_lora_keeps_the_w_it_moves_exact_on_a_bf16_base(tiny_llama, tmp_path, recorder):
    """On a bf16 base the adapted layers' W are fp32, so each step's λ·Δ(BA) lands in full: W_now
    minus what the tracker says moved is the bf16 W0 of the file to fp32 accuracy (a bf16 W would
    be off by up to half a bf16 step, 2^-9 of |W|, after every update)."""
    from safetensors.torch import load_file

    cfg = _config(tiny_llama, tmp_path, "delta-lora", "bf16", steps=4)
    session = Session(cfg)
    result = session.run(sink=recorder)
    assert result.status == "completed", result.error
    original = load_file(f"{tiny_llama}/model.safetensors")
    updates = session.variant.update_factors(session.model, cfg.variant_options())   # the run's own tracker
    assert updates and all(u.offset_K is not None for u in updates)   # W has moved
    for u in updates:
        assert u.base_layer.weight.dtype == torch.float32, u.name
        w0 = original[u.name + ".weight"].to(torch.bfloat16).double()   # what the bf16 base held
        moved = (u.weight().double() - w0).abs().max().item()
        error = (u.w0() - w0).abs().max().item()
        assert moved > 1e-4, u.name
        assert error <= 1e-6 * w0.abs().max().item(), (u.name, error)
    others = [p for n, p in session.model.named_parameters() if "embed_tokens" in n or "norm" in n]
    assert others and all(p.dtype == torch.bfloat16 for p in others)


# -- merge and export ---------------------------------------------------------------------------------

@pytest.mark.parametrize("held", ["bf16", "4bit"])
def test_merged_export_of_a_bf16_or_4bit_run_equals_stock_peft_merge(held, tiny_llama, tmp_path, recorder):
    """The merged model is the original base (never a 4-bit copy) with the adapter merged in, in
    the dtype asked for: the weights of stock PEFT's merge_and_unload of the same adapter on the
    same base in that dtype, and stock transformers reads it. (Before, the export loaded the
    adapter through peft's low_cpu_mem_usage path, which rounds it to the base's bf16: up to 30
    bf16 steps off the exact merge.)"""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from studio.core.export import export_merged
    from studio.core.gallery import Gallery

    if held == "4bit" and importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes not installed")
    cfg = _config(tiny_llama, tmp_path / "runs", "lora", held, gallery=True)
    result = Session(cfg).run(sink=recorder)
    assert result.status == "completed", result.error
    entry = Gallery().get(result.gallery_entry)
    out = export_merged(entry, tmp_path / "merged", dtype="bf16")
    ours = load_file(str(out / "model.safetensors"))
    stock = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16),
                                      str(result.adapter_path)).merge_and_unload().state_dict()
    assert {t.dtype for t in ours.values()} == {torch.bfloat16}
    exact = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32),
                                      str(result.adapter_path)).merge_and_unload().state_dict()
    original = load_file(f"{tiny_llama}/model.safetensors")
    for name, tensor in ours.items():
        # the same arithmetic as stock, bit for bit; and both within a bf16 step (2^-7) of the
        # size of what was added (|W0| + |ΔW|: a sum can cancel) of the exact fp32 merge
        assert torch.equal(tensor, stock[name]), name
        w0 = original[name].float()
        step = 2.0 ** -7 * (w0.abs() + (exact[name].float() - w0).abs()) + 1e-12
        assert ((tensor.float() - exact[name].float()).abs() <= step).all(), name
    moved = load_file(f"{tiny_llama}/model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(ours["model.layers.0.self_attn.q_proj.weight"], moved.to(torch.bfloat16))
    # "auto" is the base's own dtype (the tiny model is saved in fp32)
    auto = export_merged(entry, tmp_path / "merged-auto")
    assert {t.dtype for t in load_file(str(auto / "model.safetensors")).values()} == {torch.float32}
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert merged.dtype == torch.bfloat16


# -- telemetry on a quantized base ------------------------------------------------------------------

@needs_bnb
@pytest.mark.parametrize("name", ["lora", "dora", "vera", "adalora"])
def test_telemetry_on_a_4bit_base_is_exact(name, tiny_llama):
    """Spectra, DoRA's ΔM/ΔD and ‖ΔW‖/‖W0‖ on a 4-bit base equal a float64 computation from the
    de-quantized W0 (the weights the model multiplies with), to test_telemetry's tolerance: the
    telemetry de-quantizes layer by layer and loses nothing to the 4-bit storage."""
    from test_telemetry import CASES, TOL, _measure, _randomize, rel_err
    from studio.core.models import ResolvedModel, load_model
    from studio.core.telemetry.monitor import RELATIVE_UPDATE
    from studio.core.telemetry.spectra import dense_svdvals
    from studio.core.telemetry.updates import peft_updates
    from studio.core.variants import BuildContext, get_variant

    resolved = ResolvedModel(tiny_llama, tiny_llama, "folder", "-")
    base = load_model(resolved, "causal-lm", storage=storage.resolve("auto", "4bit", "fp32", "cpu"),
                      device=torch.device("cpu"))
    variant = get_variant(name)
    opts = variant.options_cls(**CASES[name])
    opts.check()
    ctx = BuildContext(task="causal-lm", total_steps=10, learning_rate=1e-2, device=torch.device("cpu"))
    model = variant.build(base, opts, ctx)
    _randomize(model, seed=7)
    events = _measure(variant, opts, model)
    updates = peft_updates(model)
    assert len(updates) == 14 and all(storage.is_quantized_layer(u.base_layer) for u in updates)
    worst = {"sv": 0.0, "dM": 0.0, "dD": 0.0, "imp": 0.0}
    for u in updates:
        w0 = storage.dense_weight(u.base_layer).double()          # the NF4 weight, de-quantized
        v = w0 + u.lowrank()
        if u.is_dora:   # diag(m / ‖W0 + sBA‖_row)·(W0 + sBA), written out here
            w_eff = (u.magnitude.double() / v.norm(dim=1))[:, None] * v
        else:
            w_eff = v
        delta = w_eff - w0
        worst["sv"] = max(worst["sv"], rel_err(events["spectra"]["layers"][u.name]["sv"], dense_svdvals(delta)))
        m0, mt = w0.norm(dim=1), w_eff.norm(dim=1)
        dM, dD = float((mt - m0).abs().mean()), float((1 - (w_eff * w0).sum(1) / (m0 * mt)).mean())
        got = events["decomposition"]["layers"][u.name]
        worst["dM"] = max(worst["dM"], abs(got["dM"] - dM) / dM)
        worst["dD"] = max(worst["dD"], abs(got["dD"] - dD) / dD)
        imp = float(delta.norm() / w0.norm())
        worst["imp"] = max(worst["imp"], abs(events[RELATIVE_UPDATE]["layers"][u.name] - imp) / imp)
    assert max(worst.values()) <= TOL, worst


# -- 8-bit -----------------------------------------------------------------------------------------------

@needs_bnb
def test_8bit_on_cpu_is_refused_before_the_model_loads(tiny_llama, tmp_path, recorder):
    """bitsandbytes 0.50's 8-bit layers break in a CPU training step (their row scales are gone
    at the second forward); the run says so in one line and makes no run folder."""
    raw = _config(tiny_llama, tmp_path, "lora", "fp32").to_dict()
    raw["model"].update(dtype="auto", quantize="8bit")
    raw["train"]["precision"] = "auto"
    result = Session(RunConfig.from_dict(raw, "test")).run(sink=recorder)
    assert result.status == "failed" and result.run_dir is None
    assert result.error == ("model.quantize: 8bit trains on a CUDA GPU only; on this CPU use 4bit (NF4) or "
                            "model.dtype = bf16")
    assert not recorder.of("run_started")


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="madvise and /proc are Linux's")
def test_page_out_hands_a_mapped_checkpoint_back_and_keeps_its_values(tmp_path):
    """PageOutWhileLoading (a quantized load on CPU): the pages of a mapped safetensors file leave
    the process's resident memory, and the tensors read from it still hold the file's values."""
    import os
    import time

    from safetensors.torch import load_file, save_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.arange(64 * 2 ** 20 // 4, dtype=torch.float32)}, str(path))   # 64 MiB

    def rss_file() -> int:
        fields = dict(line.split(":", 1) for line in open(f"/proc/{os.getpid()}/status") if ":" in line)
        return int(fields["RssFile"].split()[0]) * 1024

    before = rss_file()
    mapped = load_file(str(path))["w"]          # safetensors maps the file; touch every page
    assert float(mapped.sum()) > 0
    assert rss_file() - before > 48 * 2 ** 20
    paging = storage.PageOutWhileLoading([path], every=0.05)
    with paging:
        time.sleep(0.3)
    assert rss_file() - before < 16 * 2 ** 20
    assert torch.equal(mapped, torch.arange(64 * 2 ** 20 // 4, dtype=torch.float32))
