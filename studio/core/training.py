"""A training Session: one run of one RunConfig, from the config to a saved adapter.

    session = Session(RunConfig.from_toml("run.toml"))
    result = session.run(sink=print)          # blocks; call session.control.stop() from elsewhere

`Session.run` reads top to bottom: prepare (the base model, the data, the variant's adapters:
bad input fails here, before the run folder exists) → open the run folder → resume from its
last checkpoint, when there is one → fit (the Trainer) → save the adapter (a stopped run saves
it too) → add it to the gallery. `Session(config, resume_dir=RUN_FOLDER)` continues a run.

The pieces live beside it: runfolder.py (the folder, its lock, crash cleanup), checkpoints.py
(the variant's state in checkpoints, resume checks), trainer.py (the Trainer, its arguments and
the callback that turns its logs into events), batchlayout.py (padding-free batches),
failures.py (a failure as one sentence), devices.py (device and storage).

Crash safety: a run killed at any point (SIGKILL, power cut) resumes from its newest complete
checkpoint and continues the same loss curve; on resume the event log is cut back to its last
whole line, and what the killed process left half-written is removed. A full disk, an
exception, running out of memory or a NaN loss end the run `failed` with one sentence, and keep
every checkpoint saved before. One process trains a run folder at a time.

Everything heavy (torch, transformers, peft) is imported inside methods, so importing this module
is cheap for the window.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import batchlayout, checkpoints, distributed, failures, preparation
from .batchlayout import BatchLayout
from .config import RunConfig, legacy_options, resolved_paths
from .devices import pick_device, pick_storage
from .errors import StudioError, TrainingError, one_line
from .names import PEFT_PREFIX
from .paths import DiskFullError, atomic_dir
from .runfolder import (check_resumable, claim, clean_after_crash, incomplete_checkpoints, last_checkpoint,
                        new_run_dir, open_run_folder, release)
from .telemetry.events import EventLog, Sink, make_event, plain, read_events
from .telemetry.monitor import Telemetry
from .telemetry.monitor import make_callback as make_telemetry_callback
from .variants import BuildContext, get_variant

__all__ = ["RunControl", "RunResult", "Session", "planned_steps", "metrics_from_events", "adapted_layers",
           "last_checkpoint", "incomplete_checkpoints", "new_run_dir", "pick_device", "pick_storage"]


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
    error_field: str | None = None     # the config field the error is about ("variant.r"), if any


def planned_steps(n_train: int, batch_size: int, grad_accum: int, epochs: float, max_steps: int,
                  world_size: int = 1) -> int:
    """Optimizer steps the Trainer will take (its own arithmetic, for AdaLoRA's schedule)."""
    if max_steps > 0:
        return max_steps
    batches = math.ceil(n_train / (batch_size * world_size))
    per_epoch = max(batches // grad_accum + int(batches % grad_accum > 0), 1)
    return max(math.ceil(epochs * per_epoch), 1)


def metrics_from_events(events, upto_step: int) -> dict:
    """The final-metrics record (last loss, last eval) as a run had it at `upto_step`."""
    metrics: dict = {}
    for event in events:
        if not isinstance(event.get("step"), int) or event["step"] > upto_step:
            continue
        if event.get("type") == "step" and event.get("loss") is not None:
            metrics["loss"] = event["loss"]
        elif event.get("type") == "eval":
            metrics.update({k: v for k, v in event.items() if k not in ("type", "step", "time")})
    return metrics


def adapted_layers(model) -> list[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [name.removeprefix(PEFT_PREFIX) for name, module in model.named_modules()
            if isinstance(module, BaseTunerLayer)]


@dataclass
class _Prepared:
    """What a run has once its model is built, before its folder exists."""
    device: object
    held: object                  # storage.Storage
    resolved: object              # models.resolve_source's answer
    data: object                  # data.PreparedData, its collator laid out (batchlayout.py)
    layout: BatchLayout | None    # None: not a causal LM
    variant: object
    opts: object
    ctx: BuildContext
    model: object
    total: int                    # planned optimizer steps


class Session:
    """One run. `run()` blocks until the run ends and never raises for a failed run: the failure
    is a `run_finished` event with status `failed` and one readable sentence."""

    def __init__(self, config: RunConfig, *, resume_dir: str | Path | None = None,
                 control: RunControl | None = None, callbacks: list | None = None):
        self.config = config
        self.extra_callbacks = list(callbacks or [])   # more TrainerCallbacks (benchmarks, launchers)
        self.resume_dir = Path(resume_dir) if resume_dir else None
        self.control = control or RunControl()
        self.run_dir: Path | None = None
        self.gallery_entry: str | None = None
        self.model = None
        self.variant = None     # the run's own instance of its variant (Variant.for_run), once prepared
        self.tokenizer = None
        self.telemetry = None
        self.step = 0                 # the optimizer step events are stamped with
        self.world = distributed.world()   # one process, or one of several (accelerate launch)
        self._log: EventLog | None = None
        self._metrics: dict = {}
        self._timing: dict = {}   # train_s, telemetry_s (during training), final_telemetry_s
        self._estimate = ""   # the memory plan's peak, told beside an out-of-memory failure

    # -- the run -----------------------------------------------------------------------------

    def run(self, sink: Sink | None = None) -> RunResult:
        """Run to the end. Bad input (config, data, model) fails before the run folder is made,
        so a mistake leaves nothing behind; later failures are recorded in the folder."""
        self._sink = sink
        self._pending: list[dict] = []
        status, error, exit_code, adapter, error_field = "failed", None, 1, None, None
        try:
            self.config = resolved_paths(self.config)
            if self.resume_dir is not None and (self.resume_dir / "config.toml").is_file():
                self.config = legacy_options(self.config, self.resume_dir / "config.toml")
            prep = self._prepare()
            self._open_run_folder()
            checkpoint = self._resume(prep)
            self._announce(prep, checkpoint)
            status, adapter = self._fit(prep, checkpoint)
            exit_code = 0
            if adapter is not None and self.config.train.gallery and self.world.is_main:
                self._add_to_gallery(status)
        except _StoppedBeforeStart:
            status, exit_code = "stopped", 0
        except StudioError as e:
            if isinstance(e, DiskFullError):
                e = self._as_disk_full(e) or e
            error, exit_code, error_field = str(e), e.exit_code, getattr(e, "field", None)
        except KeyboardInterrupt:
            error, exit_code, status = "interrupted", 130, "stopped"
        except MemoryError:
            error = failures.out_of_memory("cpu", self._estimate)
        except Exception as e:  # a bug or a library failure: one line for people, the trace in the folder
            error = failures.sentence(e, full=self._as_disk_full(e), estimate=self._estimate, world=self.world,
                                      run_dir=self.run_dir)
        finally:
            self._finish(status, error, error_field, adapter)
        return RunResult(self.run_dir, status, adapter, error, exit_code, self.gallery_entry, error_field)

    def _prepare(self) -> _Prepared:
        """Everything before the run folder exists (preparation.py): the base model, the data and
        the variant's adapters. A stop asked meanwhile ends the run with nothing written."""
        cfg, w, say = self.config, self.world, self._progress
        if self.resume_dir is not None:
            check_resumable(self.resume_dir, w.is_main)
        preparation.quiet_libraries()
        device = pick_device(cfg.train.device)
        held = pick_storage(cfg, device)
        variant, opts = get_variant(cfg.variant_name).for_run(), cfg.variant_options()   # its own state
        self.variant = variant
        if w.distributed:
            device = preparation.start_processes(cfg, w, device, held.compute, say)
        resolved = preparation.find_base(cfg, w, say, self._main_first)
        self._check_cancelled()
        self.tokenizer, data = preparation.read_data(cfg, w, resolved, say, self._main_first)
        self._check_cancelled()
        preparation.keep_chat_template(cfg, self.tokenizer, data, say)
        self._estimate = failures.plan_estimate(cfg, str(resolved.path), device)
        base = preparation.load_base(cfg, resolved, data, held, device, self.tokenizer, say)
        self._check_cancelled()
        layout = batchlayout.for_run(cfg, base, data.collator, device, say)
        if layout is not None:   # the collator is laid out before any variant sees a batch
            data = dataclasses.replace(data, collator=layout.collator(data.collator))
        total = planned_steps(len(data.train), cfg.train.batch_size, cfg.train.grad_accum, cfg.train.epochs,
                              cfg.train.max_steps)
        ctx, self.model = preparation.build_adapters(
            cfg, base, variant, opts, data, device, held, total_steps=total,
            saved_state=checkpoints.saved_state(self.resume_dir), emit=lambda ev: self.emit(ev.pop("type"), **ev),
            # several processes must build the same model: a stop waits for the first step
            should_stop=lambda: self.control.stop_requested and not w.distributed)
        self._check_cancelled()
        return _Prepared(device, held, resolved, data, layout, variant, opts, ctx, self.model, total)

    def _resume(self, prep: _Prepared) -> Path | None:
        """The checkpoint this run continues from (None: from the beginning), its weights and
        the variant's state put back into the model."""
        model = prep.model
        if self.world.is_main:
            checkpoints.write_state(self.run_dir, prep.ctx.state)
        checkpoint = last_checkpoint(self.run_dir) if self.resume_dir else None
        if self.resume_dir is not None and checkpoint is None:
            self._progress("no checkpoint in this run folder yet: starting from the beginning")
        if checkpoint is not None:
            self.step = checkpoints.restore(model, prep.variant, prep.opts, checkpoint, prep.ctx)
            self._progress(f"resuming from {checkpoint.name}")
            self._metrics = metrics_from_events(read_events(self.run_dir / "events.jsonl"), self.step)
        return checkpoint

    def _announce(self, prep: _Prepared, checkpoint: Path | None) -> None:
        """run_started: what this run trains, on what, and where it resumed from."""
        cfg, w, model, data = self.config, self.world, prep.model, prep.data
        trainable, total_params = model.get_nb_trainable_parameters()
        self.emit("run_started", config=cfg.to_dict(), trainable_params=int(trainable),
                  total_params=int(total_params), adapted_layers=adapted_layers(model), device=str(prep.device),
                  precision=prep.held.compute, base_dtype=prep.held.dtype, quantize=prep.held.quantize,
                  total_steps=prep.total, train_examples=len(data.train),
                  eval_examples=len(data.eval) if data.eval is not None else 0, data_format=data.format,
                  resumed_from=str(checkpoint) if checkpoint else None, run_dir=str(self.run_dir),
                  processes=w.size, launch=w.mode, **(prep.layout.event_fields() if prep.layout else {}))

    def _fit(self, prep: _Prepared, checkpoint: Path | None) -> tuple[str, Path]:
        """Train with the Trainer (trainer.py) and save the adapter: (status, adapter folder)."""
        from .trainer import EventCallback, StudioTrainer, accuracy, fit, training_arguments

        cfg, w, model, variant, opts, ctx = self.config, self.world, prep.model, prep.variant, prep.opts, prep.ctx
        data = prep.data
        args = training_arguments(cfg, self.run_dir, prep.device, prep.held.compute, has_eval=data.eval is not None,
                                  padding_free=bool(prep.layout and prep.layout.padding_free), world=w)
        # FSDP and DeepSpeed wrap the model before the optimizer may see its parameters: there
        # the Trainer asks for the variant's optimizer itself (create_optimizer), after wrapping
        late_optimizer = w.mode in ("fsdp", "deepspeed")
        optimizer = None if late_optimizer else variant.make_optimizer(model, opts, ctx)
        events = EventCallback(self, variant, opts)
        self.telemetry = Telemetry(model, variant, opts, emit=lambda ev: self.emit(ev.pop("type"), **ev),
                                   every=cfg.telemetry.every, dense_every=cfg.telemetry.dense_every,
                                   budget=cfg.telemetry.budget / 100)
        # telemetry last: it sees each step after the variant's own callbacks (AdaLoRA's allocation).
        # It measures in the main process only (the others hold the same weights), and not at all
        # when the weights are sharded (FSDP): no process then holds a whole adapter.
        measure = w.is_main and not w.sharded
        callbacks = ([events] + list(variant.callbacks(model, opts, ctx))
                     + ([make_telemetry_callback(self.telemetry)] if measure else []) + self.extra_callbacks)
        trainer = StudioTrainer(
            model=model, args=args, train_dataset=data.train, eval_dataset=data.eval, data_collator=data.collator,
            callbacks=callbacks, optimizers=(optimizer, None),
            compute_metrics=accuracy if cfg.model.task == "sequence-classification" else None,
            variant_optimizer=(lambda m: variant.make_optimizer(m, opts, ctx)) if late_optimizer else None,
            # resuming: the weights are in place already (_resume, through the variant); the
            # Trainer restores optimizer, scheduler, RNG and data position (StudioTrainer says why)
            weights_restored=checkpoint is not None)
        if w.distributed and args.average_tokens_across_devices and trainer.model_accepts_loss_kwargs:
            variant.scale_loss_terms(model, opts, w.size)

        if self.control.stop_requested and not w.distributed:
            return "stopped", self._save_adapter(model, variant, opts, prep.resolved)
        if checkpoint is not None and self.step >= prep.total:
            # killed after its last checkpoint, while (or before) saving the adapter: no step is left
            self._progress(f"{checkpoint.name} is the end of training: saving the adapter")
            if measure:
                self.telemetry.finish(self.step)
            return "completed", self._save_adapter(model, variant, opts, prep.resolved)
        started = time.perf_counter()
        fit(trainer, model, checkpoint, self._estimate)
        self._timing = {"train_s": time.perf_counter() - started - events.paused_s, "paused_s": events.paused_s,
                        "telemetry_s": self.telemetry.spent,
                        "telemetry_postponed": self.telemetry.postponed}
        self.step = trainer.state.global_step
        if events.diverged_at is not None:
            raise TrainingError(failures.diverged(events.diverged_at))
        spent = self.telemetry.spent
        if measure:
            self.telemetry.finish(self.step)   # the last word on the adapter being saved
        self._timing["final_telemetry_s"] = self.telemetry.spent - spent
        finished = trainer.state.global_step >= trainer.state.max_steps
        status = "completed" if finished or not self.control.stop_requested else "stopped"
        return status, self._save_adapter(model, variant, opts, prep.resolved)

    def _finish(self, status: str, error: str | None, error_field: str | None, adapter: Path | None) -> None:
        """run_finished, then the run folder let go (its lock, the event log)."""
        try:
            self.emit("run_finished", status=status, error=error, error_field=error_field,
                      adapter_path=str(adapter) if adapter else None, gallery_entry=self.gallery_entry,
                      **self._timing)
        except Exception:  # a full disk or a broken sink must not hide the run's own error
            pass
        finally:
            if self.telemetry is not None:
                self.telemetry.release()
            if self._log is not None:
                release(self.run_dir)
                try:
                    self._log.close()
                except OSError:
                    pass

    def _check_cancelled(self) -> None:
        """Preparation (a GGUF conversion, tokenization, loading) runs before any folder exists;
        a stop asked meanwhile ends the run at the next phase boundary with nothing written.
        Several processes stop together, at a step boundary (EventCallback.on_step_end)."""
        if self.control.stop_requested and self.resume_dir is None and not self.world.distributed:
            raise _StoppedBeforeStart()

    # -- the run folder and its events ---------------------------------------------------------

    def _open_run_folder(self) -> None:
        """Make (or reopen, when resuming) the run folder and start its event log with the events
        reported so far. On several processes the main one does it and tells the others where
        the folder is, or that it could not be made (then every process ends with its error)."""
        if not self.world.distributed:
            self._make_run_folder()
            return

        def make():
            if self.world.is_main:
                self._make_run_folder()

        self._main_first(make)
        self.run_dir = Path(distributed.share(str(self.run_dir) if self.world.is_main else None, self.world))

    def _make_run_folder(self) -> None:
        self.run_dir, self._log = open_run_folder(self.config, self.resume_dir, self._sink)
        claim(self.run_dir)
        for event in self._pending:
            self._log.write(event)
        self._pending = []
        if self.resume_dir is not None:
            clean_after_crash(self.run_dir, self._progress)

    def _main_first(self, fn):
        """fn() in the main process, then in the others, unless it failed in the main one: then
        every process ends with the main one's error (which it prints)."""
        w = self.world
        if w.is_main:
            try:
                value = fn()
            except StudioError as e:
                distributed.share(("error", str(e), e.exit_code), w)
                raise
            except BaseException as e:   # a bug or a library failure: the others end too
                distributed.share(("error", one_line(e), 1), w)
                raise
            distributed.share(("ok",), w)
            return value
        outcome = distributed.share(None, w)
        if outcome[0] == "error":
            raise _MainProcessFailed(outcome[1], outcome[2])
        return fn()

    def emit(self, type: str, **payload) -> None:
        """One event of this run, stamped with the current step: to the event log (and the sink)
        once the run folder is open, to the sink and a list kept for the log before that."""
        event = make_event(type, self.step, **payload)
        if type == "step" and payload.get("loss") is not None:
            self._metrics["loss"] = payload["loss"]
        elif type == "eval":
            self._metrics.update(payload)
        if not self.world.is_main:   # the main process reports the run
            return
        if self._log is not None:
            self._log(event)
            return
        event = plain(event)
        self._pending.append(event)
        if self._sink is not None:
            self._sink(event)

    def _progress(self, message: str) -> None:
        self.emit("progress", message=message)

    def _as_disk_full(self, e: BaseException) -> DiskFullError | None:
        return failures.disk_full(e, self.run_dir, self.config.train.output_dir, opened=self._log is not None)

    # -- what a run keeps ----------------------------------------------------------------------

    def save_checkpoint_state(self, checkpoint: Path, variant, opts) -> None:
        """The variant's state beside a checkpoint the Trainer has saved (EventCallback.on_save)."""
        checkpoints.save_state(self.model, variant, opts, self.run_dir, checkpoint)

    def _save_adapter(self, model, variant, opts, resolved) -> Path:
        final = self.run_dir / "adapter"
        if not self.world.is_main:   # the main process saves it (the weights are the same in all)
            return final
        variant.scale_loss_terms(model, opts, 1)   # the adapter's config as the person set it
        with atomic_dir(final, hint=failures.resume_hint(self.run_dir)) as tmp:
            variant.export_adapter(model, opts, tmp)
            meta = {"base_model": resolved.source, "base_path": resolved.path,
                    "base_fingerprint": resolved.fingerprint, "task": self.config.model.task,
                    "variant": self.config.variant_name, "options": self.config.variant,
                    "run": str(self.run_dir), "step": self.step, "metrics": self._final_metrics()}
            id2label = getattr(getattr(model, "config", None), "id2label", None)
            if self.config.model.task == "sequence-classification" and id2label:
                meta["labels"] = [str(id2label[i]) for i in sorted(id2label)]
            (tmp / "studio.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(tmp))
        return final

    def _final_metrics(self) -> dict:
        return dict(self._metrics)

    def _add_to_gallery(self, status: str) -> None:
        """The saved adapter becomes a gallery entry; a failure here is reported, not fatal (the
        adapter is safe in the run folder, and `lora-studio gallery add RUN` can retry)."""
        from .gallery import Gallery

        try:
            gallery = Gallery()
            run, step = str(self.run_dir.resolve()), self.step
            for entry in gallery.entries():   # a resumed run that was killed after adding itself
                if entry.source_run == run and entry.meta.get("step") == step:
                    self.gallery_entry = entry.name
                    return
            self.gallery_entry = gallery.add_run(self.run_dir, status=status).name
            self._progress(f"added to the gallery as {self.gallery_entry}")
        except (StudioError, OSError) as e:
            self._progress(f"warning: the adapter was not added to the gallery ({e})")


class _MainProcessFailed(StudioError):
    """The main process of a distributed run failed to open the run folder; it reports why."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class _StoppedBeforeStart(StudioError):
    """Stop was pressed while the model was still loading: nothing to save, no folder made."""

    exit_code = 0

    def __init__(self):
        super().__init__("stopped before training started")
