"""The Help menu: keyboard shortcuts, the documentation and About. Each function returns its dialog,
shown non-modal (tests read it; a person closes it).

    shortcuts_dialog(window)     # every action of the window that has a key, by menu
    docs_dialog(window)          # the README (the user guide), offline: from the checkout or the package
    about_box(window)
"""

from __future__ import annotations

import html
import re
from importlib import metadata
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHeaderView, QMessageBox, QTableWidget, QTableWidgetItem,
                               QTextBrowser, QVBoxLayout, QWidget)

from studio import __version__
from studio.core.variants import REGISTRY

PROJECT = "lora-studio"


def shortcut_rows(window: QWidget) -> list[tuple[str, str, str]]:
    """(menu, action, keys) for every action under the menu bar that has a shortcut, in menu order."""
    rows: list[tuple[str, str, str]] = []
    seen: set[int] = set()

    def walk(menu_title: str, actions) -> None:
        for action in actions:
            if action.menu() is not None:
                walk(menu_title, action.menu().actions())
                continue
            keys = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            if keys and id(action) not in seen:
                seen.add(id(action))
                rows.append((menu_title, action.text().replace("&", "").rstrip("…. "), keys))

    for top in window.menuBar().actions():
        if top.menu() is not None:
            walk(top.text().replace("&", ""), top.menu().actions())
    return rows


def shortcuts_dialog(window: QWidget) -> QDialog:
    rows = shortcut_rows(window)
    dialog = QDialog(window)
    dialog.setObjectName("shortcutsDialog")
    dialog.setWindowTitle("Keyboard shortcuts")
    table = QTableWidget(len(rows), 3, dialog)
    table.setObjectName("shortcutsTable")
    table.setHorizontalHeaderLabels(["Menu", "Action", "Keys"])
    table.verticalHeader().hide()
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    for i, row in enumerate(rows):
        for j, text in enumerate(row):
            table.setItem(i, j, QTableWidgetItem(text))
    table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
    table.resizeColumnsToContents()
    return _shown_with_close(dialog, table, 520, 480)


def _shown_with_close(dialog: QDialog, content: QWidget, width: int, height: int) -> QDialog:
    """`content` above a Close button, shown non-modal at width × height."""
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, dialog)
    buttons.rejected.connect(dialog.close)
    layout = QVBoxLayout(dialog)
    layout.addWidget(content)
    layout.addWidget(buttons)
    dialog.resize(width, height)
    dialog.show()
    return dialog


def documentation_text() -> str:
    """The user guide (README.md): the checkout's file, else the installed package's description."""
    checkout = Path(__file__).resolve().parents[2] / "README.md"
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    try:
        return metadata.metadata(PROJECT).get_payload() or metadata.metadata(PROJECT).get("Description", "")
    except metadata.PackageNotFoundError:
        return ""


def docs_dialog(window: QWidget) -> QDialog:
    dialog = QDialog(window)
    dialog.setObjectName("docsDialog")
    dialog.setWindowTitle("LoRA Studio documentation")
    view = QTextBrowser(dialog)
    view.setObjectName("docsView")
    view.setOpenExternalLinks(True)
    text = documentation_text()
    if text:
        # the guide's relative links point into the source tree, which a browser here cannot follow
        view.setMarkdown(re.sub(r"\]\((?!https?:|#)[^)]*\)", "]()", text))
    else:
        view.setPlainText("The documentation (README.md) is not installed with this copy of LoRA Studio.")
    return _shown_with_close(dialog, view, 820, 700)


def about_box(window: QWidget) -> QMessageBox:
    box = QMessageBox(window)
    box.setObjectName("aboutBox")
    box.setWindowTitle("About LoRA Studio")
    box.setTextFormat(Qt.TextFormat.RichText)
    titles = [v.display_name for v in REGISTRY.values()]
    listed = ", ".join(titles[:-1]) + f" and {titles[-1]}" if len(titles) > 1 else "".join(titles)
    box.setText(f"<b>LoRA Studio {__version__}</b><p>Parameter-efficient fine-tuning with live telemetry: "
                f"{html.escape(listed)}, on transformers and PEFT.</p><p>Help → Documentation has the user "
                "guide; Help → Keyboard shortcuts lists every key.</p>")
    box.setStandardButtons(QMessageBox.StandardButton.Close)
    box.setModal(False)
    box.show()
    return box


def help_actions(window: QWidget) -> dict[str, QAction]:
    """The Help menu's actions (the window adds them to its menu)."""
    def action(text: str, name: str, slot, keys=None) -> QAction:
        a = QAction(text, window)
        a.setObjectName(name)
        if keys is not None:
            a.setShortcut(QKeySequence(keys))
        a.triggered.connect(lambda *_: slot())
        return a

    return {"docs": action("&Documentation", "docsAction", lambda: setattr(window, "help_dialog", docs_dialog(window)),
                           QKeySequence.StandardKey.HelpContents),
            "shortcuts": action("&Keyboard shortcuts", "shortcutsAction",
                                lambda: setattr(window, "help_dialog", shortcuts_dialog(window)), "Ctrl+/"),
            "about": action("&About LoRA Studio", "aboutAction",
                            lambda: setattr(window, "help_dialog", about_box(window)))}
