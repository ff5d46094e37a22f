"""The folder an export of a gallery adapter writes (ExportFolderDialog): an existing folder, or
a new one named in the dialog, which the export makes.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QDialog, QFileDialog, QWidget


class ExportFolderDialog(QFileDialog):
    """Pick the folder an export writes: an existing folder, or the name of a new one typed in the
    name field (the export makes it). QFileDialog's own folder mode refuses a folder that does
    not exist yet (and so do the platforms' native pickers, hence Qt's own dialog here)."""

    def __init__(self, parent: QWidget | None, caption: str, start: str | Path = "", suggested: str = ""):
        super().__init__(parent, caption, str(start or ""))
        self.setObjectName("exportFolderDialog")
        self.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        self.setFileMode(QFileDialog.FileMode.Directory)
        self.setOption(QFileDialog.Option.ShowDirsOnly, True)
        self.setLabelText(QFileDialog.DialogLabel.FileName, "Folder:")
        self.setLabelText(QFileDialog.DialogLabel.Accept, "Export here")
        if suggested:
            self.selectFile(suggested)
        self.chosen = ""

    def accept(self) -> None:
        files = self.selectedFiles()
        path = Path(files[0]) if files else None
        if path is not None and not path.exists() and path.parent.is_dir():
            self.chosen = str(path)       # a new folder: QFileDialog.accept would refuse it
            QDialog.accept(self)
            return
        super().accept()
        if self.result() == QDialog.DialogCode.Accepted and files:
            self.chosen = files[0]
