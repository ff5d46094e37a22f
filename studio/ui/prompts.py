"""What the window asks a person: a file to open or save, a folder, a line of text, a yes or no,
and handing an address to the desktop. One object, `window.prompts`, so that the window and its
controllers (gallery_actions.py, the run session) ask the same way and tests replace one method:

    window.prompts.ask_directory = lambda caption: str(folder)
    window.prompts.confirm = lambda title, text: True
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QInputDialog, QLineEdit, QMessageBox, QWidget


class Prompts:
    """Modal questions over `parent`. `start_folder()` is where a folder picker opens (the runs
    folder); `start_file()` the name a save dialog suggests (the config's path)."""

    def __init__(self, parent: QWidget, start_folder: Callable[[], str], start_file: Callable[[], str]):
        self.parent = parent
        self.start_folder = start_folder
        self.start_file = start_file

    def ask_open_file(self, caption: str, file_filter: str) -> str:
        path, _ = QFileDialog.getOpenFileName(self.parent, caption, "", file_filter)
        return path

    def ask_save_file(self, caption: str, file_filter: str) -> str:
        path, _ = QFileDialog.getSaveFileName(self.parent, caption, self.start_file(), file_filter)
        return path

    def ask_directory(self, caption: str) -> str:
        return QFileDialog.getExistingDirectory(self.parent, caption, self.start_folder())

    def ask_text(self, title: str, label: str, text: str = "") -> str | None:
        """One line of text from the person (a new name), or None when cancelled."""
        value, ok = QInputDialog.getText(self.parent, title, label, QLineEdit.EchoMode.Normal, text)
        return value if ok else None

    def open_url(self, url) -> bool:
        """Hand a file or web address to the desktop (the file manager, the browser)."""
        return QDesktopServices.openUrl(url)

    def confirm(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self.parent, title, text,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes
