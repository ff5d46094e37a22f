"""The adapter gallery in the window: a list of cards with search, sort and filters, and the
selected adapter's details (metadata, notes, its run's last spectrum and importance, what it
combines with). The actions on adapters live in gallery_actions.py (GalleryController).

    view = GalleryView()                    # objectName "galleryView"; a dock in the window
    view.refresh(select="my-adapter")       # re-read studio.core.gallery.Gallery()
    view.visible_names()                    # what the cards show now, top to bottom

Listing, renaming, annotating and deleting are instant (JSON files and folder renames) and run on
the GUI thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path

from PySide6.QtCore import (QAbstractListModel, QFileSystemWatcher, QModelIndex, QObject, QPointF, QRectF, QSize, Qt,
                            QTimer, Signal)
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QLabel, QLineEdit, QListView, QListWidget,
                               QListWidgetItem, QPlainTextEdit, QProgressBar, QPushButton, QScrollArea,
                               QSizePolicy, QSplitter, QStackedWidget, QStyle, QStyledItemDelegate,
                               QStyleOptionComboBox, QTabWidget,
                               QVBoxLayout, QWidget)

from studio.core.errors import StudioError
from studio.core.gallery import Entry, Gallery
from studio.core.modelcache import human_size  # noqa: F401  (the gallery's dialogs take it from here)

from .charts import ImportanceChart, SpectrumChart
from .charts.common import SERIES_COLOURS
from .history import RunHistory

CARD_ROLE = Qt.ItemDataRole.UserRole + 1
SORTS = {"newest": "Newest first", "oldest": "Oldest first", "name": "Name", "loss": "Final loss (lowest first)",
         "size": "Size (largest first)"}
ALL = ""                      # the filter combos' "everything" item data
WIDE = 760                    # px: wider than this, the details sit beside the cards, else below
# px: the width the gallery asks for (sizeHint), which shows the sort and filter combos, a card's
# name and the details without cutting them; its minimum width stays far below it (about 250 px),
# so a dock holding it never pushes the window's minimum width up (the window fits 1280×800)
PREFERRED_WIDTH = 400
TASK_TEXT = {"causal-lm": "causal LM", "sequence-classification": "classifier"}
MUTED = "color: palette(placeholder-text);"


def muted(label: QLabel) -> QLabel:
    """Grey text that follows the palette (a style sheet would keep the colours of the theme it was
    set under: a theme switch would leave it dark on dark)."""
    label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
    return label


def bold(label: QLabel) -> QLabel:
    font = label.font()
    font.setBold(True)
    label.setFont(font)
    return label


def short_date(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return iso or ""


def short_base(base: str) -> str:
    """A base model as a card shows it: a local path's last part, a hub id or bundled name as is."""
    if "/" in base and (base.startswith(("/", "~", ".")) or Path(base).expanduser().exists()):
        return Path(base).name or base
    if "\\" in base:
        return base.replace("\\", "/").rsplit("/", 1)[-1]
    return base


@dataclass
class Card:
    """What one card shows, read once per refresh (Entry.size_bytes walks the folder)."""

    entry: Entry
    name: str
    variant: str
    rank: int | None
    task: str
    base_model: str
    size_bytes: int
    final_loss: float | None
    loss_history: list[float]
    created: str
    notes: str
    search_text: str = field(default="", repr=False)

    @classmethod
    def of(cls, entry: Entry) -> "Card":
        try:
            size = entry.size_bytes
        except OSError:
            size = 0
        card = cls(entry, entry.name, entry.variant, entry.rank, entry.task, entry.base_model, size,
                   entry.final_loss, [x for x in entry.loss_history if math.isfinite(x)], entry.created, entry.notes)
        card.search_text = " ".join((card.name, card.notes, card.variant, card.base_model)).casefold()
        return card

    def matches(self, query: str) -> bool:
        """Every word of the query appears in the name, notes, variant or base model."""
        return all(word in self.search_text for word in query.casefold().split())

    def describe(self) -> str:
        """One line for tooltips and screen readers."""
        parts = [self.name, self.variant]
        if self.rank:
            parts.append(f"rank {self.rank}")
        parts += [short_base(self.base_model), human_size(self.size_bytes)]
        if self.final_loss is not None:
            parts.append(f"final loss {self.final_loss:.4g}")
        if self.created:
            parts.append(short_date(self.created))
        return " · ".join(p for p in parts if p)


def sort_cards(cards: list[Card], key: str) -> list[Card]:
    if key == "oldest":
        return sorted(cards, key=lambda c: (c.created, c.name))
    if key == "name":
        return sorted(cards, key=lambda c: c.name.casefold())
    if key == "loss":       # adapters without a loss go last
        return sorted(cards, key=lambda c: (c.final_loss is None, c.final_loss or 0.0, c.name.casefold()))
    if key == "size":
        return sorted(cards, key=lambda c: (-c.size_bytes, c.name.casefold()))
    return sorted(cards, key=lambda c: (c.created, c.name), reverse=True)


class GalleryListModel(QAbstractListModel):
    """The cards on show, in order; CARD_ROLE gives a row's Card."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.cards: list[Card] = []

    def set_cards(self, cards: list[Card]) -> None:
        self.beginResetModel()
        self.cards = list(cards)
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.cards)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self.cards):
            return None
        card = self.cards[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return card.name
        if role == CARD_ROLE:
            return card
        if role == Qt.ItemDataRole.AccessibleTextRole:
            return card.describe()
        if role == Qt.ItemDataRole.ToolTipRole:     # the name in full first: a card elides it
            tip = f"{card.name}\n{card.describe()}"
            return tip + "\n" + card.notes[:300] if card.notes else tip
        return None

    def row_of(self, name: str) -> int:
        return next((i for i, c in enumerate(self.cards) if c.name == name), -1)


class CardDelegate(QStyledItemDelegate):
    """Paints a card: name; variant, rank and task; base model; size and date; on the right the
    final loss above a sparkline of the run's loss."""

    MARGIN = 4           # between cards
    PAD = 8              # inside a card
    SPARK_W = 96

    def sizeHint(self, option, index) -> QSize:
        line = QFontMetrics(option.font).height()
        return QSize(240, 2 * self.MARGIN + 2 * self.PAD + 4 * line + 6)

    @classmethod
    def name_width(cls, inner: float, loss: float, right: float) -> float:
        """The room for the name on a card's first line: all of it but the loss text at its right
        (the sparkline's column starts on the second line); the name is elided to it, and the
        card's tooltip holds it whole."""
        return max(inner - min(loss, right) - cls.PAD, 0.0)

    def paint(self, painter: QPainter, option, index) -> None:
        card: Card | None = index.data(CARD_ROLE)
        if card is None:
            return super().paint(painter, option, index)
        pal = option.palette
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        hovered = bool(option.state & QStyle.StateFlag.State_MouseOver)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        box = QRectF(option.rect).adjusted(self.MARGIN, self.MARGIN / 2, -self.MARGIN, -self.MARGIN / 2)
        fill = QColor(pal.color(QPalette.ColorRole.Base))
        highlight = pal.color(QPalette.ColorRole.Highlight)
        if selected:
            tint = QColor(highlight)
            tint.setAlpha(48)
            fill = _blend(fill, tint)
        elif hovered:
            fill = QColor(pal.color(QPalette.ColorRole.AlternateBase))
        border = QColor(highlight) if selected else QColor(pal.color(QPalette.ColorRole.Mid))
        painter.setPen(QPen(border, 2.0 if selected else 1.0))
        painter.setBrush(fill)
        painter.drawRoundedRect(box.adjusted(0.5, 0.5, -0.5, -0.5), 6, 6)

        text = pal.color(QPalette.ColorRole.Text)
        muted = QColor(pal.color(QPalette.ColorRole.PlaceholderText))
        inner = box.adjusted(self.PAD, self.PAD - 2, -self.PAD, -self.PAD + 2)
        fm = QFontMetrics(option.font)
        line = fm.height()
        right_w = min(self.SPARK_W, inner.width() * 0.4)
        left = QRectF(inner.left(), inner.top(), inner.width() - right_w - self.PAD, inner.height())
        right = QRectF(inner.right() - right_w, inner.top(), right_w, inner.height())

        bold = QFont(option.font)
        bold.setBold(True)
        loss = f"loss {card.final_loss:.4g}" if card.final_loss is not None else "no loss"
        painter.setFont(bold)
        painter.setPen(text)
        name_w = self.name_width(inner.width(), fm.horizontalAdvance(loss), right_w)
        name = QFontMetrics(bold).elidedText(card.name, Qt.TextElideMode.ElideRight, int(name_w))
        painter.drawText(QRectF(left.left(), left.top(), name_w, line), Qt.AlignmentFlag.AlignLeft, name)
        painter.setFont(option.font)
        what = [card.variant] + ([f"r {card.rank}"] if card.rank else []) + [TASK_TEXT.get(card.task, card.task)]
        rows = [(" · ".join(what), text, Qt.TextElideMode.ElideRight),
                (short_base(card.base_model) or "base model unknown", muted, Qt.TextElideMode.ElideMiddle),
                (" · ".join(p for p in (human_size(card.size_bytes), short_date(card.created)) if p), muted,
                 Qt.TextElideMode.ElideRight)]
        for i, (value, colour, mode) in enumerate(rows, start=1):
            painter.setPen(colour)
            painter.drawText(QRectF(left.left(), left.top() + i * line + 2, left.width(), line),
                             Qt.AlignmentFlag.AlignLeft, fm.elidedText(value, mode, int(left.width())))

        painter.setPen(text if card.final_loss is not None else muted)
        painter.drawText(QRectF(right.left(), right.top(), right.width(), line), Qt.AlignmentFlag.AlignRight,
                         fm.elidedText(loss, Qt.TextElideMode.ElideRight, int(right.width())))
        spark = QRectF(right.left(), right.top() + line + 6, right.width(), right.height() - line - 8)
        draw_sparkline(painter, spark, card.loss_history, QColor(SERIES_COLOURS[0]), muted)
        painter.restore()


def _blend(base: QColor, over: QColor) -> QColor:
    a = over.alphaF()
    return QColor.fromRgbF(base.redF() * (1 - a) + over.redF() * a, base.greenF() * (1 - a) + over.greenF() * a,
                           base.blueF() * (1 - a) + over.blueF() * a)


def sparkline_points(values: list[float], rect: QRectF) -> list[QPointF]:
    """The loss history mapped into `rect` (first value at the left, the lowest at the bottom)."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return []
    lo, hi = min(values), max(values)
    span = hi - lo if hi > lo else 1.0
    n = len(values)
    return [QPointF(rect.left() + (rect.width() * i / (n - 1) if n > 1 else rect.width() / 2),
                    rect.bottom() - (v - lo) / span * rect.height() if hi > lo else rect.center().y())
            for i, v in enumerate(values)]


def draw_sparkline(painter: QPainter, rect: QRectF, values: list[float], colour: QColor, faint: QColor) -> None:
    points = sparkline_points(values, rect.adjusted(2, 2, -3, -2))
    baseline = QColor(faint)
    baseline.setAlpha(70)
    painter.setPen(QPen(baseline, 1.0))
    painter.drawLine(QPointF(rect.left(), rect.bottom()), QPointF(rect.right(), rect.bottom()))
    if not points:
        return
    if len(points) > 1:
        path = QPainterPath(points[0])
        for p in points[1:]:
            path.lineTo(p)
        painter.setPen(QPen(colour, 1.5))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(path)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(colour)
    painter.drawEllipse(points[-1], 2.5, 2.5)


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


class FilterCombo(QComboBox):
    """A filter's combo, as wide as its first item ("All base models") however long the others
    are (a base model's hub id: whole in the open list and the tooltip), so that a long name never
    widens the gallery, and with it the window."""

    def minimumSizeHint(self) -> QSize:
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        fm = self.fontMetrics()
        text = fm.horizontalAdvance(self.itemText(0)) if self.count() else 0
        size = self.style().sizeFromContents(QStyle.ContentsType.CT_ComboBox, option, QSize(text, fm.height()), self)
        return QSize(size.width(), super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:
        return QSize(self.minimumSizeHint().width(), super().sizeHint().height())


class GalleryView(QWidget):
    """The cards with their search, sort and filters; the selected card's details; the strip that
    shows a gallery job's progress with its Cancel button."""

    selection_changed = Signal(str)          # the selected entry's name, "" for none
    cards_changed = Signal()                 # the gallery was (re-)read: self.cards is new
    notes_saved = Signal(str)                # entry name
    failed = Signal(str)                     # one readable line (the window's error banner)
    activated = Signal(str)                  # a card double-clicked / Enter
    context_menu_requested = Signal(object)  # a global QPoint
    cancel_requested = Signal()

    def __init__(self, root: str | Path | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("galleryView")
        self.setAccessibleName("Adapter gallery")
        self.root = root
        self.gallery = Gallery(root)
        self.cards: list[Card] = []
        self._selected = ""
        self._sized = False              # the splitter gets its first sizes at the first real size
        # entries added or removed by someone else (a CLI run, another window) show up by themselves
        self.watcher = QFileSystemWatcher(self)
        self.watcher.directoryChanged.connect(lambda *_: self._watch_timer.start())
        self._watch_timer = QTimer(self, singleShot=True, interval=400)
        self._watch_timer.timeout.connect(self._on_watch_timer)

        self.search = QLineEdit()
        self.search.setObjectName("gallerySearch")
        self.search.setAccessibleName("Search adapters")
        self.search.setPlaceholderText("Search name, notes, variant, base model")
        self.search.setClearButtonEnabled(True)
        self.sort_combo = QComboBox()
        self.sort_combo.setObjectName("gallerySort")
        self.sort_combo.setAccessibleName("Sort adapters")
        for key, text in SORTS.items():
            self.sort_combo.addItem(text, key)
        self.base_filter = FilterCombo()
        self.base_filter.setObjectName("galleryBaseFilter")
        self.base_filter.setAccessibleName("Filter by base model")
        self.variant_filter = FilterCombo()
        self.variant_filter.setObjectName("galleryVariantFilter")
        self.variant_filter.setAccessibleName("Filter by variant")
        # the sort combo is as wide as its longest order (a fixed, short list); the filters list base
        # models and variants, which can be long, so they are as wide as their "All …" item
        # (FilterCombo) and take the row's room, a longer name being in the combo's tooltip
        self.sort_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self._fill_filter(self.base_filter, "All base models", [])
        self._fill_filter(self.variant_filter, "All variants", [])
        for combo in (self.sort_combo, self.base_filter, self.variant_filter):
            combo.currentTextChanged.connect(lambda *_, c=combo: _tip(c))
            _tip(combo)
        self._search_timer = QTimer(self, singleShot=True, interval=120)
        self._search_timer.timeout.connect(self.apply_filters)
        self.search.textChanged.connect(lambda *_: self._search_timer.start())
        for combo in (self.sort_combo, self.base_filter, self.variant_filter):
            combo.currentIndexChanged.connect(lambda *_: self.apply_filters())

        self.model = GalleryListModel(self)
        self.list = QListView()
        self.list.setObjectName("galleryList")
        self.list.setAccessibleName("Adapters")
        self.list.setModel(self.model)
        self.list.setItemDelegate(CardDelegate(self.list))
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setUniformItemSizes(True)
        self.list.setMouseTracking(True)
        self.list.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(
            lambda pos: self.context_menu_requested.emit(self.list.viewport().mapToGlobal(pos)))
        # (doubleClicked, not activated: some desktops activate on a single click)
        self.list.doubleClicked.connect(lambda index: self.activated.emit(index.data() or ""))
        self.list.selectionModel().currentChanged.connect(self._on_list_current_changed)
        self.empty_note = QLabel()
        self.empty_note.setObjectName("galleryEmptyNote")
        self.empty_note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_note.setWordWrap(True)
        muted(self.empty_note)
        self.empty_note.setMargin(16)
        self.list_stack = QStackedWidget()
        self.list_stack.addWidget(self.list)
        self.list_stack.addWidget(self.empty_note)
        self.count_label = QLabel()
        self.count_label.setObjectName("galleryCount")
        muted(self.count_label)

        self.details = GalleryDetails()
        self.details.notes_finished.connect(self._on_details_notes_finished)
        self.details.compatible_activated.connect(self.select)
        self.details_scroll = QScrollArea()
        self.details_scroll.setObjectName("galleryDetailsScroll")
        self.details_scroll.setWidgetResizable(True)     # a narrow dock scrolls rather than clips the charts
        self.details_scroll.setWidget(self.details)

        self.job_label = QLabel()
        self.job_label.setObjectName("galleryJobLabel")
        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("galleryProgress")
        self.progress_bar.setAccessibleName("Gallery job progress")
        self.progress_bar.setMaximumHeight(16)
        self.progress_bar.setTextVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("galleryCancelButton")
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.job_strip = QWidget()
        self.job_strip.setObjectName("galleryJobStrip")
        strip = QVBoxLayout(self.job_strip)
        strip.setContentsMargins(0, 0, 0, 0)
        strip.setSpacing(2)
        strip.addWidget(self.job_label)
        bar_row = QHBoxLayout()
        bar_row.addWidget(self.progress_bar, 1)
        bar_row.addWidget(self.cancel_button)
        strip.addLayout(bar_row)
        self.job_strip.hide()

        cards = QWidget()
        cards_column = QVBoxLayout(cards)
        cards_column.setContentsMargins(0, 0, 0, 0)
        cards_column.setSpacing(4)
        cards_column.addWidget(self.search)
        # two rows: the three combos side by side would cut their texts in a dock of ~400 px
        order = QHBoxLayout()
        order.setSpacing(4)
        order.addWidget(self.sort_combo)
        order.addWidget(self.variant_filter, 1)
        cards_column.addLayout(order)
        cards_column.addWidget(self.base_filter)
        cards_column.addWidget(self.list_stack, 1)
        cards_column.addWidget(self.count_label)
        cards_column.addWidget(self.job_strip)
        cards.setMinimumWidth(240)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setObjectName("gallerySplitter")
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(cards)
        self.splitter.addWidget(self.details_scroll)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.splitter)

    def sizeHint(self) -> QSize:
        """PREFERRED_WIDTH wide (the window gives its dock that width), what the layout wants high.
        Not the layout's own width: that follows the widest chart control or title of the moment."""
        return QSize(PREFERRED_WIDTH, super().sizeHint().height())

    # -- reading the gallery -----------------------------------------------------------------

    def refresh(self, select: str | None = None) -> None:
        """Re-read the gallery; keep (or move to `select`) the selected card."""
        self.gallery = Gallery(self.root)
        keep = select if select is not None else self._selected
        try:
            entries = self.gallery.entries()
        except (OSError, StudioError) as e:
            entries = []
            self.failed.emit(f"gallery {self.gallery.root}: cannot read ({e})")
        self.cards = [Card.of(e) for e in entries]
        # the gallery folder, or while it does not exist yet the nearest folder it will be made in
        watch = self.gallery.root
        while not watch.is_dir() and watch.parent != watch:
            watch = watch.parent
        if watch.is_dir() and str(watch) not in self.watcher.directories():
            if self.watcher.directories():
                self.watcher.removePaths(self.watcher.directories())
            self.watcher.addPath(str(watch))
        bases = sorted({c.base_model for c in self.cards if c.base_model})
        self._fill_filter(self.base_filter, "All base models", bases)
        self._fill_filter(self.variant_filter, "All variants", sorted({c.variant for c in self.cards}))
        if select and select not in [c.name for c in self._filtered()]:
            self.clear_filters()          # a new or named entry must be on show to be selected
        self.apply_filters(keep=keep)
        self.cards_changed.emit()

    def clear_filters(self) -> None:
        for w in (self.search, self.base_filter, self.variant_filter):
            w.blockSignals(True)
        self.search.clear()
        self.base_filter.setCurrentIndex(0)
        self.variant_filter.setCurrentIndex(0)
        for w in (self.search, self.base_filter, self.variant_filter):
            w.blockSignals(False)

    @staticmethod
    def _fill_filter(combo: QComboBox, everything: str, values: list[str]) -> None:
        current = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(everything, ALL)
        for v in values:
            combo.addItem(short_base(v) if combo.objectName() == "galleryBaseFilter" else v, v)
            combo.setItemData(combo.count() - 1, v, Qt.ItemDataRole.ToolTipRole)
        index = combo.findData(current) if current is not None else 0
        combo.setCurrentIndex(max(index, 0))
        combo.blockSignals(False)
        _tip(combo)

    def _filtered(self) -> list[Card]:
        query = self.search.text().strip()
        base = self.base_filter.currentData() or ALL
        variant = self.variant_filter.currentData() or ALL
        cards = [c for c in self.cards if (not query or c.matches(query)) and (base == ALL or c.base_model == base)
                 and (variant == ALL or c.variant == variant)]
        return sort_cards(cards, self.sort_combo.currentData() or "newest")

    def apply_filters(self, keep: str | None = None) -> None:
        """Show the cards that pass the search and filters, in the chosen order."""
        self._search_timer.stop()
        keep = self._selected if keep is None else keep
        cards = self._filtered()
        self.list.selectionModel().blockSignals(True)
        self.model.set_cards(cards)
        self.list.selectionModel().blockSignals(False)
        if not self.cards:
            self.empty_note.setText("No adapters yet.\n\nA finished run adds its adapter here; "
                                    "Gallery ▸ Import adapter… adds one made elsewhere with PEFT.")
        else:
            self.empty_note.setText("No adapter matches the search and filters.")
        self.list_stack.setCurrentWidget(self.list if cards else self.empty_note)
        self.count_label.setText(f"{len(cards)} of {len(self.cards)} adapters" if len(cards) != len(self.cards)
                                 else f"{len(cards)} adapter{'s' if len(cards) != 1 else ''}")
        # a selected card that the filters hide is no longer selected
        self._set_current_row(self.model.row_of(keep) if keep else -1)

    def _set_current_row(self, row: int) -> None:
        if row >= 0:
            index = self.model.index(row)
            self.list.setCurrentIndex(index)
            self.list.scrollTo(index)
            self._on_list_current_changed(index)     # also when the index did not change (refresh)
        else:
            self.list.selectionModel().clearSelection()
            self.list.selectionModel().setCurrentIndex(QModelIndex(), self.list.selectionModel().SelectionFlag.Clear)
            self._on_list_current_changed(QModelIndex())

    def visible_names(self) -> list[str]:
        """The cards on show now, top to bottom."""
        return [c.name for c in self.model.cards]

    def selected_name(self) -> str:
        return self._selected

    def selected_entry(self) -> Entry | None:
        card = next((c for c in self.cards if c.name == self._selected), None)
        return card.entry if card else None

    def entries(self) -> list[Entry]:
        return [c.entry for c in self.cards]

    def select(self, name: str) -> bool:
        row = self.model.row_of(name)
        if row < 0 and any(c.name == name for c in self.cards):
            self.clear_filters()
            self.apply_filters(keep=name)
            row = self.model.row_of(name)
        if row < 0:
            return False
        self._set_current_row(row)
        return True

    # -- job strip ---------------------------------------------------------------------------

    def show_job(self, message: str, fraction: float | None = None) -> None:
        """Show (or update) the running job: its message, and a determinate bar when the fraction
        is known, else a busy one."""
        self.job_strip.show()
        self.job_label.setText(message)
        self.job_label.setToolTip(message)
        if fraction is None:
            self.progress_bar.setRange(0, 0)
        else:
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(int(round(fraction * 1000)))
        self.cancel_button.setEnabled(True)

    def hide_job(self) -> None:
        self.job_strip.hide()

    # -- handlers ----------------------------------------------------------------------------

    def _on_list_current_changed(self, index, *_):
        card: Card | None = index.data(CARD_ROLE) if index is not None and index.isValid() else None
        name = card.name if card else ""
        changed = name != self._selected or (card is not None and self.details.entry is not card.entry)
        self._selected = name
        if card is None:
            self.details.show_entry(None)
        elif changed:
            compatible = [c.entry for c in self.cards if c.name != card.name and _same_base(c.entry, card.entry)]
            self.details.show_entry(card.entry, compatible)
        if changed:
            self.selection_changed.emit(name)

    def _on_watch_timer(self) -> None:
        root = self.gallery.root
        try:
            names = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} \
                if root.is_dir() else set()
        except OSError:
            return
        if names != {c.name for c in self.cards}:
            self.refresh()

    def _on_details_notes_finished(self, name: str, notes: str) -> None:
        try:
            entry = self.gallery.annotate(name, notes)
        except StudioError as e:
            self.failed.emit(str(e))
            return
        except OSError as e:
            self.failed.emit(f"{name}: notes not saved ({e.strerror or e})")
            return
        for card in self.cards:
            if card.name == name:
                fresh = Card.of(entry)
                card.notes, card.entry, card.search_text = fresh.notes, fresh.entry, fresh.search_text
                if self.details.entry is not None and self.details.entry.name == name:
                    self.details.entry = fresh.entry
        self.list.viewport().update()
        self.notes_saved.emit(name)

    def resizeEvent(self, event) -> None:
        # beside each other when there is room for both, else the details below the cards
        wide = event.size().width() >= WIDE
        orientation = Qt.Orientation.Horizontal if wide else Qt.Orientation.Vertical
        if self.splitter.orientation() != orientation or not self._sized:
            self._sized = True
            self.splitter.setOrientation(orientation)
            total = event.size().width() if wide else event.size().height()
            self.splitter.setSizes([int(total * 0.38), int(total * 0.62)] if wide
                                   else [int(total * 0.36), int(total * 0.64)])
        super().resizeEvent(event)


def _tip(combo: QComboBox) -> None:
    """A combo's tooltip: what it is and its choice in full (a base model's item tooltip holds its
    full id, which the item text shortens)."""
    full = combo.itemData(combo.currentIndex(), Qt.ItemDataRole.ToolTipRole) if combo.currentIndex() >= 0 else None
    combo.setToolTip(f"{combo.accessibleName()}: {full or combo.currentText()}")


def _same_base(a: Entry, b: Entry) -> bool:
    from studio.core.gallery import same_base

    return same_base(a, b)
