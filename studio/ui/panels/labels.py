"""The labels the set-up panels share: an error line next to a field, and a rich-text note."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from ..forms import ERROR_STYLE

NOTE_STYLE = "color: palette(placeholder-text);"


def error_label(name: str, hidden: bool = True) -> QLabel:
    """A word-wrapped, selectable label in the error style; hidden until `show_error` unless
    `hidden` is False (the gallery dialogs' problem line)."""
    label = QLabel()
    label.setObjectName(name)
    label.setStyleSheet(ERROR_STYLE)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    if hidden:
        label.hide()
    return label


def note_label(name: str) -> QLabel:
    """A word-wrapped, selectable rich-text label for what a panel detected."""
    label = QLabel()
    label.setObjectName(name)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def show_error(label: QLabel, text: str | None) -> None:
    """Show `text` in an error label, or hide the label when there is none."""
    label.setText(text or "")
    label.setVisible(bool(text))
