"""Paints a gallery card (CardDelegate): its name, variant, base model, size and date, and its
final loss above a sparkline of the run's loss.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import QStyle, QStyledItemDelegate

from studio.core.modelcache import human_size

from .charts.common import SERIES_COLOURS
from .gallery_cards import CARD_ROLE, Card
from .gallery_text import TASK_TEXT, short_base, short_date


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

