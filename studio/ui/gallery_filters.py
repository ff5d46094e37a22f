"""The row above the gallery's cards (GalleryFilters): the search field, the sort order and the
base-model and variant filters, and which cards pass them, in which order.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLineEdit, QStyle, QStyleOptionComboBox, QVBoxLayout,
                               QWidget)

from .gallery_cards import SORTS, Card, sort_cards
from .gallery_text import short_base

ALL = ""                      # the filter combos' "everything" item data


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


class GalleryFilters(QWidget):
    """The search field (name, notes, variant, base model), the sort combo and the two filters.
    `changed` says that what passes them, or its order, changed: at once for a combo, after a
    short pause in typing for the search."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
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
        self._search_timer.timeout.connect(self.changed)
        self.search.textChanged.connect(lambda *_: self._search_timer.start())
        for combo in (self.sort_combo, self.base_filter, self.variant_filter):
            combo.currentIndexChanged.connect(lambda *_: self.changed.emit())

        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(4)
        column.addWidget(self.search)
        # two rows: the three combos side by side would cut their texts in a dock of ~400 px
        order = QHBoxLayout()
        order.setSpacing(4)
        order.addWidget(self.sort_combo)
        order.addWidget(self.variant_filter, 1)
        column.addLayout(order)
        column.addWidget(self.base_filter)

    def fill(self, cards: list[Card]) -> None:
        """List the base models and variants of `cards` in the filters, keeping their choices."""
        bases = sorted({c.base_model for c in cards if c.base_model})
        self._fill_filter(self.base_filter, "All base models", bases)
        self._fill_filter(self.variant_filter, "All variants", sorted({c.variant for c in cards}))

    def clear(self) -> None:
        """No search, every base model and variant (the order stays); `changed` is not emitted."""
        for w in (self.search, self.base_filter, self.variant_filter):
            w.blockSignals(True)
        self.search.clear()
        self.base_filter.setCurrentIndex(0)
        self.variant_filter.setCurrentIndex(0)
        for w in (self.search, self.base_filter, self.variant_filter):
            w.blockSignals(False)

    def cancel_pending(self) -> None:
        """Drop a search change not reported yet (the caller is filtering the cards now anyway)."""
        self._search_timer.stop()

    def passing(self, cards: list[Card]) -> list[Card]:
        """The cards that pass the search and filters, in the chosen order."""
        query = self.search.text().strip()
        base = self.base_filter.currentData() or ALL
        variant = self.variant_filter.currentData() or ALL
        cards = [c for c in cards if (not query or c.matches(query)) and (base == ALL or c.base_model == base)
                 and (variant == ALL or c.variant == variant)]
        return sort_cards(cards, self.sort_combo.currentData() or "newest")

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


def _tip(combo: QComboBox) -> None:
    """A combo's tooltip: what it is and its choice in full (a base model's item tooltip holds its
    full id, which the item text shortens)."""
    full = combo.itemData(combo.currentIndex(), Qt.ItemDataRole.ToolTipRole) if combo.currentIndex() >= 0 else None
    combo.setToolTip(f"{combo.accessibleName()}: {full or combo.currentText()}")
