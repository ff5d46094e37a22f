"""How the gallery writes things: short base-model names and dates, task names, muted and bold
labels, and the one line for a change that failed. Shared by the cards, the details pane, the
dialogs, the actions and the playground.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel

from studio.core.errors import StudioError

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


def failure_line(name: str, doing: str, error: Exception) -> str:
    """One line for a gallery change that failed: the engine's own sentence (a StudioError), or
    the operating system's reason ("adapter-1: cannot rename (Permission denied)")."""
    if isinstance(error, StudioError):
        return str(error)
    return f"{name}: {doing} ({getattr(error, 'strerror', None) or error})"
