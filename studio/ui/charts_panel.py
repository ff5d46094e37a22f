"""ChartsPanel: every chart of one run in tabs (Training: loss, optimizer, throughput; Spectra;
Importance; Ranks; Decomposition) under a one-line status, fed from a RunHistory.

    panel.show_history(history, changed)      # changed: RunHistory.add()'s groups, None = all
    panel.set_overlays([other_history, ...])  # other runs' loss on the loss chart

Only the charts of the tab on screen are redrawn at once; the others are marked dirty and drawn
when their tab is shown, so a live run costs the GUI thread one tab's worth of drawing.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFrame, QScrollArea, QSplitter, QTabWidget, QVBoxLayout, QWidget

from studio.core.storage import held_text

from .charts import (DecompositionChart, ImportanceChart, LossChart, OptimizerChart, RankChart, SpectrumChart,
                     ThroughputChart)
from .elide import ElidedLabel
from .history import GROUPS, RunHistory

# chart key -> the RunHistory groups it draws
CHART_GROUPS = {
    "loss": "loss", "optimizer": "optimizer", "throughput": "throughput", "spectrum": "spectra",
    "importance": "importance", "rank": "ranks", "decomposition": "decomposition",
}
# tab title -> its charts
TABS = {
    "Training": ("loss", "optimizer", "throughput"),
    "Spectra": ("spectrum",),
    "Importance": ("importance",),
    "Ranks": ("rank",),
    "Decomposition": ("decomposition",),
}


class ChartsPanel(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("chartsPanel")
        self.setAccessibleName("Run charts")
        self.loss_chart = LossChart()
        self.optimizer_chart = OptimizerChart()
        self.throughput_chart = ThroughputChart()
        self.spectrum_chart = SpectrumChart()
        self.importance_chart = ImportanceChart()
        self.rank_chart = RankChart()
        self.decomposition_chart = DecompositionChart()
        self.charts = {"loss": self.loss_chart, "optimizer": self.optimizer_chart,
                       "throughput": self.throughput_chart, "spectrum": self.spectrum_chart,
                       "importance": self.importance_chart, "rank": self.rank_chart,
                       "decomposition": self.decomposition_chart}

        self.status_label = ElidedLabel(name="chartsStatusLabel")   # never widens the window
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label.setContentsMargins(6, 4, 6, 2)
        self.tabs = QTabWidget()
        self.tabs.setObjectName("chartsTabs")
        self.tabs.setAccessibleName("Chart tabs")
        # each chart is as tall as its plots need (ChartWidget's minimum height); a tab shorter than
        # that scrolls, so neither the plots are squashed nor the window is forced taller
        self.training_splitter = QSplitter(Qt.Orientation.Vertical)
        self.training_splitter.setObjectName("trainingChartsSplitter")
        self.training_splitter.setChildrenCollapsible(False)
        for chart, stretch in ((self.loss_chart, 5), (self.optimizer_chart, 4), (self.throughput_chart, 2)):
            self.training_splitter.addWidget(chart)
            self.training_splitter.setStretchFactor(self.training_splitter.count() - 1, stretch)
        self.tab_scrolls: dict[str, QScrollArea] = {}
        for title in TABS:
            page = self.training_splitter if title == "Training" else self.charts[TABS[title][0]]
            self.tab_scrolls[title] = scroll = QScrollArea()
            scroll.setObjectName(f"{title.lower()}ChartsScroll")
            scroll.setFrameShape(QFrame.Shape.NoFrame)
            scroll.setWidgetResizable(True)
            scroll.setWidget(page)
            self.tabs.addTab(scroll, title)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.status_label)
        layout.addWidget(self.tabs, 1)

        self.history: RunHistory | None = None
        self.overlays: list[RunHistory] = []
        self.dirty: set[str] = set()            # chart keys to redraw when their tab is shown
        self.queued: list[str] = []             # visible chart keys still to draw (show_history's spread)
        self._drawing = False                   # a chain of _draw_queued is under way
        self.tabs.currentChanged.connect(self._on_tabs_current_changed)

    # ---- feeding -----------------------------------------------------------------------------

    def show_history(self, history: RunHistory, changed: set[str] | None = None, spread: bool = False) -> None:
        """Draw what changed in `history` (RunHistory.add's groups; None or a new history: all).
        With `spread` (a live run's repaints) the visible charts are drawn one per turn of the
        event loop: a click or a paint waits for one chart at most, never for the whole tab."""
        if history is not self.history:
            self.clear()
            self.history = history
            changed = None
        groups = set(GROUPS) if changed is None else set(changed)
        visible = set(self.visible_charts())
        for key, group in CHART_GROUPS.items():
            if group not in groups:
                continue
            if key in visible:
                if key not in self.queued:
                    self.queued.append(key)
            else:
                self.dirty.add(key)
        if groups & {"status", "loss"}:
            self._draw_status()
        if not spread:
            while self.queued:
                self._draw(self.queued.pop(0))
        elif not self._drawing:
            self._draw_queued()

    def _draw_queued(self) -> None:
        """The next queued chart now, the rest on the following turns of the event loop."""
        self._drawing = bool(self.queued)
        if self.queued:
            self._draw(self.queued.pop(0))
            QTimer.singleShot(0, self, self._draw_queued)   # (not after the panel is gone)

    def set_overlays(self, histories: list[RunHistory]) -> None:
        """Other runs whose (smoothed) loss the loss chart draws for comparison."""
        self.overlays = list(histories)
        self.loss_chart.set_overlays([h.loss_curve() for h in self.overlays])

    def clear(self) -> None:
        self.history = None
        self.dirty.clear()
        self.queued.clear()
        for chart in self.charts.values():
            chart.clear()
        self.loss_chart.set_overlays([h.loss_curve() for h in self.overlays])
        self.status_label.setText("")

    def visible_charts(self) -> tuple[str, ...]:
        """Keys of the charts on the current tab."""
        return TABS[self.tabs.tabText(self.tabs.currentIndex())]

    def show_tab(self, title: str) -> None:
        self.tabs.setCurrentIndex(list(TABS).index(title))

    # ---- drawing -----------------------------------------------------------------------------

    def _draw(self, key: str) -> None:
        self.dirty.discard(key)
        h = self.history
        if h is None:
            return
        if key == "loss":
            self.loss_chart.set_series(h.steps, h.loss, h.eval_steps, h.eval_loss)
        elif key == "optimizer":
            self.optimizer_chart.set_series(h.steps, h.lr, h.grad_norm)
        elif key == "throughput":
            self.throughput_chart.set_series(h.steps, h.tokens_per_s)
        elif key == "spectrum":
            self.spectrum_chart.set_snapshots(h.spectra)
        elif key == "importance":
            self.importance_chart.set_importance(h.importance, kept=h.kept)
        elif key == "rank":
            self.rank_chart.set_ranks(h.rank_steps, h.rank_layers, h.rank_matrix, h.budget, h.target_budget,
                                      h.kept, h.shared)
        elif key == "decomposition":
            self.decomposition_chart.set_points(h.decomposition_layer, h.decomposition_step, h.decomposition_dm,
                                                h.decomposition_dd, h.layers)

    def _draw_status(self) -> None:
        h = self.history
        s = h.status
        parts = [h.name or "run"]
        if h.variant:
            parts.append(h.variant)
        step = f"step {s.get('step', 0)}"
        if s.get("total_steps"):
            step += f"/{s['total_steps']}"
        parts.append(step)
        if s.get("loss") is not None:
            parts.append(f"loss {s['loss']:.4g}")
        if s.get("eval_loss") is not None:
            parts.append(f"eval {s['eval_loss']:.4g}")
        if s.get("tokens_per_s"):
            parts.append(f"{s['tokens_per_s']:,.0f} tokens/s")
        if s.get("trainable_params") and s.get("total_params"):
            share = 100.0 * s["trainable_params"] / s["total_params"]
            parts.append(f"{s['trainable_params']:,} trainable ({share:.2g}%)")
        if s.get("device"):
            parts.append(f"{s['device']} {held_text(s)}".strip())
        parts.append(s.get("state") or "")
        if s.get("state") == "waiting" and s.get("message"):
            parts.append(s["message"])              # "loading the base model", before run_started
        text = " · ".join(p for p in parts if p)
        if s.get("error"):
            text += f" — {s['error']}"
        self.status_label.setText(text)

    # ---- handlers ----------------------------------------------------------------------------

    def _on_tabs_current_changed(self, index: int) -> None:
        for key in self.visible_charts():
            if key in self.dirty:
                self._draw(key)
