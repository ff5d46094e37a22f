"""A wheel turned over a combo box or spin box that the person has not clicked into scrolls the
column it sits in, and changes nothing.

Qt hands a wheel event to whatever widget is under the pointer, and combo and spin boxes take it
as "next value" even without focus: scrolling the set-up column walked the variant from adalora to
dora to delta-lora, and r from 16 to 12. One application-wide event filter, installed once, passes
such a wheel to the nearest scroll area instead. A box that has focus (clicked, or tabbed into)
still takes the wheel as Qt intends. Qt has no setting for this; superqt neither.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QAbstractScrollArea, QAbstractSpinBox, QApplication, QComboBox, QWidget


class WheelGuard(QObject):
    def eventFilter(self, obj: QObject, event: QEvent) -> bool:   # noqa: N802 (Qt's name)
        if event.type() != QEvent.Type.Wheel or not isinstance(obj, QWidget):
            return False
        box = obj if isinstance(obj, (QComboBox, QAbstractSpinBox)) else None
        if box is None and isinstance(obj.parentWidget(), (QComboBox, QAbstractSpinBox)):
            box = obj.parentWidget()   # the line edit inside an editable combo or a spin box
        if box is None or box.hasFocus():
            return False
        area = box.parentWidget()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parentWidget()
        if area is not None:
            QApplication.sendEvent(area.verticalScrollBar(), event)
        return True   # the box itself never sees it


def install(app: QApplication | None = None) -> None:
    """Install the guard on the application once (idempotent)."""
    app = app or QApplication.instance()
    if app is None or getattr(app, "studio_wheel_guard", None) is not None:
        return
    guard = WheelGuard(app)
    app.installEventFilter(guard)
    app.studio_wheel_guard = guard   # our attribute on the application object
