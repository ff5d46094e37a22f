"""Labels whose text never sets the window's width: superqt's QElidingLabel shortens the text to the
room it gets ("…" at the end) and we keep the whole text in the tooltip when it is cut.

    label = ElidedLabel(name="runTitle")
    label.setText(long_text)        # shown shortened to the label's width; label.toolTip() is the whole
    label.full_text()               # the whole text
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QLabel, QSizePolicy
from superqt import QElidingLabel


class ElidedLabel(QElidingLabel):
    def __init__(self, text: str = "", parent=None, name: str = "", tip: str = ""):
        super().__init__(parent)
        if name:
            self.setObjectName(name)
        self._tip = tip                     # a fixed explanation, shown above the whole text
        # asks for its whole text (sizeHint) and takes less when there is less (minimumSizeHint: "…")
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setElideMode(Qt.TextElideMode.ElideRight)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        if text == getattr(self, "_text", None):   # the status bar sets the same texts ten times a second
            return
        super().setText(text)
        # the size asked for follows the whole text; QLabel re-asks its layout only when the shown
        # (shortened) text changes, and a label laid out narrow shows "" before and after
        self.updateGeometry()
        self._update_tip()

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._update_tip()

    def set_tip(self, tip: str) -> None:
        """A fixed tooltip (the whole text is added below it when the text is shortened)."""
        self._tip = tip
        self._update_tip()

    def sizeHint(self) -> QSize:  # noqa: N802
        hint = super().sizeHint()
        if self.wordWrap():
            return hint
        margins = self.contentsMargins()
        whole = self.fontMetrics().horizontalAdvance(self.full_text()) + margins.left() + margins.right() + 4
        return QSize(max(hint.width(), whole), hint.height())

    def shown_text(self) -> str:
        """The text as drawn (shortened when it does not fit)."""
        return QLabel.text(self)   # superqt's text() is the whole text

    def is_elided(self) -> bool:
        return self.shown_text() != self.full_text()

    def _update_tip(self) -> None:
        whole = self.full_text()
        parts = [p for p in (self._tip, whole if self.is_elided() or not self._tip else "") if p]
        self.setToolTip("\n".join(parts))
