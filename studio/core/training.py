"""A training Session: one run of one RunConfig, on transformers' Trainer with a PEFT model.

    session = Session(RunConfig.from_toml("run.toml"))
    result = session.run(sink=print)          # blocks; call session.control.stop() from elsewhere

The Session makes the run folder (DESIGN.md: config.toml, events.jsonl, checkpoints/, adapter/),
loads the base model and the data, lets the chosen variant build its adapters, and runs the
Trainer with callbacks that turn the Trainer's logs into events, honour stop and pause requests
between optimizer steps, and keep variant state beside each checkpoint. A stopped run still saves
its adapter. `Session(config, resume_dir=RUN_FOLDER)` continues from the run's last checkpoint.

Everything heavy (torch, transformers, peft) is imported inside methods, so importing this module
is cheap for the window.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .config import RunConfig, resolved_paths
from .errors import ConfigError, StudioError, TrainingError
from .paths import atomic_dir, write_text_atomic
from .telemetry.events import EventLog, Sink, make_event, plain, read_events
from .telemetry.monitor import Telemetry
from .telemetry.monitor import make_callback as make_telemetry_callback
from .variants import BuildContext, get_variant

STATE_JSON = "studio_state.json"          # variant state (JSON) kept in the run folder and checkpoints
STATE_TENSORS = "studio_state.safetensors"


class RunControl:
    """Stop and pause requests, set from any thread, honoured between optimizer steps."""

    def __init__(self):
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # a paused run wakes up to stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_while_paused(self, timeout: float = 0.2) -> None:
        self._running.wait(timeout)


@dataclass
class RunResult:
    run_dir: Path
    status: str                   # completed, stopped, failed
    adapter_path: Path | None
    error: str | None = None
    exit_code: int = 0            # 0 ok, 1 failure while training, 2 bad input
    gallery_entry: str | None = None   # the adapter's name in the gallery, when it was added


def pick_device(requested: str):
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for, but torch sees no CUDA device "
                          "(is this the CPU build of torch?)")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.device: mps was asked for, but this machine has no Apple GPU")
    return torch.device(requested)


def pick_precision(requested: str, device) -> str:
    import torch

    if requested == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if requested == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision: fp16 needs a CUDA device, this run is on {device.type} "
                          "(use fp32 or bf16)")
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision: this GPU does not support bf16 (use fp16 or fp32)")
    return requested


def planned_steps(n_train: int, batch_size: int, grad_accum: int, epochs: float, max_steps: int,
                  world_size: int = 1) -> int:
    """Optimizer steps the Trainer will take (its own arithmetic, for AdaLoRA's schedule)."""
    if max_steps > 0:
        return max_steps
    batches = math.ceil(n_train / (batch_size * world_size))
    per_epoch = max(batches // grad_accum + int(batches % grad_accum > 0), 1)
    return max(math.ceil(epochs * per_epoch), 1)


def training_arguments(cfg: RunConfig, run_dir: Path, device, precision: str, has_eval: bool):
    """The Trainer's arguments for a run config. Logging every step feeds the live charts;
    the Trainer's own printing and reporting are off (events are the report)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=cfg.train.batch_size,
        per_device_eval_batch_size=cfg.train.batch_size,
        gradient_accumulation_steps=cfg.train.grad_accum,
        num_train_epochs=cfg.train.epochs,
        max_steps=cfg.train.max_steps if cfg.train.max_steps > 0 else -1,
        learning_rate=cfg.train.learning_rate,
        lr_scheduler_type=cfg.train.lr_scheduler,
        warmup_steps=cfg.train.warmup_steps,
        weight_decay=cfg.train.weight_decay,
        max_grad_norm=cfg.train.max_grad_norm if cfg.train.max_grad_norm > 0 else 0.0,
        activation_checkpointing=cfg.train.gradient_checkpointing,
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
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        label_names=["labels"],
    )


def new_run_dir(output_dir: str, variant: str) -> Path:
    base = Path(output_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        name = f"{stamp}-{variant}" + (f"-{i}" if i else "")
        path = base / name
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise TrainingError(f"train.output_dir: could not create a new run folder in {base}")


CHECKPOINT_DONE = "studio_complete"  # written last in a checkpoint: a crash mid-save leaves none


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that was written completely (Trainer state and our variant state)."""
    ckpts = [p for p in (run_dir / "checkpoints").glob("checkpoint-*")
             if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
             and (p / CHECKPOINT_DONE).is_file()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1])) if ckpts else None


def finished_status(run_dir: Path) -> str | None:
    """The status of the last run_finished event in a run folder's log, if any."""
    path = run_dir / "events.jsonl"
    status = None
    if path.is_file():
        for event in read_events(path):
            if event.get("type") == "run_finished":
                status = event.get("status")
    return status


def adapted_layers(model) -> list[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    names = []
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            names.append(name.removeprefix("base_model.model."))
    return names


class Session:
    """One run. `run()` blocks until the run ends and never raises for a failed run: the failure
    is a `run_finished` event with status `failed` and one readable sentence."""

    def __init__(self, config: RunConfig, *, resume_dir: str | Path | None = None,
                 control: RunControl | None = None):
        self.config = config
        self.resume_dir = Path(resume_dir) if resume_dir else None
        self.control = control or RunControl()
        self.run_dir: Path | None = None
        self.gallery_entry: str | None = None
        self.model = None
        self.tokenizer = None
        self._log: EventLog | None = None
        self._step = 0
        self._metrics: dict = {}
        self._timing: dict = {}   # train_s, telemetry_s (during training), final_telemetry_s
        self.telemetry = None
        self._paused_s = 0.0

    # -- the run -----------------------------------------------------------------------------

    def run(self, sink: Sink | None = None) -> RunResult:
        """Run to the end. Bad input (config, data, model) fails before the run folder is made,
        so a mistake leaves nothing behind; later failures are recorded in the folder."""
        self._sink = sink
        self._pending: list[dict] = []
        status, error, exit_code, adapter = "failed", None, 1, None
        try:
            self.config = resolved_paths(self.config)
            status, adapter = self._train()
            exit_code = 0
            if adapter is not None and self.config.train.gallery:
                self._add_to_gallery(status)
        except _StoppedBeforeStart:
            status, exit_code = "stopped", 0
        except StudioError as e:
            error, exit_code = str(e), e.exit_code
        except KeyboardInterrupt:
            error, exit_code, status = "interrupted", 130, "stopped"
        except Exception as e:  # a bug or a library failure: one line for people, the trace in the folder
            error = _one_line(e)
            if self.run_dir is not None:
                try:
                    (self.run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
                    error += f" (details in {self.run_dir / 'error.log'})"
                except OSError:  # the disk that failed the run may fail this too
                    pass
        finally:
            try:
                self._emit("run_finished", status=status, error=error,
                           adapter_path=str(adapter) if adapter else None, gallery_entry=self.gallery_entry,
                           **self._timing)
            except Exception:  # a full disk or a broken sink must not turn into a traceback
                pass
            finally:
                if self.telemetry is not None:
                    self.telemetry.release()
                if self._log is not None:
                    self._log.close()
        return RunResult(self.run_dir, status, adapter, error, exit_code, self.gallery_entry)

    def _add_to_gallery(self, status: str) -> None:
        """The saved adapter becomes a gallery entry; a failure here is reported, not fatal (the
        adapter is safe in the run folder, and `lora-studio gallery add RUN` can retry)."""
        from .gallery import Gallery

        try:
            self.gallery_entry = Gallery().add_run(self.run_dir, status=status).name
            self._progress(f"added to the gallery as {self.gallery_entry}")
        except (StudioError, OSError) as e:
            self._progress(f"warning: the adapter was not added to the gallery ({e})")

    def _open_run_folder(self) -> None:
        """Make (or reopen, when resuming) the run folder and start its event log with the events
        reported so far."""
        cfg = self.config
        try:
            if self.resume_dir is not None:
                self.run_dir = self.resume_dir
            else:
                self.run_dir = new_run_dir(cfg.train.output_dir, cfg.variant_name)
                write_text_atomic(self.run_dir / "config.toml", cfg.to_toml())
        except OSError as e:
            raise ConfigError(f"train.output_dir: cannot write the run folder ({e.strerror}: {e.filename})") from None
        self._log = EventLog(self.run_dir / "events.jsonl", forward=self._sink)
        for event in self._pending:
            self._log.write(event)
        self._pending = []

    def _emit(self, type: str, **payload) -> None:
        event = make_event(type, self._step, **payload)
        if type == "step" and payload.get("loss") is not None:
            self._metrics["loss"] = payload["loss"]
        elif type == "eval":
            self._metrics.update(payload)
        if self._log is not None:
            self._log(event)
            return
        event = plain(event)
        self._pending.append(event)
        if self._sink is not None:
            self._sink(event)

    def _progress(self, message: str) -> None:
        self._emit("progress", message=message)

    def _train(self):
        import datasets
        import torch
        import transformers
        from transformers import Trainer

        from .data import FALLBACK_CHAT_TEMPLATE, prepare_data
        from .models import load_model, load_tokenizer, resolve_source

        cfg = self.config
        if self.resume_dir is not None:
            if not (self.resume_dir / "config.toml").is_file():
                raise ConfigError(f"{self.resume_dir}: not a run folder (no config.toml)")
            if finished_status(self.resume_dir) == "completed":
                raise ConfigError(f"{self.resume_dir}: this run already completed; nothing to resume "
                                  "(start a new run with more steps)")
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
        device = pick_device(cfg.train.device)
        precision = pick_precision(cfg.train.precision, device)
        variant = get_variant(cfg.variant_name)
        opts = cfg.variant_options()

        resolved = resolve_source(cfg.model.source, cfg.model.trust_remote_code, progress=self._progress)
        self._check_cancelled()
        self.tokenizer = load_tokenizer(resolved, cfg.model.trust_remote_code)
        self._progress("reading the dataset")
        data = prepare_data(cfg.data, self.tokenizer, cfg.model.task, seed=cfg.train.seed)
        self._check_cancelled()
        if data.chat_template_used == "fallback-chatml":
            # saved with the adapter, so generation formats prompts the way training did
            self.tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
        self._progress("loading the base model")
        # fp32 master weights: bf16/fp16 training is autocast on top (and Delta-LoRA's small
        # per-step updates of W would round away in a bf16 weight)
        base = load_model(resolved, cfg.model.task, label_names=data.label_names, dtype=torch.float32,
                          trust_remote_code=cfg.model.trust_remote_code, pad_token_id=self.tokenizer.pad_token_id)
        base.to(device)
        self._check_cancelled()

        total = planned_steps(len(data.train), cfg.train.batch_size, cfg.train.grad_accum, cfg.train.epochs,
                              cfg.train.max_steps)
        if self.resume_dir is not None:
            done = last_checkpoint(self.resume_dir)
            if done is not None and int(done.name.split("-")[-1]) >= total:
                raise ConfigError(f"{self.resume_dir}: already completed ({done.name} of {total} steps); "
                                  "nothing to resume (raise train.max_steps or epochs in a new run)")
        saved_state = self._saved_state()
        ctx = BuildContext(task=cfg.model.task, total_steps=total, learning_rate=cfg.train.learning_rate,
                           weight_decay=cfg.train.weight_decay, seed=cfg.train.seed, device=device,
                           train_dataset=data.train, collator=data.collator, batch_size=cfg.train.batch_size,
                           emit=lambda ev: self._emit(ev.pop("type"), **ev),
                           should_stop=lambda: self.control.stop_requested, saved_state=saved_state,
                           state=dict(saved_state))
        transformers.set_seed(cfg.train.seed)
        model = variant.build(base, opts, ctx)
        model.to(device)
        self.model = model
        if self.control.stop_requested and self.resume_dir is None:
            raise _StoppedBeforeStart()
        self._open_run_folder()
        write_text_atomic(self.run_dir / STATE_JSON, json.dumps(ctx.state, indent=1))

        checkpoint = last_checkpoint(self.run_dir) if self.resume_dir else None
        if self.resume_dir is not None and checkpoint is None:
            self._progress("no checkpoint in this run folder yet: starting from the beginning")
        if checkpoint is not None:
            self._restore_checkpoint(model, variant, opts, checkpoint, ctx)

        trainable, total_params = model.get_nb_trainable_parameters()
        self._emit("run_started", config=cfg.to_dict(), trainable_params=int(trainable),
                   total_params=int(total_params), adapted_layers=adapted_layers(model), device=str(device),
                   precision=precision, total_steps=total, train_examples=len(data.train),
                   eval_examples=len(data.eval) if data.eval is not None else 0, data_format=data.format,
                   resumed_from=str(checkpoint) if checkpoint else None, run_dir=str(self.run_dir))

        args = training_arguments(cfg, self.run_dir, device, precision, has_eval=data.eval is not None)
        optimizer = variant.make_optimizer(model, opts, ctx)
        event_callback = _event_callback(self, variant, opts)
        self.telemetry = Telemetry(model, variant, opts, emit=lambda ev: self._emit(ev.pop("type"), **ev),
                                   every=cfg.telemetry.every, dense_every=cfg.telemetry.dense_every,
                                   budget=cfg.telemetry.budget / 100)
        # telemetry last: it sees each step after the variant's own callbacks (AdaLoRA's allocation)
        callbacks = ([event_callback] + list(variant.callbacks(model, opts, ctx))
                     + [make_telemetry_callback(self.telemetry)])
        trainer = Trainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                          data_collator=data.collator, callbacks=callbacks,
                          optimizers=(optimizer, None),
                          compute_metrics=_accuracy if cfg.model.task == "sequence-classification" else None)
        # our sink reports progress; the Trainer's own printer would write dicts to stdout
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)

        if self.control.stop_requested:
            return "stopped", self._save_adapter(model, variant, opts, resolved)
        if checkpoint is not None:
            # The weights are already in place (_restore_checkpoint, through the variant, which
            # knows its own layout: AdaLoRA's saved adapter is pruned, Delta-LoRA's W moved). The
            # Trainer still restores optimizer, scheduler, RNG and data position from the folder.
            trainer._load_from_checkpoint = lambda *args, **kwargs: None
        started = time.perf_counter()
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except torch.cuda.OutOfMemoryError:
            raise TrainingError("out of GPU memory: lower train.batch_size or data.max_seq_len, "
                                "or set train.gradient_checkpointing = true") from None
        finally:
            # bf16/fp16: accelerate wrapped model.forward in autocast and the Trainer leaves it so;
            # restore the plain forward, so the model computes in its own fp32 after the run
            trainer.accelerator.unwrap_model(model, keep_fp32_wrapper=False)
        self._timing = {"train_s": time.perf_counter() - started - self._paused_s, "paused_s": self._paused_s,
                        "telemetry_s": self.telemetry.spent,
                        "telemetry_postponed": self.telemetry.postponed}
        self._step = trainer.state.global_step
        if event_callback.diverged_at is not None:
            raise TrainingError(f"the loss became NaN or infinite at step {event_callback.diverged_at}: "
                                "lower train.learning_rate (no adapter was saved)")
        spent = self.telemetry.spent
        self.telemetry.finish(self._step)   # the last word on the adapter being saved
        self._timing["final_telemetry_s"] = self.telemetry.spent - spent
        finished = trainer.state.global_step >= trainer.state.max_steps
        status = "completed" if finished or not self.control.stop_requested else "stopped"
        return status, self._save_adapter(model, variant, opts, resolved)

    # -- pieces ------------------------------------------------------------------------------

    def _check_cancelled(self) -> None:
        """Preparation (a GGUF conversion, tokenization, loading) runs before any folder exists;
        a stop asked meanwhile ends the run at the next phase boundary with nothing written."""
        if self.control.stop_requested and self.resume_dir is None:
            raise _StoppedBeforeStart()

    def _saved_state(self) -> dict:
        if self.resume_dir is None:
            return {}
        path = self.resume_dir / STATE_JSON
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        return {}

    def _restore_checkpoint(self, model, variant, opts, checkpoint: Path, ctx) -> None:
        """Put the checkpoint's adapter weights and the variant's extra state into the model
        before the Trainer loads optimizer, scheduler and data position from the same folder."""
        from safetensors.torch import load_file

        variant.load_checkpoint_weights(model, opts, checkpoint)
        tensors_path = checkpoint / STATE_TENSORS
        tensors = load_file(str(tensors_path)) if tensors_path.is_file() else {}
        variant.restore_state(model, opts, tensors, ctx)
        self._step = int(checkpoint.name.split("-")[-1])
        self._progress(f"resuming from {checkpoint.name}")

    def save_checkpoint_state(self, checkpoint: Path, variant, opts) -> None:
        from safetensors.torch import save_file

        tensors = variant.checkpoint_state(self.model, opts)
        if tensors:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                      str(checkpoint / STATE_TENSORS))
        state_json = self.run_dir / STATE_JSON
        if state_json.is_file():
            write_text_atomic(checkpoint / STATE_JSON, state_json.read_text(encoding="utf-8"))

    def _save_adapter(self, model, variant, opts, resolved) -> Path:
        final = self.run_dir / "adapter"
        with atomic_dir(final) as tmp:
            variant.export_adapter(model, opts, tmp)
            meta = {"base_model": resolved.source, "base_path": resolved.path,
                    "base_fingerprint": resolved.fingerprint, "task": self.config.model.task,
                    "variant": self.config.variant_name, "options": self.config.variant,
                    "run": str(self.run_dir), "step": self._step, "metrics": self._final_metrics()}
            id2label = getattr(getattr(model, "config", None), "id2label", None)
            if self.config.model.task == "sequence-classification" and id2label:
                meta["labels"] = [str(id2label[i]) for i in sorted(id2label)]
            (tmp / "studio.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(tmp))
        return final

    def _final_metrics(self) -> dict:
        return dict(self._metrics)


class _StoppedBeforeStart(StudioError):
    """Stop was pressed while the model was still loading: nothing to save, no folder made."""

    exit_code = 0

    def __init__(self):
        super().__init__("stopped before training started")


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


def _finite(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and math.isfinite(value))


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _accuracy(eval_pred) -> dict:
    import numpy as np

    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def _build_event_callback_class():
    from transformers import TrainerCallback

    class EventCallback(TrainerCallback):
        """Trainer logs -> events; stop/pause between optimizer steps; variant state at checkpoints."""

        def __init__(self, session: Session, variant, opts):
            self.session = session
            self.variant = variant
            self.opts = opts
            self._last_time = None
            self._last_tokens = 0
            self.diverged_at = None   # the step whose loss or gradient was NaN/inf

        def on_train_begin(self, args, state, control, **kwargs):
            self._last_time = time.perf_counter()
            self._last_tokens = state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            s = self.session
            s._step = state.global_step
            if s.control.paused and not s.control.stop_requested:
                s._emit("paused")
                waited = time.perf_counter()
                while s.control.paused and not s.control.stop_requested:
                    s.control.wait_while_paused()
                waited = time.perf_counter() - waited
                s._paused_s += waited
                if s.telemetry is not None:   # a pause earns telemetry no time budget
                    s.telemetry.idle(waited)
                if not s.control.stop_requested:
                    s._emit("resumed")
                self._restart_clock()  # a pause is not slow training
            if s.control.stop_requested:
                control.should_training_stop = True
                control.should_save = True  # a checkpoint, so that --resume continues from here

        def on_log(self, args, state, control, logs=None, **kwargs):
            s = self.session
            logs = dict(logs or {})
            if "loss" in logs:
                if not all(_finite(logs.get(k)) for k in ("loss", "grad_norm")):
                    self.diverged_at = state.global_step
                    control.should_training_stop = True
                    control.should_save = False  # keep the last good checkpoint the newest
                now = time.perf_counter()
                tokens = state.num_input_tokens_seen
                dt = now - (self._last_time or now)
                tps = (tokens - self._last_tokens) / dt if dt > 0 else None
                self._last_time, self._last_tokens = now, tokens
                s._emit("step", loss=logs.get("loss"), lr=logs.get("learning_rate"),
                        grad_norm=logs.get("grad_norm"), tokens_per_s=tps, epoch=logs.get("epoch"),
                        total_steps=state.max_steps, memory_mb=memory_mb(args.device))
                if s.control.stop_requested:  # asked while this step was being reported
                    control.should_training_stop = True
                    control.should_save = True
            elif any(k.startswith("eval_") for k in logs):
                s._emit("eval", **{k: v for k, v in logs.items() if k.startswith("eval_") or k == "epoch"})

        def _restart_clock(self):
            self._last_time = time.perf_counter()

        def on_evaluate(self, args, state, control, **kwargs):
            self._restart_clock()  # evaluation time is not training throughput

        def on_save(self, args, state, control, **kwargs):
            s = self.session
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if path.is_dir():
                s.save_checkpoint_state(path, self.variant, self.opts)
                (path / CHECKPOINT_DONE).write_text("", encoding="utf-8")
                s._emit("checkpoint", path=str(path))
            self._restart_clock()

    return EventCallback


def _event_callback(session, variant, opts):
    return _build_event_callback_class()(session, variant, opts)
