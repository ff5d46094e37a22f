"""The memory plan (studio/core/plan.py, `lora-studio plan`) and the presets by model size
(studio/core/presets.py, `--preset`). The plan's constants are checked against measured peaks by
tests/bench/bench_memory.py; here, its arithmetic and its answers."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import DATASETS
from studio.cli import main
from studio.core.config import RunConfig
from studio.core.plan import estimate
from studio.core.presets import PRESETS, apply_preset, suggest

GIB = 1024 ** 3


def _config(source, **train) -> RunConfig:
    raw = {"model": {"source": source},
           "data": {"path": str(DATASETS / "chat_sample.jsonl"), "max_seq_len": 64},
           "variant": {"name": "lora", "r": 4},
           "train": {"batch_size": 4, "device": "cpu", "precision": "fp32", **train}}
    return RunConfig.from_dict(raw, "test")


def test_the_parts_add_up_and_storage_shrinks_the_weights(tiny_llama):
    cfg = _config(tiny_llama)
    fp32 = estimate(cfg, free_bytes=64 * GIB, total_bytes=64 * GIB)
    assert fp32.peak_bytes == (fp32.weights_bytes + fp32.adapter_bytes + fp32.optimizer_bytes
                               + fp32.activations_bytes + fp32.runtime_bytes)
    assert fp32.fits and all(n > 0 for n in (fp32.weights_bytes, fp32.adapter_bytes, fp32.activations_bytes))
    bf16 = estimate(cfg.with_overrides(["model.dtype=bf16", "train.precision=bf16"]), free_bytes=64 * GIB)
    assert bf16.weights_bytes == pytest.approx(fp32.weights_bytes / 2, rel=0.01)
    assert bf16.adapter_bytes == fp32.adapter_bytes   # the adapter stays fp32
    assert bf16.activations_bytes < fp32.activations_bytes
    checkpointed = estimate(cfg.with_overrides(["train.gradient_checkpointing=true"]), free_bytes=64 * GIB)
    assert checkpointed.activations_bytes < fp32.activations_bytes
    doubled = estimate(cfg.with_overrides(["train.batch_size=8"]), free_bytes=64 * GIB)
    assert doubled.activations_bytes == pytest.approx(2 * fp32.activations_bytes, rel=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")
def test_4bit_holds_the_linear_layers_in_about_half_a_byte(tiny_llama):
    cfg = _config(tiny_llama, precision="bf16")
    bf16 = estimate(cfg.with_overrides(["model.dtype=bf16"]), free_bytes=64 * GIB)
    q4 = estimate(cfg.with_overrides(["model.quantize=4bit"]), free_bytes=64 * GIB)
    assert q4.weights_bytes < bf16.weights_bytes


def test_a_run_that_will_not_fit_says_what_would(tiny_llama):
    cfg = _config(tiny_llama, batch_size=64).with_overrides(["data.max_seq_len=4096"])
    plan = estimate(cfg, free_bytes=2 * GIB, total_bytes=4 * GIB)
    assert plan.fits is False and plan.advice
    assert any("batch_size" in a or "max_seq_len" in a or "gradient_checkpointing" in a for a in plan.advice)
    assert "will not fit" in plan.summary()


def test_cli_plan_json_and_text(tiny_llama, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(_config(tiny_llama).to_toml())
    assert main(["plan", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    parts = ("weights_bytes", "adapter_bytes", "optimizer_bytes", "activations_bytes", "runtime_bytes")
    assert out["peak_bytes"] == sum(out[k] for k in parts) and out["device"] == "cpu"
    assert main(["plan", str(config), "--set", "train.batch_size=2"]) == 0
    assert "peak ~" in capsys.readouterr().out
    assert main(["plan", str(config), "--preset", "nonsense"]) == 2
    assert "unknown preset 'nonsense'" in capsys.readouterr().err


def test_presets_set_storage_rank_batch_length_and_set_wins(tiny_llama):
    cfg = _config(tiny_llama)
    big = apply_preset(cfg, "7-8b")
    assert (big.model.quantize, big.train.gradient_checkpointing, big.train.batch_size) == ("4bit", True, 2)
    assert big.variant["r"] == 16 and big.data.max_seq_len == 1024
    # --set given with a preset wins (the CLI applies the preset first)
    assert apply_preset(cfg, "7-8b").with_overrides(["train.batch_size=1"]).train.batch_size == 1
    # VeRA keeps its own shared rank; AdaLoRA gets init_r / target_r
    before = cfg.with_overrides(["variant.name=vera"])
    assert apply_preset(before, "1-3b").variant["r"] == before.variant["r"]
    ada = apply_preset(cfg.with_overrides(["variant.name=adalora"]), "1-3b")
    assert (ada.variant["init_r"], ada.variant["target_r"]) == (24, 16)
    assert [suggest(n) for n in (135e6, 1.1e9, 7.2e9, 70e9, None)] == ["small", "1-3b", "7-8b", "13b+", None]
    assert set(PRESETS) == {"small", "1-3b", "7-8b", "13b+"}


def test_cli_train_preset_unknown_is_one_line(capsys):
    assert main(["train", "resources/configs/default.toml", "--preset", "huge"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lora-studio: error: --preset: unknown preset 'huge'") and "\n" not in err


def test_a_load_that_converts_the_checkpoint_counts_the_mapped_file(tiny_llama):
    """A CPU load maps the checkpoint; one that converts it (fp32 from a bf16 file) holds the new
    weights beside the mapped file, and that can be the run's peak (a 4-bit load pages the file
    out as it goes)
    (bench_memory.py: fp32 from a bf16 ~1B file, 7.2 GiB planned against 7.06 measured)."""
    from studio.core.plan import Shapes, model_shapes

    real = model_shapes(tiny_llama)
    assert real.file_itemsize == 4 and real.file_bytes >= sum(4 * __import__("math").prod(s) for _, s in real.tensors)
    # the same model as if its file were a large bf16 one: a 1 GiB file, 2 bytes an element
    shapes = Shapes(real.tensors, real.config, file_bytes=GIB, file_itemsize=2)
    cfg = _config(tiny_llama)
    converts = estimate(cfg, shapes=shapes, free_bytes=64 * GIB)       # fp32 from bf16: a copy
    assert converts.peak_bytes == GIB + converts.weights_bytes + converts.runtime_bytes
    assert any("while loading" in n for n in converts.notes)
    same = estimate(cfg.with_overrides(["model.dtype=bf16", "train.precision=bf16"]), shapes=shapes,
                    free_bytes=64 * GIB)                                # bf16 from bf16: the file is the weights
    assert same.peak_bytes == GIB + same.runtime_bytes
    if importlib.util.find_spec("bitsandbytes") is not None:
        q4 = estimate(cfg.with_overrides(["model.quantize=4bit", "train.precision=bf16"]), shapes=shapes,
                      free_bytes=64 * GIB)
        assert q4.peak_bytes == (q4.weights_bytes + q4.adapter_bytes + q4.optimizer_bytes + q4.activations_bytes
                                 + q4.runtime_bytes)


def test_a_rank_above_a_layer_is_refused_from_the_headers(tiny_llama):
    """The same sentence the built model gives (variants.base.check_ranks), before anything loads."""
    from studio.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^variant\.r: expected at most \d+ for this model \(model\.layers\.\d+\."):
        estimate(_config(tiny_llama).with_overrides(["variant.r=4096"]), free_bytes=64 * GIB)
    vera = _config(tiny_llama).with_overrides(["variant.name=vera", "variant.r=4096"])
    assert estimate(vera, free_bytes=64 * GIB).peak_bytes > 0   # VeRA's r is the shared width, not a rank
