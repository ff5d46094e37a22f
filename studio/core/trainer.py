"""transformers' Trainer as a run drives it: its arguments for a run config, the StudioTrainer
subclass, the EventCallback that turns its logs into events, and `fit`, which runs it.

This module imports transformers when it is imported: training.Session imports it only once the
model is loaded, so that importing training stays cheap for the window.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from . import checkpoints, distributed
from .config import RunConfig
from .errors import TrainingError
from .failures import finite, out_of_memory


def training_arguments(cfg: RunConfig, run_dir: Path, device, precision: str, has_eval: bool,
                       padding_free: bool = False, world: distributed.World | None = None) -> TrainingArguments:
    """The Trainer's arguments for a run config. Logging every step feeds the live charts;
    the Trainer's own printing and reporting are off (events are the report). Padding-free
    batches have no attention_mask to count real tokens by; their few pad tokens (a row's tail)
    are counted with the rest. On several processes (distributed.py) each takes its share of
    train.batch_size."""
    world = world or distributed.World()
    batch = distributed.per_process_batch(cfg.train.batch_size, world)
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        gradient_accumulation_steps=cfg.train.grad_accum,
        num_train_epochs=cfg.train.epochs,
        max_steps=cfg.train.max_steps if cfg.train.max_steps > 0 else -1,
        learning_rate=cfg.train.learning_rate,
        # transformers' "constant" ignores warmup_steps; with a warmup it is constant_with_warmup
        lr_scheduler_type=("constant_with_warmup" if cfg.train.lr_scheduler == "constant" and cfg.train.warmup_steps > 0
                           else cfg.train.lr_scheduler),
        warmup_steps=cfg.train.warmup_steps,
        weight_decay=cfg.train.weight_decay,
        max_grad_norm=cfg.train.max_grad_norm if cfg.train.max_grad_norm > 0 else 0.0,
        # under FSDP the launcher's config checkpoints activations (the Trainer refuses both)
        activation_checkpointing=cfg.train.gradient_checkpointing and not _fsdp_checkpoints_activations(world),
        # non-reentrant: with frozen embeddings the reentrant variant sees no input needing grad
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.train.gradient_checkpointing else None,
        logging_strategy="steps", logging_steps=1,
        logging_nan_inf_filter=False,  # a NaN must reach our callback, not be logged as 0
        eval_strategy="steps" if (cfg.train.eval_every > 0 and has_eval) else "no",
        eval_steps=cfg.train.eval_every or None,
        save_strategy="steps" if cfg.train.save_every > 0 else "no",
        save_steps=cfg.train.save_every or 500,
        seed=cfg.train.seed,
        use_cpu=device.type == "cpu",
        bf16=precision == "bf16", fp16=precision == "fp16",
        report_to=[], disable_tqdm=True, remove_unused_columns=False,
        include_num_input_tokens_seen="all" if padding_free else "non_padding",
        dataloader_num_workers=0,
        label_names=["labels"],
        # every trainable parameter of every variant takes part in each forward (DDP then skips
        # its search for unused ones, a walk of the autograd graph per step)
        ddp_find_unused_parameters=False,
        # several processes: a causal LM's loss is summed over label tokens and divided by the
        # count of all processes (the Trainer then multiplies by their number, as DDP averages);
        # a classifier's loss is a mean that ignores that count, so it must not be multiplied
        average_tokens_across_devices=cfg.model.task == "causal-lm",
    )


def _fsdp_checkpoints_activations(world: distributed.World | None) -> bool:
    return (world is not None and world.mode == "fsdp"
            and os.environ.get("FSDP_ACTIVATION_CHECKPOINTING", "").lower() in distributed.TRUE)


class StudioTrainer(Trainer):
    """The Trainer, with the variant's optimizer made late and resuming over restored weights.

    `variant_optimizer(model)`: FSDP and DeepSpeed wrap the model before the optimizer may see
    its parameters, so there the variant's optimizer is made in create_optimizer (the override
    point the Trainer documents for this) from the wrapped model; None keeps the Trainer's own.

    `weights_restored`: resuming, the run has already put the checkpoint's weights into the model
    through the variant (checkpoints.restore), which knows its own layout: AdaLoRA's saved adapter
    is pruned (peft's loader would resize the live model to it, under an optimizer state saved for
    the full tensors), Delta-LoRA's W moved and is not in the adapter file at all. The Trainer
    must still restore optimizer, scheduler, RNG and data position, which only
    `train(resume_from_checkpoint=...)` does, and that also loads the weights again through
    `_load_from_checkpoint` (before accelerator.prepare, or after it under FSDP). This class
    overrides that method to do nothing then; it has no public switch. The override is a method
    of the class, checked by the resume tests (tests/core/test_session.py, test_crash_safety.py,
    which compare the resumed loss curve with an unbroken run's), so a transformers release that
    renames or stops calling it fails there, not silently.
    """

    def __init__(self, *args, variant_optimizer=None, weights_restored: bool = False, **kwargs):
        self.variant_optimizer = variant_optimizer
        self.weights_restored = weights_restored
        super().__init__(*args, **kwargs)
        # events are the report: the Trainer's own printer would write dicts to stdout
        self.remove_callback(PrinterCallback)
        self.remove_callback(ProgressCallback)

    def create_optimizer(self, model=None):
        if self.variant_optimizer is not None and self.optimizer is None:
            self.optimizer = self.variant_optimizer(model if model is not None else self.model)
        if self.variant_optimizer is None or self.optimizer is None:
            return super().create_optimizer(model)
        return self.optimizer

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if self.weights_restored:
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)


def fit(trainer: Trainer, model, checkpoint: Path | None, estimate: str) -> None:
    """Train (from `checkpoint`, when resuming); running out of memory is one TrainingError with
    the memory plan's `estimate` beside it."""
    import torch

    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except torch.cuda.OutOfMemoryError:
        raise TrainingError(out_of_memory("cuda", estimate)) from None
    except MemoryError:
        raise TrainingError(out_of_memory("cpu", estimate)) from None
    finally:
        # bf16/fp16: accelerate wrapped model.forward in autocast and the Trainer leaves it so;
        # restore the plain forward, so the model computes in its own fp32 after the run
        trainer.accelerator.unwrap_model(model, keep_fp32_wrapper=False)


def accuracy(eval_pred) -> dict:
    import numpy as np

    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def memory_mb(device) -> float | None:
    """Memory in use, in MiB: the CUDA allocator's live bytes on a GPU (a host-side counter, no
    sync), this process's resident set on the CPU (Linux /proc; None elsewhere)."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return torch.cuda.memory_allocated(device) / 2**20
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class EventCallback(TrainerCallback):
    """Trainer logs -> events; stop/pause between optimizer steps; variant state at checkpoints.

    `session` is the training.Session running: its control, world, telemetry, step, emit() and
    save_checkpoint_state() are what this uses."""

    def __init__(self, session, variant, opts):
        self.session = session
        self.variant = variant
        self.opts = opts
        self._last_time = None
        self._last_tokens = 0
        self.diverged_at = None   # the step whose loss or gradient was NaN/inf
        self.paused_s = 0.0       # time spent paused

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time = time.perf_counter()
        self._last_tokens = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        s = self.session
        s.step = state.global_step
        if s.control.paused and not s.control.stop_requested:
            s.emit("paused")
            waited = time.perf_counter()
            while s.control.paused and not s.control.stop_requested:
                s.control.wait_while_paused()
            waited = time.perf_counter() - waited
            self.paused_s += waited
            if s.telemetry is not None:   # a pause earns telemetry no time budget
                s.telemetry.idle(waited)
            if not s.control.stop_requested:
                s.emit("resumed")
            # a pause is neither slow training nor part of the step: the clock skips it. (This
            # runs between the step and its log; restarting the clock here made the step last
            # only from the resume to the log: 59,841 tokens/s against ~16.)
            if self._last_time is not None:
                self._last_time += waited
        stop = s.control.stop_requested
        if s.world.distributed:   # every process stops at the same step, or none does
            stop = distributed.anyone(stop, args.device)
            if stop:
                s.control.stop()   # so that every process reports the run as stopped
        if stop:
            control.should_training_stop = True
            control.should_save = True  # a checkpoint, so that --resume continues from here

    def on_log(self, args, state, control, logs=None, **kwargs):
        s = self.session
        logs = dict(logs or {})
        if "loss" in logs:
            if not all(finite(logs.get(k)) for k in ("loss", "grad_norm")):
                self.diverged_at = state.global_step
                control.should_training_stop = True
                control.should_save = False  # keep the last good checkpoint the newest
            now = time.perf_counter()
            tokens = state.num_input_tokens_seen
            dt = now - (self._last_time or now)
            tps = (tokens - self._last_tokens) / dt if dt > 0 else None
            self._last_time, self._last_tokens = now, tokens
            s.emit("step", loss=logs.get("loss"), lr=logs.get("learning_rate"),
                   grad_norm=logs.get("grad_norm"), tokens_per_s=tps, epoch=logs.get("epoch"),
                   total_steps=state.max_steps, memory_mb=memory_mb(args.device))
            if s.control.stop_requested and not s.world.distributed:  # asked while this step was reported
                control.should_training_stop = True
                control.should_save = True
        elif any(k.startswith("eval_") for k in logs):
            s.emit("eval", **{k: v for k, v in logs.items() if k.startswith("eval_") or k == "epoch"})

    def _restart_clock(self):
        self._last_time = time.perf_counter()

    def on_evaluate(self, args, state, control, **kwargs):
        self._restart_clock()  # evaluation time is not training throughput

    def on_save(self, args, state, control, **kwargs):
        s = self.session
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        # every process has written its part (its RNG state) before the marker says it is whole
        distributed.barrier(s.world)
        if path.is_dir() and s.world.is_main:
            s.save_checkpoint_state(path, self.variant, self.opts)
            checkpoints.mark_complete(path)   # on disk before the marker says the checkpoint is whole
            s.emit("checkpoint", path=str(path))
        self._restart_clock()
