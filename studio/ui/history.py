"""One run's events, accumulated into what the charts draw: RunHistory.

Pure Python + numpy, no Qt, so it is testable anywhere and cheap to feed from the GUI thread.
The same events give the same arrays whether they arrive live from a worker or are read back
from a run folder's events.jsonl (a finished run re-opens exactly as it looked live):

    history = RunHistory.from_run_folder("runs/20250101-120000-lora")
    history.steps, history.loss                # numpy views of the filled part of growing buffers
    changed = history.add(event)               # {"loss", "optimizer", ...}: which charts to redraw

Step series live in buffers that double their capacity when full (pyqtgraph's
examples/scrollingPlots.py), so a long run appends in amortised O(1) and a chart gets a view,
not a copy.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from studio.core.telemetry.events import read_events

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

from studio.core.names import PEFT_PREFIX as _PEFT_PREFIX  # noqa: E402
_LAYER_RE = re.compile(r"layers?\.(\d+)\.")
_CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)$")


def short_name(name: str) -> str:
    """A module name for display: without PEFT's "base_model.model." wrapper prefix."""
    return name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name


def module_type(name: str) -> str:
    """The kind of module: the last component of its name (q_proj, down_proj, ...)."""
    return name.rsplit(".", 1)[-1]


def compact_name(name: str) -> str:
    """An axis-tick label: "L3 q_proj" for ...layers.3.self_attn.q_proj, else the short name."""
    found = _LAYER_RE.search(name)
    if found:
        return f"L{found.group(1)} {module_type(name)}"
    return short_name(name)


def layer_period(names: list[str]) -> int:
    """How many modules one transformer layer has in `names` (model order): the length of the
    first run of names with the same layer number; 1 when the names have none."""
    numbers = [m.group(1) if (m := _LAYER_RE.search(n)) else None for n in names]
    if not numbers or numbers[0] is None:
        return 1
    count = 0
    while count < len(numbers) and numbers[count] == numbers[0]:
        count += 1
    return count


def _number(value) -> float:
    """An event value as a float; None (JSON's NaN/inf) and junk become NaN."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class GrowingTable:
    """Named float64 columns that grow by doubling their capacity; `column(name)` is a view of
    the filled part. A column first seen late is back-filled with NaN."""

    def __init__(self, columns: Iterable[str] = (), capacity: int = 256):
        self._names: list[str] = list(columns)
        self._index = {n: i for i, n in enumerate(self._names)}
        self._data = np.full((max(len(self._names), 1), capacity), np.nan)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def columns(self) -> list[str]:
        return list(self._names)

    def _add_column(self, name: str) -> int:
        self._index[name] = len(self._names)
        self._names.append(name)
        if len(self._names) > self._data.shape[0]:
            self._data = np.vstack([self._data, np.full((1, self._data.shape[1]), np.nan)])
        return self._index[name]

    def append(self, values: dict[str, float]) -> None:
        if self._size == self._data.shape[1]:      # full: double, copy once
            grown = np.full((self._data.shape[0], 2 * self._data.shape[1]), np.nan)
            grown[:, :self._size] = self._data[:, :self._size]
            self._data = grown
        for name, value in values.items():
            row = self._index.get(name)
            if row is None:
                row = self._add_column(name)
            self._data[row, self._size] = value
        self._size += 1

    def column(self, name: str) -> np.ndarray:
        row = self._index.get(name)
        if row is None:
            return np.full(self._size, np.nan)
        return self._data[row, :self._size]

    def truncate(self, size: int) -> None:
        """Keep the first `size` rows (a resumed run replays the steps after its checkpoint)."""
        size = max(0, min(size, self._size))
        self._data[:, size:self._size] = np.nan
        self._size = size


@dataclass
class SpectraSnapshot:
    """One `spectra` event: per layer, the singular values of its update ΔW (descending) and the
    ranks holding 90% / 99% of ‖ΔW‖². A layer whose update diverged has sv None."""

    step: int
    final: bool
    layers: list[str]
    sv: list[np.ndarray | None]
    k90: np.ndarray              # int-valued float arrays; NaN where unknown (diverged)
    k99: np.ndarray
    stable_rank: np.ndarray
    effective_rank: np.ndarray
    fro_norm: np.ndarray
    kinds: list[str | None]      # "exact", "direction" (DoRA's direction part), ...
    magnitude: list[dict | None]  # DoRA's magnitude-vector stats, when given
    cost_s: float = math.nan
    postponed: int = 0

    @property
    def kind(self) -> str:
        """The kind shared by all layers ("exact", "direction"), or "mixed"."""
        kinds = {k for k in self.kinds if k}
        if not kinds:
            return "exact"
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def width(self) -> int:
        """The longest spectrum (the heatmap's number of columns)."""
        return max((len(s) for s in self.sv if s is not None), default=0)

    def matrix(self) -> np.ndarray:
        """layers × width σ matrix, NaN-padded (shorter spectra) and NaN rows (diverged layers)."""
        out = np.full((len(self.layers), self.width), np.nan)
        for i, values in enumerate(self.sv):
            if values is not None and len(values):
                out[i, :len(values)] = values
        return out

    def label(self) -> str:
        return f"step {self.step}" + (" (final)" if self.final else "")


@dataclass
class ImportanceSnapshot:
    """The latest `importance` event of one method: a value per layer."""

    method: str
    step: int
    layers: list[str]
    values: np.ndarray
    kept: list[str] | None = None    # LoRA-drop's build-time selection
    threshold: float | None = None
    sample_rows: int | None = None


@dataclass
class _RankEntry:
    step: int
    layers: dict[str, float]
    budget: float


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
        self._layers: list[str] = []                     # registry: index = layer id
        self._layer_ids: dict[str, int] = {}
        self._steps = GrowingTable(["step", "loss", "lr", "grad_norm", "tokens_per_s", "epoch", "memory_mb"])
        self._evals = GrowingTable(["step", "eval_loss"], capacity=32)
        self._decomposition = GrowingTable(["layer", "step", "dM", "dD"], capacity=64)
        self._ranks: list[_RankEntry] = []
        self._rank_cache: tuple | None = None

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
        return list(self._layers)

    def layer_index(self, name: str) -> int:
        index = self._layer_ids.get(name)
        if index is None:
            index = self._layer_ids[name] = len(self._layers)
            self._layers.append(name)
        return index

    def _ordered(self, names: Iterable[str]) -> list[str]:
        names = list(names)
        for n in names:
            self.layer_index(n)
        return sorted(names, key=self._layer_ids.__getitem__)

    def _set_layer_order(self, names: list[str]) -> None:
        """Make `names` (model order) the registry's order, keeping ids stored so far valid."""
        order = list(dict.fromkeys(list(names) + self._layers))
        if order == self._layers:
            return
        remap = np.array([order.index(n) for n in self._layers] or [0], dtype=float)
        column = self._decomposition.column("layer")
        if len(column):
            column[:] = remap[column.astype(int)]
        self._layers = order
        self._layer_ids = {n: i for i, n in enumerate(order)}

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
        if self._rank_cache is None:
            layers = self._ordered({n for e in self._ranks for n in e.layers})
            row = {n: i for i, n in enumerate(layers)}
            matrix = np.full((len(layers), len(self._ranks)), np.nan)
            for t, entry in enumerate(self._ranks):
                for name, rank in entry.layers.items():
                    matrix[row[name], t] = rank
            steps = np.array([e.step for e in self._ranks], dtype=float)
            budget = np.array([e.budget for e in self._ranks], dtype=float)
            self._rank_cache = (steps, layers, matrix, budget)
        return self._rank_cache

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
        if any(e.step > step for e in self._ranks):
            self._ranks = [e for e in self._ranks if e.step <= step]
            self._rank_cache = None
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
        self._steps.append({"step": step, "loss": _number(event.get("loss")), "lr": _number(event.get("lr")),
                            "grad_norm": _number(event.get("grad_norm")),
                            "tokens_per_s": _number(event.get("tokens_per_s")),
                            "epoch": _number(event.get("epoch")), "memory_mb": _number(event.get("memory_mb"))})
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
                row[key] = _number(value)
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
            sv.append(None if values is None else np.array([_number(v) for v in values], dtype=float))
            kinds.append(entry.get("kind"))
            magnitude.append(entry.get("magnitude"))
            for key, column in stats.items():
                column[i] = _number(entry.get(key))
        self.spectra.append(SpectraSnapshot(
            step=int(event.get("step", 0)), final=bool(event.get("final", False)), layers=layers, sv=sv,
            kinds=kinds, magnitude=magnitude, cost_s=_number(event.get("cost_s")),
            postponed=int(event.get("postponed") or 0), **stats))

    def _add_importance(self, event: dict) -> set[str]:
        method = str(event.get("method") or "importance")
        raw = event.get("layers") or {}
        layers = self._ordered(raw)
        kept = event.get("kept")
        self.importance[method] = ImportanceSnapshot(
            method=method, step=int(event.get("step", 0)), layers=layers,
            values=np.array([_number(raw[n]) for n in layers], dtype=float),
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
        self._ranks.append(_RankEntry(int(event.get("step", 0)), {n: _number(v) for n, v in raw.items()},
                                      _number(event.get("budget"))))
        self._rank_cache = None
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
            self._decomposition.append({"layer": self._layer_ids[name], "step": step,
                                        "dM": _number(entry.get("dM")), "dD": _number(entry.get("dD"))})

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
