"""The Gallery dock's widget (GalleryView): it composes the search and filters, the card list,
the selected adapter's details and the job strip, and re-reads the gallery when it changes on
disk. The actions on adapters live in gallery_actions.py (GalleryController).

    view = GalleryView()                    # objectName "galleryView"; a dock in the window
    view.refresh(select="my-adapter")       # re-read studio.core.gallery.Gallery()
    view.visible_names()                    # what the cards show now, top to bottom

Listing, renaming, annotating and deleting are instant (JSON files and folder renames) and run on
the GUI thread.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QFileSystemWatcher, QModelIndex, QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QLabel, QListView, QScrollArea, QSplitter, QStackedWidget,
                               QVBoxLayout, QWidget)

from studio.core.errors import StudioError
from studio.core.gallery import Entry, Gallery

from .gallery_card_delegate import CardDelegate
from .gallery_cards import CARD_ROLE, Card, GalleryListModel
from .gallery_details import GalleryDetails
from .gallery_filters import GalleryFilters
from .gallery_job_strip import GalleryJobStrip
from .gallery_text import failure_line, muted

WIDE = 760                    # px: wider than this, the details sit beside the cards, else below
# px: the width the gallery asks for (sizeHint), which shows the sort and filter combos, a card's
# name and the details without cutting them; its minimum width stays far below it (about 250 px),
# so a dock holding it never pushes the window's minimum width up (the window fits 1280×800)
PREFERRED_WIDTH = 400
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

        self.filters = GalleryFilters()
        self.filters.changed.connect(lambda: self.apply_filters())
        # the filters' controls, by the names the window and its tests know them
        self.search = self.filters.search
        self.sort_combo = self.filters.sort_combo
        self.base_filter = self.filters.base_filter
        self.variant_filter = self.filters.variant_filter

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

        self.job_strip = GalleryJobStrip()
        self.job_strip.cancel_requested.connect(self.cancel_requested)
        self.job_label = self.job_strip.label
        self.progress_bar = self.job_strip.progress_bar
        self.cancel_button = self.job_strip.cancel_button

        cards = QWidget()
        cards_column = QVBoxLayout(cards)
        cards_column.setContentsMargins(0, 0, 0, 0)
        cards_column.setSpacing(4)
        cards_column.addWidget(self.filters)
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
        self.filters.fill(self.cards)
        if select and select not in [c.name for c in self.filters.passing(self.cards)]:
            self.clear_filters()          # a new or named entry must be on show to be selected
        self.apply_filters(keep=keep)
        self.cards_changed.emit()

    def clear_filters(self) -> None:
        self.filters.clear()

    def apply_filters(self, keep: str | None = None) -> None:
        """Show the cards that pass the search and filters, in the chosen order."""
        self.filters.cancel_pending()
        keep = self._selected if keep is None else keep
        cards = self.filters.passing(self.cards)
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
        self.job_strip.show_job(message, fraction)

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
        except (StudioError, OSError) as e:
            self.failed.emit(failure_line(name, "notes not saved", e))
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


def _same_base(a: Entry, b: Entry) -> bool:
    from studio.core.gallery import same_base

    return same_base(a, b)
