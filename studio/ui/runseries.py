"""The containers one run's history fills: growing step tables, telemetry snapshots, ranks, layer ids.

Pure Python + numpy, no Qt. Step series live in buffers that double their capacity when full
(pyqtgraph's examples/scrollingPlots.py), so a long run appends in amortised O(1) and a chart gets
a view, not a copy. history.RunHistory turns events into these; the charts draw them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np


def as_float(value) -> float:
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


class LayerRegistry:
    """Adapted module names, each with an id (its index) that the stored series refer to."""

    def __init__(self):
        self._names: list[str] = []
        self._ids: dict[str, int] = {}

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def index(self, name: str) -> int:
        index = self._ids.get(name)
        if index is None:
            index = self._ids[name] = len(self._names)
            self._names.append(name)
        return index

    def ordered(self, names: Iterable[str]) -> list[str]:
        """`names` registered, in registry order."""
        names = list(names)
        for n in names:
            self.index(n)
        return sorted(names, key=self._ids.__getitem__)

    def set_order(self, names: list[str]) -> np.ndarray | None:
        """Make `names` (model order) the registry's order; returns each old id's new id (floats, to
        remap a stored id column), or None when the order is unchanged."""
        order = list(dict.fromkeys(list(names) + self._names))
        if order == self._names:
            return None
        remap = np.array([order.index(n) for n in self._names] or [0], dtype=float)
        self._names = order
        self._ids = {n: i for i, n in enumerate(order)}
        return remap


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


class RankTable:
    """Every `ranks` event's rank per layer and total budget, as a layers × time matrix (built when
    asked, then kept until the next change)."""

    def __init__(self):
        self._entries: list[_RankEntry] = []
        self._cache: tuple | None = None

    def append(self, step: int, layers: dict[str, float], budget: float) -> None:
        self._entries.append(_RankEntry(step, layers, budget))
        self._cache = None

    def drop_after(self, step: int) -> bool:
        """Forget the events after `step` (a resumed run replays them); whether there were any."""
        if not any(e.step > step for e in self._entries):
            return False
        self._entries = [e for e in self._entries if e.step <= step]
        self._cache = None
        return True

    def arrays(self, ordered: Callable[[Iterable[str]], list[str]]):
        """(steps, layers, matrix, budget); `ordered` puts the layer names in model order."""
        if self._cache is None:
            layers = ordered({n for e in self._entries for n in e.layers})
            row = {n: i for i, n in enumerate(layers)}
            matrix = np.full((len(layers), len(self._entries)), np.nan)
            for t, entry in enumerate(self._entries):
                for name, rank in entry.layers.items():
                    matrix[row[name], t] = rank
            steps = np.array([e.step for e in self._entries], dtype=float)
            budget = np.array([e.budget for e in self._entries], dtype=float)
            self._cache = (steps, layers, matrix, budget)
        return self._cache
