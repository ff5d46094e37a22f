"""One run's events folded into what the charts draw: RunHistory, with one handler per event kind.

Pure Python + numpy, no Qt, so it is testable anywhere and cheap to feed from the GUI thread.
The same events give the same arrays whether they arrive live from a worker or are read back
from a run folder's events.jsonl (a finished run re-opens exactly as it looked live):

    history = RunHistory.from_run_folder("runs/20250101-120000-lora")
    history.steps, history.loss                # numpy views of the filled part of growing buffers
    changed = history.add(event)               # {"loss", "optimizer", ...}: which charts to redraw

The arrays and snapshots it fills are runseries.py's (growing tables, so a long run appends in
amortised O(1) and a chart gets a view, not a copy).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import numpy as np

from studio.core.telemetry.events import read_events

from .runseries import GrowingTable, ImportanceSnapshot, LayerRegistry, RankTable, SpectraSnapshot, as_float

GROUPS = frozenset({"loss", "optimizer", "throughput", "spectra", "importance", "ranks", "decomposition",
                    "status"})

# Which chart groups an event of each type changes (run_started/resume may change more, see add()).
_EVENT_GROUPS = {
    "step": {"loss", "optimizer", "throughput", "status"},
    "eval": {"loss"},
    "spectra": {"spectra"},
    "importance": {"importance"},
    "ranks": {"ranks"},
    "decomposition": {"decomposition"},
    "run_started": {"status"},
    "run_finished": {"status"},
    "checkpoint": {"status"},
    "progress": {"status"},
    "paused": {"status"},
    "resumed": {"status"},
}

_CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)$")


class RunHistory:
    """Everything the charts show of one run, rebuilt event by event.

    Step series (numpy views, growing): steps, loss, lr, grad_norm, tokens_per_s, epoch, memory_mb.
    Eval: eval_steps, eval_loss, eval_metrics {name: array aligned with eval_steps}.
    Telemetry: spectra (every SpectraSnapshot, in order; latest_spectra), importance (latest
    ImportanceSnapshot per method, importance_methods in order seen), ranks (rank_steps,
    rank_layers, rank_matrix layers × time, budget, target_budget, kept, shared), decomposition
    (decomposition_layer, decomposition_step, decomposition_dm, decomposition_dd).
    Status: status dict (run_started info, state, step, total_steps, tokens_per_s, error...).
    """

    def __init__(self, name: str = ""):
        self.name = name                 # the run folder's name (or the variant, until one is known)
        self._named = bool(name)
        self.variant = ""
        self.config: dict = {}
        self.status: dict = {"state": "waiting", "step": 0, "total_steps": None, "tokens_per_s": None,
                             "error": None}
        self.spectra: list[SpectraSnapshot] = []
        self.importance: dict[str, ImportanceSnapshot] = {}
        self.kept: list[str] | None = None             # LoRA-drop: layers with their own pair
        self.shared: dict[str, list[str]] | None = None  # LoRA-drop: {group: layers sharing one pair}
        self.lora_drop_threshold: float | None = None
        self.target_budget: float | None = None         # AdaLoRA's final total rank
        self._registry = LayerRegistry()                 # index = layer id
        self._steps = GrowingTable(["step", "loss", "lr", "grad_norm", "tokens_per_s", "epoch", "memory_mb"])
        self._evals = GrowingTable(["step", "eval_loss"], capacity=32)
        self._decomposition = GrowingTable(["layer", "step", "dM", "dD"], capacity=64)
        self._ranks = RankTable()

    def __repr__(self) -> str:
        return f"RunHistory({self.name!r}, variant={self.variant!r}, steps={len(self._steps)})"

    # ---- reading ---------------------------------------------------------------------------

    @classmethod
    def from_run_folder(cls, path: str | Path) -> "RunHistory":
        """A run folder's history, from its events.jsonl (a line torn by a crash is skipped)."""
        folder = Path(path)
        history = cls(name=folder.name)
        log = folder / "events.jsonl"
        if log.exists():
            history.extend(read_events(log))
        return history

    def extend(self, events: Iterable[dict]) -> set[str]:
        changed: set[str] = set()
        for event in events:
            changed |= self.add(event)
        return changed

    def add(self, event: dict) -> set[str]:
        """Take one event; returns the chart groups it changed (a subset of GROUPS)."""
        kind = event.get("type")
        handler = self.HANDLERS.get(kind)
        if handler is None:
            return set()
        extra = handler(self, event) or set()
        return set(_EVENT_GROUPS.get(kind, ())) | extra

    # ---- layers ----------------------------------------------------------------------------

    @property
    def layers(self) -> list[str]:
        """Adapted module names in model order (run_started's adapted_layers, then any others
        in the order telemetry first named them)."""
        return self._registry.names

    def layer_index(self, name: str) -> int:
        return self._registry.index(name)

    def _ordered(self, names: Iterable[str]) -> list[str]:
        return self._registry.ordered(names)

    def _set_layer_order(self, names: list[str]) -> None:
        """Make `names` (model order) the registry's order, keeping ids stored so far valid."""
        remap = self._registry.set_order(names)
        if remap is None:
            return
        column = self._decomposition.column("layer")
        if len(column):
            column[:] = remap[column.astype(int)]

    # ---- step series -----------------------------------------------------------------------

    @property
    def steps(self) -> np.ndarray:
        return self._steps.column("step")

    @property
    def loss(self) -> np.ndarray:
        return self._steps.column("loss")

    @property
    def lr(self) -> np.ndarray:
        return self._steps.column("lr")

    @property
    def grad_norm(self) -> np.ndarray:
        return self._steps.column("grad_norm")

    @property
    def tokens_per_s(self) -> np.ndarray:
        return self._steps.column("tokens_per_s")

    @property
    def epoch(self) -> np.ndarray:
        return self._steps.column("epoch")

    @property
    def memory_mb(self) -> np.ndarray:
        return self._steps.column("memory_mb")

    @property
    def eval_steps(self) -> np.ndarray:
        return self._evals.column("step")

    @property
    def eval_loss(self) -> np.ndarray:
        return self._evals.column("eval_loss")

    @property
    def eval_metrics(self) -> dict[str, np.ndarray]:
        """Every numeric eval metric (eval_loss, eval_accuracy, ...), aligned with eval_steps."""
        return {n: self._evals.column(n) for n in self._evals.columns if n != "step"}

    # ---- telemetry views -------------------------------------------------------------------

    @property
    def latest_spectra(self) -> SpectraSnapshot | None:
        return self.spectra[-1] if self.spectra else None

    @property
    def importance_methods(self) -> list[str]:
        return list(self.importance)

    @property
    def rank_steps(self) -> np.ndarray:
        return self._rank_arrays()[0]

    @property
    def rank_layers(self) -> list[str]:
        return self._rank_arrays()[1]

    @property
    def rank_matrix(self) -> np.ndarray:
        """layers × time: each layer's rank at each `ranks` event (NaN where not reported)."""
        return self._rank_arrays()[2]

    @property
    def budget(self) -> np.ndarray:
        """AdaLoRA's total rank budget at each `ranks` event (NaN where not reported)."""
        return self._rank_arrays()[3]

    def _rank_arrays(self):
        return self._ranks.arrays(self._registry.ordered)

    @property
    def decomposition_layer(self) -> np.ndarray:
        """Layer index (into `layers`) of each decomposition point."""
        return self._decomposition.column("layer")

    @property
    def decomposition_step(self) -> np.ndarray:
        return self._decomposition.column("step")

    @property
    def decomposition_dm(self) -> np.ndarray:
        return self._decomposition.column("dM")

    @property
    def decomposition_dd(self) -> np.ndarray:
        return self._decomposition.column("dD")

    # ---- handlers, one per event type ------------------------------------------------------

    def _add_run_started(self, event: dict) -> set[str]:
        self.config = dict(event.get("config") or {})
        self.variant = str((self.config.get("variant") or {}).get("name") or self.variant)
        run_dir = event.get("run_dir")
        if not self._named:
            self.name = Path(run_dir).name if run_dir else self.variant
        for key in ("trainable_params", "total_params", "device", "precision", "base_dtype", "quantize",
                    "total_steps", "train_examples",
                    "eval_examples", "data_format", "resumed_from", "run_dir"):
            if key in event:
                self.status[key] = event[key]
        self.status.update(state="running", error=None, message=None)
        self._set_layer_order(list(event.get("adapted_layers") or []))
        resumed = _CHECKPOINT_RE.search(str(event.get("resumed_from") or "").rstrip("/\\"))
        if resumed:
            return self._rewind(int(resumed.group(1)))
        return set()

    def _rewind(self, step: int) -> set[str]:
        """A resumed run starts again after checkpoint `step`: what the first attempt reported
        beyond it is replaced by what the resumed run reports."""
        changed: set[str] = set()
        steps = self.steps
        keep = int(np.searchsorted(steps, step, side="right"))
        if keep < len(steps):
            self._steps.truncate(keep)
            changed |= {"loss", "optimizer", "throughput"}
        evals = self.eval_steps
        keep = int(np.searchsorted(evals, step, side="right"))
        if keep < len(evals):
            self._evals.truncate(keep)
            changed.add("loss")
        if any(s.step > step for s in self.spectra):
            self.spectra = [s for s in self.spectra if s.step <= step]
            changed.add("spectra")
        if self._ranks.drop_after(step):
            changed.add("ranks")
        dec_steps = self.decomposition_step
        if np.any(dec_steps > step):
            # rows are appended in step order, so the ones to drop are a suffix
            self._decomposition.truncate(int(np.searchsorted(dec_steps, step, side="right")))
            changed.add("decomposition")
        return changed

    def _add_step(self, event: dict) -> set[str]:
        step = int(event.get("step", 0))
        changed: set[str] = set()
        if len(self._steps) and step <= self.steps[-1]:     # a replay without a resumed_from we know
            self._steps.truncate(int(np.searchsorted(self.steps, step, side="left")))
        self._steps.append({"step": step, "loss": as_float(event.get("loss")), "lr": as_float(event.get("lr")),
                            "grad_norm": as_float(event.get("grad_norm")),
                            "tokens_per_s": as_float(event.get("tokens_per_s")),
                            "epoch": as_float(event.get("epoch")), "memory_mb": as_float(event.get("memory_mb"))})
        self.status["step"] = step
        if event.get("total_steps") is not None:
            self.status["total_steps"] = event["total_steps"]
        self.status["tokens_per_s"] = event.get("tokens_per_s")
        self.status["loss"] = event.get("loss")
        self.status["epoch"] = event.get("epoch")
        self.status["memory_mb"] = event.get("memory_mb")     # memory in use (CUDA allocator / process RSS), when known
        if self.status.get("state") in ("waiting", None):
            self.status["state"] = "running"
        return changed

    def _add_eval(self, event: dict) -> None:
        step = int(event.get("step", 0))
        if len(self._evals) and step <= self.eval_steps[-1]:
            self._evals.truncate(int(np.searchsorted(self.eval_steps, step, side="left")))
        row = {"step": step}
        for key, value in event.items():
            if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second")) \
                    and (value is None or isinstance(value, (int, float))) and not isinstance(value, bool):
                row[key] = as_float(value)
        self._evals.append(row)
        self.status["eval_loss"] = event.get("eval_loss")

    def _add_spectra(self, event: dict) -> None:
        raw = event.get("layers") or {}
        layers = self._ordered(raw)
        sv, kinds, magnitude = [], [], []
        stats = {k: np.full(len(layers), np.nan) for k in ("k90", "k99", "stable_rank", "effective_rank", "fro_norm")}
        for i, name in enumerate(layers):
            entry = raw[name]
            if not isinstance(entry, dict):       # diverged: no spectrum this time
                sv.append(None)
                kinds.append(None)
                magnitude.append(None)
                continue
            values = entry.get("sv")
            sv.append(None if values is None else np.array([as_float(v) for v in values], dtype=float))
            kinds.append(entry.get("kind"))
            magnitude.append(entry.get("magnitude"))
            for key, column in stats.items():
                column[i] = as_float(entry.get(key))
        self.spectra.append(SpectraSnapshot(
            step=int(event.get("step", 0)), final=bool(event.get("final", False)), layers=layers, sv=sv,
            kinds=kinds, magnitude=magnitude, cost_s=as_float(event.get("cost_s")),
            postponed=int(event.get("postponed") or 0), **stats))

    def _add_importance(self, event: dict) -> set[str]:
        method = str(event.get("method") or "importance")
        raw = event.get("layers") or {}
        layers = self._ordered(raw)
        kept = event.get("kept")
        self.importance[method] = ImportanceSnapshot(
            method=method, step=int(event.get("step", 0)), layers=layers,
            values=np.array([as_float(raw[n]) for n in layers], dtype=float),
            kept=list(kept) if kept is not None else None, threshold=event.get("threshold"),
            sample_rows=event.get("sample_rows"))
        if kept is not None:
            self.kept = list(kept)
            if event.get("threshold") is not None:
                self.lora_drop_threshold = float(event["threshold"])
        return set()

    def _add_ranks(self, event: dict) -> set[str]:
        raw = event.get("layers") or {}
        self._ordered(raw)
        self._ranks.append(int(event.get("step", 0)), {n: as_float(v) for n, v in raw.items()},
                           as_float(event.get("budget")))
        if event.get("target_budget") is not None:
            self.target_budget = float(event["target_budget"])
        changed: set[str] = set()
        if event.get("kept") is not None:                  # LoRA-drop: kept/shared colour the importance bars
            self.kept = list(event["kept"])
            self.shared = {str(k): list(v) for k, v in (event.get("shared") or {}).items()}
            changed.add("importance")
        return changed

    def _add_decomposition(self, event: dict) -> None:
        step = int(event.get("step", 0))
        raw = event.get("layers") or {}
        steps = self.decomposition_step
        if len(steps) and steps[-1] >= step:   # the final measurement repeats the last step: it wins
            self._decomposition.truncate(int(np.searchsorted(steps, step, side="left")))
        for name in self._ordered(raw):
            entry = raw[name]
            if not isinstance(entry, dict):
                continue
            self._decomposition.append({"layer": self._registry.index(name), "step": step,
                                        "dM": as_float(entry.get("dM")), "dD": as_float(entry.get("dD"))})

    def _add_run_finished(self, event: dict) -> None:
        self.status["state"] = event.get("status") or "completed"
        self.status["error"] = event.get("error")
        self.status["adapter_path"] = event.get("adapter_path")
        for key in ("train_s", "paused_s", "telemetry_s"):
            if key in event:
                self.status[key] = event[key]

    def _add_checkpoint(self, event: dict) -> None:
        self.status["checkpoint"] = event.get("path")

    def _add_progress(self, event: dict) -> None:
        self.status["message"] = event.get("message")

    def _add_paused(self, event: dict) -> None:
        self.status["state"] = "paused"

    def _add_resumed(self, event: dict) -> None:
        self.status["state"] = "running"

    # one handler per kind of studio.core.events.EVENT_KINDS (tests/ui/test_history.py checks both lists)
    HANDLERS = {"run_started": _add_run_started, "progress": _add_progress, "step": _add_step, "eval": _add_eval,
                "checkpoint": _add_checkpoint, "paused": _add_paused, "resumed": _add_resumed,
                "run_finished": _add_run_finished, "spectra": _add_spectra, "importance": _add_importance,
                "ranks": _add_ranks, "decomposition": _add_decomposition}

    # ---- helpers for the charts ------------------------------------------------------------

    def loss_curve(self) -> tuple[str, np.ndarray, np.ndarray]:
        """(name, steps, loss): what another run's loss chart overlays."""
        return self.name or self.variant or "run", self.steps, self.loss
