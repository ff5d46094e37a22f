"""The Session beyond a plain run: pause and resume from another thread, and resuming a run
folder for variants that keep state outside the adapter (Delta-LoRA's moved W, LoRA-drop's ties)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading

import pytest

from safetensors.torch import load_file

from conftest import DATASETS
from studio.core.config import RunConfig
from studio.core.telemetry import read_events
from studio.core.training import RunControl, Session, planned_steps


def _config(tiny_llama, out, variant: dict, **train) -> RunConfig:
    raw = {
        "model": {"source": tiny_llama},
        "data": {"path": str(DATASETS / "chat_sample.jsonl"), "eval_fraction": 0.0, "max_seq_len": 64},
        "variant": variant,
        "train": {"output_dir": str(out), "max_steps": 6, "batch_size": 4, "learning_rate": 5e-3,
                  "save_every": 0, "eval_every": 0, "device": "cpu", "precision": "fp32", **train},
    }
    return RunConfig.from_dict(raw, "test")


def test_planned_steps_matches_trainer_arithmetic():
    assert planned_steps(10, 4, 1, 1.0, 0) == 3
    assert planned_steps(10, 4, 2, 1.0, 0) == 2
    assert planned_steps(10, 4, 1, 2.5, 0) == 8
    assert planned_steps(10, 4, 1, 1.0, 7) == 7


def test_pause_holds_between_steps_and_resume_continues(tiny_llama, tmp_path):
    control = RunControl()
    session = Session(_config(tiny_llama, tmp_path, {"name": "lora", "r": 4}), control=control)
    events: list[dict] = []
    paused = threading.Event()

    def sink(event):
        events.append(event)
        if event["type"] == "step" and event["step"] == 2:
            control.pause()
        if event["type"] == "paused":
            paused.set()

    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("r", session.run(sink=sink)))
    worker.start()
    try:
        assert paused.wait(timeout=300), "the run never paused"
        # the worker is parked between optimizer steps: nothing more happens until resume
        assert [e["step"] for e in events if e["type"] == "step"] == [1, 2]
        assert session.control.paused
    finally:
        control.resume()
        worker.join(timeout=300)
    assert not worker.is_alive()
    assert result["r"].status == "completed"
    kinds = [e["type"] for e in events]
    assert kinds.index("paused") < kinds.index("resumed")
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3, 4, 5, 6]


def truncate_log_after_checkpoint(run_dir, step: int) -> None:
    """Make a run folder's events.jsonl end where a run that died after checkpoint-<step> ends."""
    lines = (run_dir / "events.jsonl").read_text().splitlines(keepends=True)
    keep = []
    for line in lines:
        keep.append(line)
        event = json.loads(line)
        if event["type"] == "checkpoint" and event["step"] == step:
            break
    (run_dir / "events.jsonl").write_text("".join(keep))


def _resume_matches_uninterrupted(tiny_llama, tmp_path, variant: dict, forget: str | None = None):
    """`forget`: a variant option whose line is taken out of the broken run's config.toml, as a
    config written before the option existed lacks it."""
    cfg = _config(tiny_llama, tmp_path / "full", variant, save_every=3)
    full = Session(cfg).run()
    assert full.status == "completed", full.error
    expected = load_file(str(full.adapter_path / "adapter_model.safetensors"))

    # a copy of the run as it was when it died just after checkpoint-3
    broken = tmp_path / "broken" / full.run_dir.name
    shutil.copytree(full.run_dir, broken)
    shutil.rmtree(broken / "checkpoints" / "checkpoint-6")
    shutil.rmtree(broken / "adapter")
    truncate_log_after_checkpoint(broken, 3)
    if forget:
        text = (broken / "config.toml").read_text()
        kept = [line for line in text.splitlines(keepends=True) if not line.startswith(f"{forget} =")]
        assert len(kept) == len(text.splitlines()) - 1
        (broken / "config.toml").write_text("".join(kept))
    resumed_session = Session(RunConfig.from_toml(broken / "config.toml"), resume_dir=broken)
    resumed = resumed_session.run()
    assert resumed.status == "completed", resumed.error
    got = load_file(str(resumed.adapter_path / "adapter_model.safetensors"))
    assert got.keys() == expected.keys()
    assert all(got[k].shape == expected[k].shape for k in got)  # AdaLoRA: same pruned ranks
    worst = max((got[k] - expected[k]).abs().max().item() for k in got if got[k].numel())
    assert worst <= 1e-5, worst
    events = list(read_events(broken / "events.jsonl"))
    assert [e["step"] for e in events if e["type"] == "step"][-3:] == [4, 5, 6]
    return full, resumed_session


def test_delta_lora_resume_restores_the_moved_weights(tiny_llama, tmp_path):
    full, session = _resume_matches_uninterrupted(
        tiny_llama, tmp_path, {"name": "delta-lora", "r": 4, "start_step": 1, "update_ratio": 2.0})
    # the resumed model's W carries the updates of steps 2..5, as the uninterrupted one did
    w = session.model.base_model.model.model.layers[0].self_attn.q_proj.get_base_layer().weight
    from transformers import AutoModelForCausalLM

    w0 = AutoModelForCausalLM.from_pretrained(tiny_llama).model.layers[0].self_attn.q_proj.weight
    assert (w - w0).abs().max().item() > 1e-6


def test_lora_drop_resume_keeps_the_same_ties(tiny_llama, tmp_path):
    full, session = _resume_matches_uninterrupted(
        tiny_llama, tmp_path, {"name": "lora-drop", "r": 4, "threshold": 0.5})
    import json

    kept_full = json.loads((full.adapter_path / "lora_drop.json").read_text())["kept"]
    kept_resumed = json.loads((session.run_dir / "adapter" / "lora_drop.json").read_text())["kept"]
    assert kept_full == kept_resumed


def test_adalora_resume_keeps_its_rank_allocation(tiny_llama, tmp_path):
    """Resumed after the budget has started shrinking: full tensors, allocator state and the
    rank pattern come back, and the result matches the uninterrupted run."""
    _resume_matches_uninterrupted(
        tiny_llama, tmp_path, {"name": "adalora", "init_r": 6, "target_r": 2, "tinit": 1, "tfinal": 2})


@pytest.mark.parametrize("variant, option", [
    ({"name": "adalora", "init_r": 6, "target_r": 2, "tinit": 1, "tfinal": 2}, "lambda_lr_ratio"),
    ({"name": "vera", "r": 16}, "lr_ratio"),
])
def test_a_run_from_before_an_option_existed_resumes_as_it_started(tiny_llama, tmp_path, variant, option):
    """A run folder written before VeRA's lr_ratio and AdaLoRA's lambda_lr_ratio existed trained
    at the run's own rate; resumed, it goes on at that rate (the option's legacy value, not
    today's default), with optimizer state that fits, to the adapter of an uninterrupted run."""
    from studio.core.variants import get_variant

    field = next(f for f in dataclasses.fields(get_variant(variant["name"]).options_cls) if f.name == option)
    assert field.metadata["legacy"] == 1.0 != field.default
    _, session = _resume_matches_uninterrupted(tiny_llama, tmp_path, {**variant, option: 1.0}, forget=option)
    assert session.config.variant[option] == 1.0


def poison_lora_b_after_step_2(monkeypatch) -> None:
    """What a far too high learning rate does, made certain: LoRA's B turns NaN after step 2."""
    from transformers import TrainerCallback

    from studio.core.variants import get_variant

    class Poison(TrainerCallback):
        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:
                for name, param in model.named_parameters():
                    if "lora_B" in name:
                        param.data.fill_(float("nan"))

    # on the class: a run works with its own instance of the variant (Variant.for_run)
    monkeypatch.setattr(type(get_variant("lora")), "callbacks", lambda self, model, opts, ctx: [Poison()])


def test_a_nan_loss_fails_the_run_and_saves_no_adapter(tiny_llama, tmp_path, monkeypatch, recorder):
    """A diverged run must not report 'completed' or ship NaN weights as its adapter."""
    poison_lora_b_after_step_2(monkeypatch)
    result = Session(_config(tiny_llama, tmp_path, {"name": "lora", "r": 4}, save_every=2)).run(sink=recorder)
    assert result.status == "failed" and result.exit_code == 1
    assert "NaN or infinite at step 4" in result.error  # poisoned after step 3
    assert result.adapter_path is None and not (result.run_dir / "adapter").exists()
    # the last checkpoint is the good one from step 2
    assert [e["step"] for e in recorder.of("checkpoint")] == [2]


def test_mixed_precision_run_leaves_the_model_in_its_own_precision(tiny_llama, tmp_path):
    """accelerate wraps forward in autocast for bf16; after the run the model computes in fp32
    again (the wrapper is removed), so anything using it afterwards is not silently in bf16.
    (An fp32 base under bf16 autocast: model.dtype = fp32; auto would store the base in bf16.)"""
    import torch

    cfg = _config(tiny_llama, tmp_path, {"name": "lora", "r": 4}, max_steps=2, precision="bf16")
    session = Session(cfg.with_overrides(["model.dtype=fp32"]))
    result = session.run()
    assert result.status == "completed", result.error
    model = session.model
    assert "_original_forward" not in model.__dict__
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        base_dtype_logits = model.get_base_model()(input_ids=ids).logits
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, base_dtype_logits)


def test_a_nan_failed_run_resumes_from_its_last_good_checkpoint(tiny_llama, tmp_path, monkeypatch):
    """The failed run keeps checkpoint-2; once the cause is gone, --resume continues from it."""
    poison_lora_b_after_step_2(monkeypatch)
    failed = Session(_config(tiny_llama, tmp_path, {"name": "lora", "r": 4}, save_every=2)).run()
    assert failed.status == "failed" and "NaN" in failed.error
    monkeypatch.undo()
    run_dir = failed.run_dir
    resumed = Session(RunConfig.from_toml(run_dir / "config.toml"), resume_dir=run_dir).run()
    assert resumed.status == "completed", resumed.error
    events = list(read_events(run_dir / "events.jsonl"))
    started = [e for e in events if e["type"] == "run_started"]
    assert started[-1]["resumed_from"].endswith("checkpoint-2")
    assert [e["step"] for e in events[events.index(started[-1]):] if e["type"] == "step"] == [3, 4, 5, 6]
    weights = load_file(str(resumed.adapter_path / "adapter_model.safetensors"))
    assert all(bool(t.isfinite().all()) for t in weights.values())
    assert [e["status"] for e in events if e["type"] == "run_finished"] == ["failed", "completed"]


def test_throughput_after_a_pause_counts_the_step_only(tiny_llama, tmp_path):
    """Issue 20: the step a pause fell in reported 59,841 tokens/s against ~16 (the clock restarted
    at the resume, so the step seemed to last from the resume to its log). A paused second counts
    neither as step time nor as none."""
    control = RunControl()
    session = Session(_config(tiny_llama, tmp_path, {"name": "lora", "r": 4}), control=control)
    events: list[dict] = []
    paused = threading.Event()

    def sink(event):
        events.append(event)
        if event["type"] == "step" and event["step"] == 2:
            control.pause()
        if event["type"] == "paused":
            paused.set()

    worker = threading.Thread(target=lambda: session.run(sink=sink))
    worker.start()
    try:
        assert paused.wait(timeout=300)
        threading.Event().wait(1.0)   # a person looks at the charts for a second
    finally:
        control.resume()
        worker.join(timeout=300)
    rates = {e["step"]: e["tokens_per_s"] for e in events if e["type"] == "step"}
    others = sorted(v for k, v in rates.items() if k not in (1, 3))
    typical = others[len(others) // 2]
    assert typical / 4 < rates[3] < typical * 4, rates
