"""The gallery's cards as data: what one card shows (Card), the orders they can be sorted in, and
the list model that holds the cards on show. CardDelegate (gallery_card_delegate.py) paints them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, Qt

from studio.core.gallery import Entry
from studio.core.modelcache import human_size

from .gallery_text import short_base, short_date

CARD_ROLE = Qt.ItemDataRole.UserRole + 1
SORTS = {"newest": "Newest first", "oldest": "Oldest first", "name": "Name", "loss": "Final loss (lowest first)",
         "size": "Size (largest first)"}


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

