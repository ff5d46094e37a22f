"""The Playground's widgets: the generation options, the two answer panes, and the per-label
probability table of a classifier (each probability drawn as a bar behind its number)."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QTextCursor
from PySide6.QtWidgets import (QAbstractItemView, QDoubleSpinBox, QGridLayout, QHBoxLayout, QHeaderView, QLabel,
                               QPlainTextEdit, QSpinBox, QStyledItemDelegate, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from .charts.common import SERIES_COLOURS
from .gallery_text import muted

SHARE_ROLE = Qt.ItemDataRole.UserRole + 1      # a probability cell's value, 0..1, drawn as a bar


class GenerationOptions(QWidget):
    """Max new tokens and temperature, in one row (hidden for a classifier)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.max_tokens = QSpinBox()
        self.max_tokens.setObjectName("playgroundMaxTokens")
        self.max_tokens.setAccessibleName("Maximum new tokens")
        self.max_tokens.setRange(1, 4096)
        self.max_tokens.setValue(128)
        self.temperature = QDoubleSpinBox()
        self.temperature.setObjectName("playgroundTemperature")
        self.temperature.setAccessibleName("Temperature")
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setDecimals(2)
        self.temperature.setSpecialValueText("0 (greedy)")
        self.temperature.setToolTip("0 picks the most likely token every time (the same answer every run)")
        options = QHBoxLayout(self)
        options.setContentsMargins(0, 0, 0, 0)
        options.addWidget(QLabel("Max new tokens"))
        options.addWidget(self.max_tokens)
        options.addSpacing(12)
        options.addWidget(QLabel("Temperature"))
        options.addWidget(self.temperature)
        options.addStretch(1)


def answer_pane(name: str, accessible: str) -> QPlainTextEdit:
    """A read-only pane that an answer is written into as it is generated."""
    pane = QPlainTextEdit()
    pane.setObjectName(name)
    pane.setAccessibleName(accessible)
    pane.setReadOnly(True)
    pane.setPlaceholderText("The answer appears here as it is generated")
    return pane


class AnswerPanes(QWidget):
    """"Base model" and "With adapter" side by side, each filled piece by piece."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.base_pane = answer_pane("playgroundBase", "Base model answer")
        self.adapted_pane = answer_pane("playgroundAdapted", "Answer with the adapter")
        self.base_title = QLabel("<b>Base model</b>")
        self.adapted_title = QLabel("<b>With adapter</b>")
        for label in (self.base_title, self.adapted_title):
            label.setTextFormat(Qt.TextFormat.RichText)
        panes = QGridLayout(self)
        panes.setContentsMargins(0, 0, 0, 0)
        panes.addWidget(self.base_title, 0, 0)
        panes.addWidget(self.adapted_title, 0, 1)
        panes.addWidget(self.base_pane, 1, 0)
        panes.addWidget(self.adapted_pane, 1, 1)

    def set_adapter_name(self, name: str) -> None:
        self.adapted_title.setText(f"<b>With adapter</b> · {escape(name)}")

    def clear(self) -> None:
        self.base_pane.clear()
        self.adapted_pane.clear()

    def append(self, which: str, text: str) -> None:
        """Add a piece at the end of the base pane, or of the adapted one (`which` "adapted")."""
        pane = self.adapted_pane if which == "adapted" else self.base_pane
        cursor = pane.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)
        pane.setTextCursor(cursor)
        pane.ensureCursorVisible()

    def settle(self, result) -> None:
        """The returned text is the whole answer: it settles anything a piece missed."""
        for pane, key in ((self.base_pane, "base"), (self.adapted_pane, "adapted")):
            if isinstance(result, dict) and isinstance(result.get(key), str) \
                    and pane.toPlainText() != result[key]:
                pane.setPlainText(result[key])


class ShareBarDelegate(QStyledItemDelegate):
    """A probability cell: a bar as long as the probability behind the number."""

    def paint(self, painter, option, index) -> None:
        share = index.data(SHARE_ROLE)
        if isinstance(share, (int, float)):
            colour = QColor(SERIES_COLOURS[0])
            colour.setAlpha(70)
            bar = QRectF(option.rect).adjusted(2, 3, -2, -3)
            bar.setWidth(max(0.0, min(1.0, float(share))) * bar.width())
            painter.save()
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(colour)
            painter.drawRect(bar)
            painter.restore()
        super().paint(painter, option, index)


class ClassificationView(QWidget):
    """A classifier's answer: the predicted label under each model, and each label's probability."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.prediction = QLabel()
        self.prediction.setObjectName("playgroundPrediction")
        self.prediction.setTextFormat(Qt.TextFormat.RichText)
        self.prediction.setWordWrap(True)
        self.table = QTableWidget(0, 3)
        self.table.setObjectName("playgroundClassification")
        self.table.setAccessibleName("Probability per label")
        self.table.setHorizontalHeaderLabels(["Label", "Base model", "With adapter"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setItemDelegate(ShareBarDelegate(self.table))
        class_column = QVBoxLayout(self)
        class_column.setContentsMargins(0, 0, 0, 0)
        class_column.addWidget(self.prediction)
        class_column.addWidget(self.table)
        self.class_note = QLabel("The base model has no trained classifier head (it is random, the same on every "
                                 "run): its probabilities are the baseline the adapter's head and update start "
                                 "from, not a prediction.")
        self.class_note.setObjectName("playgroundClassNote")
        self.class_note.setWordWrap(True)
        muted(self.class_note)
        class_column.addWidget(self.class_note)
        class_column.addStretch(1)

    def show_result(self, result: dict) -> None:
        """Fill the table and the prediction line from {"labels", "base", "adapted"}."""
        labels = [str(x) for x in result.get("labels") or []]
        base = [float(x) for x in result.get("base") or []]
        adapted = [float(x) for x in result.get("adapted") or []]
        self.table.setRowCount(len(labels))
        best = {"base": _argmax(base), "adapted": _argmax(adapted)}
        for row, label in enumerate(labels):
            cells = [label, _percent(base, row), _percent(adapted, row)]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    values = base if col == 1 else adapted
                    item.setData(SHARE_ROLE, values[row] if row < len(values) else None)
                if (col == 1 and row == best["base"]) or (col == 2 and row == best["adapted"]):
                    font = QFont(item.font())
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(row, col, item)
        parts = []
        for key, title, values in (("base", "Base model", base), ("adapted", "With adapter", adapted)):
            i = best[key]
            if i is not None and i < len(labels):
                parts.append(f"{title}: <b>{escape(labels[i])}</b> ({_percent(values, i)})")
        self.prediction.setText(" &nbsp;·&nbsp; ".join(parts))
        self.table.resizeRowsToContents()
        height = self.table.horizontalHeader().height() + sum(self.table.rowHeight(r) for r in range(len(labels)))
        self.table.setFixedHeight(height + 2 * self.table.frameWidth() + 2)


def _argmax(values: list[float]) -> int | None:
    return max(range(len(values)), key=values.__getitem__) if values else None


def _percent(values: list[float], i: int) -> str:
    return f"{100 * values[i]:.1f}%" if i < len(values) else "–"
