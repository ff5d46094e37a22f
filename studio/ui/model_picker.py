"""ModelPickerDialog: choose a base model among those already on this machine.

The list comes from studio.core.modelcache (the Hugging Face cache and the folders the person
added; `lora-studio models` lists the same), read in a BackgroundJob: a large cache takes a while
to walk, and the window must not freeze meanwhile. A filter hides the rows that do not match every
word typed. OK (or a double-click, or Enter in the filter) emits `chosen` with the entry's
`source`, which the model panel puts into its combo; the panel's own check then reads the model.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout,
                               QHeaderView, QLabel, QLineEdit, QMenu, QPushButton, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from studio.core import modelcache
from studio.core.errors import StudioError

from .forms import ERROR_STYLE
from .tasks import TaskSlot

COLUMNS = ("Name", "Type", "Size", "Revision", "Where")
ENTRY_ROLE = Qt.ItemDataRole.UserRole   # column 0 holds the entry's index in self.models
KIND_LABELS = {"hub-cache": "Hugging Face cache", "folder": "folder", "gguf": "GGUF file"}


def where_text(entry: dict) -> str:
    """Where a model was found, for a person: the cache, or the added folder (home as ~)."""
    if entry["kind"] == "hub-cache" or (entry["kind"] == "gguf" and entry.get("hub_id")):
        return "Hugging Face cache"
    where = entry.get("where") or ""
    home = str(Path.home())
    return "~" + where[len(home):] if home and where.startswith(home + "/") else where


def type_text(entry: dict) -> str:
    if entry["kind"] == "gguf":
        return "GGUF"
    return entry.get("model_type") or entry.get("architecture") or ""


def tooltip(entry: dict) -> str:
    lines = [f"<b>{escape(entry['name'])}</b> ({KIND_LABELS.get(entry['kind'], entry['kind'])})",
             f"model.source = {escape(entry['source'])}"]
    if entry.get("architecture"):
        lines.append(f"architecture: {escape(entry['architecture'])}")
    if entry.get("commit"):
        refs = ", ".join(entry.get("refs") or []) or "no ref"
        lines.append(f"commit {escape(entry['commit'])} ({escape(refs)})")
    if entry.get("note"):
        lines.append(f"<i>{escape(entry['note'])}</i>")
    return "<br>".join(lines)


class ModelPickerDialog(QDialog):
    """The models in the Hugging Face cache and the added folders, with a filter."""

    chosen = Signal(str)    # the picked entry's source, what model.source should say

    def __init__(self, parent: QWidget | None = None, cache_dir=None, current: str = ""):
        super().__init__(parent)
        self.setObjectName("modelPickerDialog")
        self.setWindowTitle("Models on this machine")
        self.cache_dir = cache_dir          # None: the Hugging Face cache the environment names
        self.current = current              # selected when the list arrives, if it is there
        self.models: list[dict] = []
        self.notes: list[str] = []
        self.scan_task = TaskSlot(self, "scanModels")
        self._again = False                 # the folders changed while a listing was under way

        self.filter_edit = QLineEdit()
        self.filter_edit.setObjectName("modelPickerFilter")
        self.filter_edit.setAccessibleName("Filter models")
        self.filter_edit.setPlaceholderText("Filter: name, type, revision or path…")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setToolTip("Shows the models whose name, type, revision or path holds every word typed")
        self.filter_edit.textChanged.connect(self._apply_filter)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("modelPickerTable")
        self.table.setAccessibleName("Models found")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda *_: self._accept_selected())

        self.status = QLabel("Reading the Hugging Face cache and the added folders…")
        self.status.setObjectName("modelPickerStatus")
        self.status.setForegroundRole(QPalette.ColorRole.PlaceholderText)   # grey, following the theme
        self.status.setWordWrap(True)
        self.notes_label = QLabel()
        self.notes_label.setObjectName("modelPickerNotes")
        self.notes_label.setWordWrap(True)
        self.notes_label.setTextFormat(Qt.TextFormat.PlainText)
        self.notes_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.notes_label.hide()
        self.error = QLabel()
        self.error.setObjectName("modelPickerError")
        self.error.setStyleSheet(ERROR_STYLE)
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()

        self.add_button = QPushButton("Add folder…")
        self.add_button.setObjectName("modelPickerAddFolder")
        self.add_button.setToolTip("Also look for models in a folder: a model folder, or a folder of model "
                                   "folders and .gguf files (remembered; `lora-studio models` sees it too)")
        self.add_button.clicked.connect(self._on_add_clicked)
        self.remove_button = QPushButton("Remove folder")
        self.remove_button.setObjectName("modelPickerRemoveFolder")
        self.remove_button.setToolTip("Stop looking in a folder added before (nothing is deleted)")
        self.remove_menu = QMenu(self.remove_button)
        self.remove_menu.setObjectName("modelPickerRemoveMenu")
        self.remove_button.setMenu(self.remove_menu)
        self.rescan_button = QPushButton("Rescan")
        self.rescan_button.setObjectName("modelPickerRescan")
        self.rescan_button.setToolTip("Read the Hugging Face cache and the added folders again")
        self.rescan_button.clicked.connect(self.start)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setObjectName("modelPickerOkButton")
        self.ok_button.setText("Use model")
        self.ok_button.setEnabled(False)
        self.buttons.button(QDialogButtonBox.StandardButton.Cancel).setObjectName("modelPickerCancelButton")
        self.buttons.accepted.connect(self._accept_selected)
        self.buttons.rejected.connect(self.reject)

        folders = QHBoxLayout()
        folders.addWidget(self.add_button)
        folders.addWidget(self.remove_button)
        folders.addWidget(self.rescan_button)
        folders.addStretch(1)
        column = QVBoxLayout(self)
        column.addWidget(self.filter_edit)
        column.addWidget(self.table, 1)
        column.addWidget(self.status)
        column.addWidget(self.notes_label)
        column.addWidget(self.error)
        column.addLayout(folders)
        column.addWidget(self.buttons)
        self._fill_remove_menu()
        self.resize(760, 420)

    # -- the listing -------------------------------------------------------------------------

    def start(self) -> None:
        """Read the models in the background (again); the table fills when they arrive."""
        if self.scan_task.busy:
            self._again = True
            return
        cache_dir = self.cache_dir
        self.status.setText("Reading the Hugging Face cache and the added folders…")
        self.rescan_button.setEnabled(False)
        self.scan_task.start(lambda progress, should_stop: modelcache.scan_models(cache_dir=cache_dir),
                             done=self._on_scanned, failed=self._on_scan_failed,
                             cancelled=lambda: self._on_scan_failed(None))

    @property
    def loading(self) -> bool:
        return self.scan_task.busy

    def _on_scanned(self, result) -> None:
        self.rescan_button.setEnabled(True)
        models, notes = result
        self.set_models(models, notes)
        self._start_again()

    def _on_scan_failed(self, text: str | None) -> None:
        self.rescan_button.setEnabled(True)
        self.status.setText("The models could not be listed." if text else "Listing stopped.")
        self._show_error(text)
        self._start_again()

    def _start_again(self) -> None:
        if self._again:
            self._again = False
            self.start()

    def set_models(self, models: list[dict], notes: list[str] | None = None) -> None:
        """Show a listing (what scan_models returned); keeps the selection's source if still there."""
        keep = self.selected_entry()
        keep_source = keep["source"] if keep else self.current
        self.models = list(models)
        self.notes = list(notes or [])
        self.table.setSortingEnabled(False)
        self.table.clearSelection()
        self.table.setRowCount(len(self.models))
        for row, entry in enumerate(self.models):
            size = modelcache.human_size(entry.get("size_bytes"))
            values = (entry["name"], type_text(entry), size, modelcache.revision_text(entry), where_text(entry))
            tip = tooltip(entry)
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setToolTip(tip)
                if column == 0:
                    item.setData(ENTRY_ROLE, row)
                    if entry.get("note"):
                        item.setForeground(self.palette().placeholderText())
                if column == 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        self.notes_label.setText("\n".join(self.notes))
        self.notes_label.setVisible(bool(self.notes))
        self._fill_remove_menu()
        self._apply_filter()
        for row, entry in enumerate(self.models):
            if keep_source and entry["source"] == keep_source and not self.table.isRowHidden(row):
                self.table.selectRow(row)
                break
        self._update_buttons()

    def _apply_filter(self, *_) -> None:
        text = self.filter_edit.text()
        shown = 0
        for row, entry in enumerate(self.models):
            hidden = not modelcache.matches(entry, text)
            self.table.setRowHidden(row, hidden)
            shown += not hidden
        selected = self._selected_row()
        if selected is not None and self.table.isRowHidden(selected):
            self.table.clearSelection()
        if self._selected_row() is None and text.strip():
            first = next((r for r in range(len(self.models)) if not self.table.isRowHidden(r)), None)
            if first is not None:    # Enter in the filter then takes the best match
                self.table.selectRow(first)
        self._update_status(shown)
        self._update_buttons()

    def _update_status(self, shown: int) -> None:
        total = len(self.models)
        if not total:
            cache = modelcache.hub_cache_dir() if self.cache_dir is None else self.cache_dir
            self.status.setText(f"No models in the Hugging Face cache ({cache}) or the added folders. Add a "
                                "folder that holds models, or type a source in the model field.")
        elif shown == total:
            self.status.setText(f"{total} model{'s' if total != 1 else ''}")
        else:
            self.status.setText(f"{shown} of {total} models match the filter")

    # -- the choice --------------------------------------------------------------------------

    def _selected_row(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if rows else None

    def selected_entry(self) -> dict | None:
        row = self._selected_row()
        if row is None or self.table.isRowHidden(row):
            return None
        index = self.table.item(row, 0).data(ENTRY_ROLE)
        return self.models[index] if index is not None and 0 <= index < len(self.models) else None

    def _update_buttons(self) -> None:
        self.ok_button.setEnabled(self.selected_entry() is not None)

    def _accept_selected(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        self.chosen.emit(entry["source"])
        self.accept()

    # -- added folders -----------------------------------------------------------------------

    def _fill_remove_menu(self) -> None:
        self.remove_menu.clear()
        folders = modelcache.added_folders()
        for folder in folders:
            action = self.remove_menu.addAction(folder)
            action.triggered.connect(lambda _=False, f=folder: self.remove_folder(f))
        self.remove_button.setEnabled(bool(folders))

    def _on_add_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "A folder that holds models", "")
        if path:
            self.add_folder(path)

    def add_folder(self, path: str) -> bool:
        """Remember `path` and list again; a reason is shown when it cannot be added."""
        return self._change_folders(modelcache.add_folder, path)

    def remove_folder(self, path: str) -> bool:
        return self._change_folders(modelcache.remove_folder, path)

    def _change_folders(self, change, path: str) -> bool:
        try:
            change(path)
        except (StudioError, OSError) as e:
            self._show_error(str(e))
            return False
        self._show_error(None)
        self._fill_remove_menu()
        self.start()
        return True

    def _show_error(self, text: str | None) -> None:
        self.error.setText(text or "")
        self.error.setVisible(bool(text))

    # -- closing -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Wait for a listing under way (a window closing must not leave its thread behind)."""
        self.scan_task.shutdown(30000)
