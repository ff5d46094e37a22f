"""The Dataset panel: the data file (dialog or drop), its options, and the detected format and
token statistics (the preview runs in a BackgroundJob; the window's preview pane draws it)."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from studio.core.config import DataSection

from ..forms import FileField, OptionsForm
from ..tasks import TaskSlot
from .dataset_preview import preview_summary_html
from .labels import error_label, note_label, show_error

DATA_FILTER = "Datasets (*.jsonl *.json *.csv *.parquet *.txt);;All files (*)"
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")


class DataPanel(QGroupBox):
    """Dataset: file dialog or drop, the detected format, statistics; the preview itself is
    drawn by the window's preview pane from `preview_ready`."""
    _runtime_error = False

    changed = Signal()
    preview_ready = Signal(dict)
    preview_started = Signal()
    preview_progress = Signal(str)
    preview_failed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Dataset", parent)
        self.setObjectName("dataPanel")
        self.setAcceptDrops(True)
        self.path = FileField(object_name="dataPath", caption="Training data file", file_filter=DATA_FILTER)
        self.path.changed.connect(self._on_input_changed)
        self.options = OptionsForm(DataSection, prefix="data", skip=("path",))
        self.options.changed.connect(self._on_input_changed)
        self.info = note_label("dataInfo")
        self.error = error_label("dataError")
        self.preview_button = QPushButton("Preview")
        self.preview_button.setObjectName("previewButton")
        self.preview_button.setToolTip("Show the first rows as the model will see them, and token statistics")
        self.preview_button.clicked.connect(self.start_preview)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("previewCancelButton")
        self.cancel_button.clicked.connect(self.cancel_preview)
        self.cancel_button.hide()
        row = QHBoxLayout()
        row.addWidget(self.info, 1)
        row.addWidget(self.preview_button)
        row.addWidget(self.cancel_button)
        box = QVBoxLayout(self)
        box.addWidget(self.path)
        box.addWidget(self.error)
        box.addLayout(row)
        box.addWidget(self.options)
        self.model_source = ""
        self.model_ready = False
        self.task = "causal-lm"
        self.config_source = ""
        self.preview: dict | None = None
        self.preview_task = TaskSlot(self, "previewDataset")   # it tokenizes in the engine process
        self._timer = QTimer(self, singleShot=True, interval=500)
        self._timer.timeout.connect(self.start_preview)

    def values(self) -> dict:
        return {"path": self.path.text(), **self.options.values()}

    def set_values(self, values: dict) -> None:
        self.path.edit.blockSignals(True)
        self.path.set_text(values.get("path", DataSection.path))
        self.path.edit.blockSignals(False)
        self.options.set_values(values)
        self._on_input_changed()

    def errors(self) -> dict[str, str]:
        out = {f"data.{k}": v for k, v in self.options.field_errors().items()}
        from studio.core.config import find_file
        from pathlib import Path

        path = self.path.text()
        if not path:
            out["data.path"] = "expected a dataset file (.jsonl, .json, .csv, .parquet or .txt)"
        elif not Path(find_file(path, self.config_source)).is_file():
            out["data.path"] = f"{path}: no such file"
        elif self.error.isVisible() and not self._runtime_error:
            out["data.path"] = self.error.text()
        return out

    def set_model(self, source: str, task: str, ready: bool = True) -> None:
        """The model whose tokenizer renders the preview. A model that must be converted or
        downloaded first (`ready` False) is previewed only when the person asks (Preview)."""
        if (source, task, ready) != (self.model_source, self.task, self.model_ready):
            self.model_source, self.task, self.model_ready = source, task, ready
            self._schedule()

    @property
    def busy(self) -> bool:
        return self._timer.isActive() or self.preview_task.busy

    # -- drag and drop -----------------------------------------------------------------------

    def dragEnterEvent(self, event):
        if _dropped_file(event.mimeData(), DATA_SUFFIXES):
            event.acceptProposedAction()

    def dropEvent(self, event):
        path = _dropped_file(event.mimeData(), DATA_SUFFIXES)
        if path:
            self.path.set_text(path)
            event.acceptProposedAction()

    # -- preview -----------------------------------------------------------------------------

    def show_file_error(self, text: str) -> None:
        """A reason found while the data was read for a run; it stays until the data changes, and
        does not block Train (the file may be fixed in an editor meanwhile)."""
        show_error(self.error, text)
        self._runtime_error = True

    def _on_input_changed(self, *_):
        errors = self.errors()
        show_error(self.error, None)
        self._runtime_error = False
        if "data.path" in errors:
            show_error(self.error, errors["data.path"])
        self.changed.emit()
        self._schedule()

    def _schedule(self) -> None:
        if not self.path.text() or not self.model_source:
            return
        if self.model_ready:
            self._timer.start()
        elif not self.preview_task.busy:
            self.info.setText("<i>Preview renders the rows with the model's tokenizer; this model is "
                              "converted or downloaded first (once), so it waits for you to press Preview.</i>")

    def start_preview(self) -> None:
        import dataclasses

        from studio.core.config import DataSection as Section
        from studio.core.engineclient import engine

        self._timer.stop()
        self.preview_task.cancel()   # a new one replaces it below; if none can start, it ends as cancelled
        values = self.values()
        try:
            section = Section(**values)
        except TypeError:
            return
        if self.options.field_errors() or not self.path.text() or not self.model_source:
            return
        source, task, config_source = self.model_source, self.task, self.config_source

        args = {"data": dataclasses.asdict(section), "model_source": source, "task": task, "rows": 5,
                "config_source": config_source}

        def work(progress, should_stop):
            return engine().call("preview_dataset", args, progress=progress, should_stop=should_stop)

        self.preview_task.start(work, done=self._on_preview_done, failed=self._on_preview_failed,
                                cancelled=self._on_preview_cancelled, progress=self._on_preview_progress)
        self.info.setText("<i>reading the dataset…</i>")
        self.cancel_button.show()
        self.preview_started.emit()

    def cancel_preview(self) -> None:
        self.preview_task.cancel()

    def _on_preview_progress(self, text: str, fraction) -> None:
        self.preview_progress.emit(text)
        self.info.setText(f"<i>{escape(text)}…</i>")

    def _on_preview_done(self, preview: dict) -> None:
        self.cancel_button.hide()
        self.preview = preview
        show_error(self.error, None)
        self._runtime_error = False
        self.info.setText(preview_summary_html(preview))
        self.preview_ready.emit(preview)
        self.changed.emit()

    def _on_preview_failed(self, text: str) -> None:
        self.cancel_button.hide()
        self.preview = None
        self.info.setText("")
        show_error(self.error, text)
        self._runtime_error = False
        self.preview_failed.emit(text)
        self.changed.emit()

    def _on_preview_cancelled(self) -> None:
        self.cancel_button.hide()
        self.info.setText("<i>preview cancelled</i>")

    def shutdown(self) -> None:
        self._timer.stop()
        self.preview_task.shutdown(60000)


def _dropped_file(mime, suffixes: tuple[str, ...]) -> str | None:
    for url in mime.urls() if mime.hasUrls() else []:
        path = url.toLocalFile()
        if path and path.lower().endswith(suffixes):
            return path
    return None
