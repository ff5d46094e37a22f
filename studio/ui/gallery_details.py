"""The gallery's details pane (GalleryDetails): the selected adapter's metadata, its editable
notes, the adapters it combines with, and its run's last spectrum and importance.
"""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QLabel, QListWidget, QListWidgetItem, QPlainTextEdit, QSizePolicy,
                               QTabWidget, QVBoxLayout, QWidget)

from studio.core.errors import StudioError
from studio.core.gallery import Entry
from studio.core.modelcache import human_size

from .charts import ImportanceChart, SpectrumChart
from .gallery_cards import Card
from .gallery_text import MUTED, TASK_TEXT, bold, short_date
from .history import RunHistory


class NotesEdit(QPlainTextEdit):
    """A notes field that says when the person is done with it (focus leaves, or Ctrl+Enter)."""

    editing_finished = Signal()

    def focusOutEvent(self, event):
        super().focusOutEvent(event)
        self.editing_finished.emit()

    def keyPressEvent(self, event):
        ctrl = event.modifiers() & Qt.KeyboardModifier.ControlModifier
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and ctrl:
            self.editing_finished.emit()
            return
        super().keyPressEvent(event)


class GalleryDetails(QWidget):
    """The selected adapter: metadata, editable notes, its run's last spectrum and importance,
    and the adapters it can be combined with."""

    notes_finished = Signal(str, str)      # entry name, notes
    compatible_activated = Signal(str)     # an entry name in the "combines with" list

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("galleryDetails")
        self.setAccessibleName("Adapter details")
        self.entry: Entry | None = None
        self.title = QLabel()
        self.title.setObjectName("galleryDetailsTitle")
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.25)
        font.setBold(True)
        self.title.setFont(font)
        # every text of the details wraps to the pane's width instead of widening it: a pane wider
        # than the dock scrolls sideways, and what is beyond its right edge reads as cut off
        self.title.setWordWrap(True)
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.info = QLabel()
        self.info.setObjectName("galleryDetailsInfo")
        self.info.setTextFormat(Qt.TextFormat.RichText)
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)   # wraps, never widens
        self.notes = NotesEdit()
        self.notes.setObjectName("galleryNotes")
        self.notes.setAccessibleName("Adapter notes")
        self.notes.setPlaceholderText("Notes: what this adapter is for, how it did… "
                                      "(saved when you leave the field)")
        self.notes.setFixedHeight(64)
        self.notes.editing_finished.connect(self._on_notes_editing_finished)
        self.spectrum_chart = SpectrumChart()
        self.spectrum_chart.setObjectName("gallerySpectrumChart")
        self.spectrum_chart.setAccessibleName("Adapter spectrum chart")
        self.importance_chart = ImportanceChart()
        self.importance_chart.setObjectName("galleryImportanceChart")
        self.importance_chart.setAccessibleName("Adapter importance chart")
        self.chart_tabs = QTabWidget()
        self.chart_tabs.setObjectName("galleryChartTabs")
        self.chart_tabs.addTab(self.spectrum_chart, "Spectrum")
        self.chart_tabs.addTab(self.importance_chart, "Importance")
        self.chart_tabs.setMinimumHeight(300)
        # the charts take the height left over, not their (large) size hint: the details then fit
        # a tall pane without scrolling, and scroll only when it is shorter than the minimum
        self.chart_tabs.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Ignored)
        narrow_chart_controls(self.spectrum_chart, self.importance_chart)
        self.compatible = QListWidget()
        self.compatible.setObjectName("galleryCompatible")
        self.compatible.setAccessibleName("Adapters it can be combined with")
        self.compatible.setMaximumHeight(72)
        self.compatible.itemActivated.connect(lambda item: self.compatible_activated.emit(item.text()))
        self.compatible_label = QLabel("Combines with (same base model and task)")
        bold(self.compatible_label)
        self.compatible_label.setWordWrap(True)
        notes_label = QLabel("Notes")
        bold(notes_label)
        column = QVBoxLayout(self)
        column.setContentsMargins(6, 6, 6, 6)
        column.addWidget(self.title)
        column.addWidget(self.info)
        column.addWidget(notes_label)
        column.addWidget(self.notes)
        column.addWidget(self.compatible_label)
        column.addWidget(self.compatible)
        column.addWidget(self.chart_tabs, 1)
        self.show_entry(None)

    def show_entry(self, entry: Entry | None, compatible: list[Entry] | None = None) -> None:
        self.save_notes()
        self.entry = entry
        has = entry is not None
        for w in (self.info, self.notes, self.chart_tabs, self.compatible, self.compatible_label):
            w.setVisible(has)
        if entry is None:
            self.title.setText("No adapter selected")
            self.title.setToolTip("")
            self.notes.setPlainText("")
            return
        self.title.setText(entry.name)
        self.title.setToolTip(entry.name)
        self.info.setText(details_html(entry))
        self.notes.setPlainText(entry.notes)
        self._show_telemetry(entry)
        self.compatible.clear()
        for other in compatible or []:
            item = QListWidgetItem(other.name)
            item.setToolTip(Card.of(other).describe())
            self.compatible.addItem(item)
        if not compatible:
            item = QListWidgetItem("none yet: no other adapter on this base model and task")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.compatible.addItem(item)

    def save_notes(self) -> None:
        """Report edited notes (once), e.g. before another entry is shown."""
        if self.entry is not None and self.notes.toPlainText() != self.entry.notes:
            self.notes_finished.emit(self.entry.name, self.notes.toPlainText())

    def _on_notes_editing_finished(self) -> None:
        self.save_notes()

    def _show_telemetry(self, entry: Entry) -> None:
        try:
            telemetry = entry.telemetry()
        except StudioError:
            telemetry = {}
        history = telemetry_history(telemetry)
        self.spectrum_chart.clear()
        self.importance_chart.clear()
        if history.spectra:
            self.spectrum_chart.set_snapshots(history.spectra)
        else:
            self.spectrum_chart.set_empty(True, f"No spectrum was kept for this adapter: {no_telemetry_reason(entry)}")
        if history.importance:
            self.importance_chart.set_importance(history.importance, kept=history.kept)
        else:
            self.importance_chart.set_empty(True, f"No importance was kept for this adapter: "
                                                  f"{no_telemetry_reason(entry)}")


def narrow_chart_controls(*charts) -> None:
    """Fit the run charts' control rows into the gallery's narrow details pane: their combos take
    a few characters' width, not their longest item's (the full text is in each item, and in the
    open list), and the spectrum's snapshot slider is hidden, since an entry keeps one snapshot
    only (its run's last) and the step label still names it."""
    for chart in charts:
        for combo in chart.controls.findChildren(QComboBox):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(4)
            combo.currentTextChanged.connect(combo.setToolTip)
        slider = getattr(chart, "step_slider", None)
        if slider is not None:
            layout = chart.controls_layout
            at = layout.indexOf(slider)
            before = layout.itemAt(at - 1).widget() if at > 0 else None
            for w in (slider, before if isinstance(before, QLabel) else None):   # and its "Snapshot" label
                if w is not None:
                    w.hide()


def _names(names: list[str]) -> str:
    names = [str(n) for n in names]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def no_telemetry_reason(entry: Entry) -> str:
    """Why an entry has no spectrum or importance, from what its record says about where it came
    from: made by resize or combine (export.py records derived_from), imported (imported_from), or
    trained by a run that measured none."""
    derived = entry.meta.get("derived_from")
    derived = derived if isinstance(derived, dict) else {}
    own = "so it has no training telemetry of its own"
    if derived.get("resize"):
        rank = derived.get("rank") or entry.rank
        return f"it was made by resizing {derived['resize']}" + (f" to rank {rank}" if rank else "") + f", {own}"
    if derived.get("combine"):
        sources = derived["combine"] if isinstance(derived["combine"], list) else [derived["combine"]]
        method = f" ({derived['method']})" if derived.get("method") else ""
        return f"it was combined from {_names(sources)}{method}, {own}"
    if entry.meta.get("imported_from"):
        return "it was imported (trained elsewhere), and no telemetry comes with an imported adapter"
    if entry.source_run:
        return "its run measured none"
    return "nothing records where it came from"


def telemetry_history(telemetry: dict) -> RunHistory:
    """A RunHistory holding an entry's kept events ({kind: event}), for the run charts."""
    history = RunHistory()
    types = {"spectrum": "spectra", "spectra": "spectra", "importance": "importance", "ranks": "ranks",
             "decomposition": "decomposition"}
    for key, kind in types.items():
        event = telemetry.get(key) if isinstance(telemetry, dict) else None
        if isinstance(event, dict) and event:
            history.add({**event, "type": event.get("type") or kind})
    return history


def details_html(entry: Entry) -> str:
    """The entry's metadata as a two-column table."""
    s = entry.summary()
    rows = [("variant", s["variant"]), ("rank", s["rank"] if s["rank"] is not None else "–"),
            ("task", TASK_TEXT.get(s["task"], s["task"])), ("base model", s["base_model"] or "unknown"),
            ("base fingerprint", s["base_fingerprint"] or "unknown (checked on export)"),
            ("size on disk", human_size(s["size_bytes"])), ("created", short_date(s["created"]))]
    if s["final_loss"] is not None:
        rows.append(("final loss", f"{s['final_loss']:.4g}"))
    metrics = {k: v for k, v in (s.get("metrics") or {}).items() if k not in ("loss",)}
    if metrics:
        rows.append(("metrics", ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())))
    options = {k: v for k, v in (s.get("options") or {}).items() if k != "name"}    # name: the variant, above
    if options:
        rows.append(("options", ", ".join(f"{k} = {_fmt(v)}" for k, v in options.items())))
    if entry.labels:
        rows.append(("labels", ", ".join(entry.labels)))
    derived = s.get("derived_from")
    if derived:
        rows.append(("derived from", _fmt(derived)))
    if entry.meta.get("imported_from"):
        rows.append(("imported from", entry.meta["imported_from"]))
    rows.append(("source run", s["source_run"] or "–"))
    rows.append(("path", s["path"]))
    cells = "".join(f"<tr><td style='padding-right:10px; {MUTED}' valign='top'>{escape(k)}</td>"
                    f"<td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table cellspacing='0' cellpadding='1'>{cells}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)
