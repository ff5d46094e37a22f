"""Light and dark themes. "system" follows the desktop's colour scheme (Qt 6.5+ reports it through
QStyleHints.colorScheme and signals its changes); "light" and "dark" force one. The Fusion style
draws both the same way on every platform; charts read their colours from the palette."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette, QPen
from PySide6.QtWidgets import QApplication, QProxyStyle, QStyle

# Widget classes a desktop's platform theme may give palettes of their own (Qt keeps them per class,
# and an application palette does not replace them): the About box stayed light under "dark".
THEMED_CLASSES = ("QMessageBox", "QMessageBoxLabel", "QLabel", "QDialog", "QAbstractButton", "QPushButton",
                  "QToolButton", "QCheckBox", "QRadioButton", "QComboBox", "QAbstractItemView", "QHeaderView",
                  "QLineEdit", "QTextEdit", "QPlainTextEdit", "QTextBrowser", "QTabBar", "QMenu", "QMenuBar",
                  "QToolTip", "QTipLabel", "QDockWidget", "QGroupBox", "QSpinBox", "QScrollBar")

THEMES = ("system", "light", "dark")
_state = {"mode": "system", "connected": False, "default_palette": None}


def dark_palette() -> QPalette:
    p = QPalette()
    window, base, text = QColor(37, 38, 41), QColor(27, 28, 30), QColor(222, 222, 222)
    disabled = QColor(120, 120, 120)
    role = QPalette.ColorRole
    for r, c in ((role.Window, window), (role.WindowText, text), (role.Base, base),
                 (role.AlternateBase, QColor(45, 46, 50)), (role.ToolTipBase, QColor(50, 50, 54)),
                 (role.ToolTipText, text), (role.PlaceholderText, QColor(140, 140, 140)),
                 (role.Text, text), (role.Button, QColor(50, 51, 55)), (role.ButtonText, text),
                 (role.BrightText, QColor(255, 90, 90)), (role.Link, QColor(100, 160, 255)),
                 (role.Highlight, QColor(58, 110, 200)), (role.HighlightedText, QColor(255, 255, 255))):
        p.setColor(r, c)
    for r in (role.WindowText, role.Text, role.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, r, disabled)
    return p


class StudioStyle(QProxyStyle):
    """Fusion, with check boxes that show on a dark palette: Fusion outlines a check box in the
    window colour made darker, which on a dark base (the Runs list's overlay boxes) is invisible.
    Qt has no palette role for that outline, so the box gets a light edge drawn here."""

    def drawPrimitive(self, element, option, painter, widget=None):  # noqa: N802 (Qt's name)
        super().drawPrimitive(element, option, painter, widget)
        if element in (QStyle.PrimitiveElement.PE_IndicatorCheckBox,
                       QStyle.PrimitiveElement.PE_IndicatorItemViewItemCheck) and _state.get("dark"):
            edge = QColor(option.palette.color(QPalette.ColorRole.Text))
            edge.setAlpha(170)
            painter.save()
            painter.setPen(QPen(edge, 1))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(option.rect.adjusted(1, 1, -2, -2))
            painter.restore()


def system_is_dark(app: QApplication) -> bool:
    try:
        return app.styleHints().colorScheme() == Qt.ColorScheme.Dark
    except AttributeError:   # Qt < 6.5: judge by the default palette
        return app.palette().color(QPalette.ColorRole.Window).lightness() < 128


def apply_theme(app: QApplication, mode: str = "system") -> str:
    """Apply a theme; returns the one in effect ("light" or "dark")."""
    if mode not in THEMES:
        mode = "system"
    _state["mode"] = mode
    if _state["default_palette"] is None:
        app.setStyle(StudioStyle("Fusion"))
        _state["default_palette"] = QPalette(app.palette())
    if not _state["connected"]:
        try:
            app.styleHints().colorSchemeChanged.connect(lambda *_: _on_scheme_changed(app))
        except AttributeError:
            pass
        _state["connected"] = True
    dark = mode == "dark" or (mode == "system" and system_is_dark(app))
    _state["dark"] = dark
    palette = dark_palette() if dark else QPalette(app.style().standardPalette())
    app.setPalette(palette)
    for name in THEMED_CLASSES:          # every dialog and widget class follows the theme
        app.setPalette(palette, name)
    return "dark" if dark else "light"


def _on_scheme_changed(app: QApplication) -> None:
    if _state["mode"] == "system":
        apply_theme(app, "system")
