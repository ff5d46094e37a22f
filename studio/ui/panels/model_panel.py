"""The Model panel: the base model's source (bundled, a folder, a .gguf file or a hub id), its
options, and what was detected about it (read in a BackgroundJob, never on the GUI thread)."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QGroupBox, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from studio.core.config import ModelSection

from ..forms import OptionsForm, show_start
from ..tasks import TaskSlot
from .labels import error_label, note_label, show_error

BUNDLED_MODELS = {
    "bundled:smollm2-135m-instruct": "SmolLM2-135M-Instruct (bundled, chat)",
    "bundled:minilm-l6": "all-MiniLM-L6-v2 (bundled, classification)",
}


def _human(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:g}"


class ModelPanel(QGroupBox):
    """Base model: bundled, a local folder, a .gguf file or a hub id; what was detected."""
    _runtime_error = False   # the error shown came from a run, not from checking the input

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Model", parent)
        self.setObjectName("modelPanel")
        self.source_combo = QComboBox()
        self.source_combo.setObjectName("modelSource")
        self.source_combo.setAccessibleName("Base model")
        self.source_combo.setEditable(True)
        # a long path must not widen the whole set-up column
        self.source_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.source_combo.setMinimumContentsLength(14)
        self.source_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        for source, label in BUNDLED_MODELS.items():
            self.source_combo.addItem(source)
            self.source_combo.setItemData(self.source_combo.count() - 1, label, Qt.ItemDataRole.ToolTipRole)
        self.source_combo.setToolTip("A bundled model, a local Hugging Face folder, a .gguf file, "
                                     "or a hub id (downloaded when training starts)")
        self.source_combo.currentTextChanged.connect(self._on_source_changed)
        folder = QPushButton("Folder…")
        folder.setObjectName("modelFolderButton")
        folder.clicked.connect(self._on_folder_clicked)
        gguf = QPushButton(".gguf…")
        gguf.setObjectName("modelGgufButton")
        gguf.clicked.connect(self._on_gguf_clicked)
        browse = QPushButton("Models…")
        browse.setObjectName("modelBrowseButton")
        browse.setAccessibleName("Browse models")
        browse.setToolTip("Choose among the models already on this machine: the Hugging Face cache "
                          "and the folders you add (lora-studio models lists the same)")
        browse.clicked.connect(self._on_browse_clicked)
        # the source gets the column's whole width; the three ways to pick one sit beneath it
        # (in one row with the combo they were cut off at 1280x800)
        buttons = QHBoxLayout()
        buttons.addWidget(browse)
        buttons.addWidget(folder)
        buttons.addWidget(gguf)
        buttons.addStretch(1)
        row = QVBoxLayout()
        row.addWidget(self.source_combo)
        row.addLayout(buttons)
        self.options = OptionsForm(ModelSection, prefix="model", skip=("source",))
        self.options.changed.connect(self._on_source_changed)
        self.info = note_label("modelInfo")
        self.error = error_label("modelError")
        box = QVBoxLayout(self)
        box.addLayout(row)
        box.addWidget(self.error)
        box.addWidget(self.info)
        box.addWidget(self.options)
        self.description: dict | None = None
        self.describe_task = TaskSlot(self, "describeModel")
        self._timer = QTimer(self, singleShot=True, interval=300)
        self._timer.timeout.connect(self._describe)
        self.config_source = ""
        self.picker = None          # the ModelPickerDialog, made when first asked for

    # -- values ------------------------------------------------------------------------------

    def values(self) -> dict:
        return {"source": self.source_combo.currentText().strip(), **self.options.values()}

    def set_values(self, values: dict) -> None:
        self.source_combo.blockSignals(True)
        self.set_source(values.get("source", ModelSection.source))
        self.source_combo.blockSignals(False)
        self.options.set_values(values)
        self._on_source_changed()

    def errors(self) -> dict[str, str]:
        out = {f"model.{k}": v for k, v in self.options.field_errors().items()}
        if not self.source_combo.currentText().strip():
            out["model.source"] = "expected a model: bundled, a folder, a .gguf file or a hub id"
        elif self.error.isVisible() and not self._runtime_error:
            out["model.source"] = self.error.text()
        return out

    @property
    def busy(self) -> bool:
        return self._timer.isActive() or self.describe_task.busy

    # -- detection ---------------------------------------------------------------------------

    def show_source_error(self, text: str) -> None:
        """A reason found while the model was loaded for a run (a damaged weight file, ...);
        it stays until the source changes, and does not block Train (the file may be fixed in place)."""
        show_error(self.error, text)
        self._runtime_error = True

    def _on_source_changed(self, *_):
        self.description = None
        show_error(self.error, None)
        self._runtime_error = False
        self.info.setText("<i>reading the model…</i>")
        self._timer.start()
        self.changed.emit()

    def _describe(self) -> None:
        from studio.core.modelfiles import describe_model

        source = self.source_combo.currentText().strip()
        task = self.options.values().get("task", "causal-lm")
        self.describe_task.drop()
        if not source:
            self.info.setText("")
            return
        config_source = self.config_source
        self.describe_task.start(lambda progress, should_stop: describe_model(source, task, config_source),
                                 done=self._on_described, failed=self._on_describe_failed)

    def _on_described(self, description: dict) -> None:
        self.description = description
        self.info.setText(describe_html(description))
        self.changed.emit()

    def _on_describe_failed(self, text: str) -> None:
        self.description = None
        self.info.setText("")
        show_error(self.error, text)
        self._runtime_error = False
        self.changed.emit()

    def set_source(self, text: str) -> None:
        """The model source, shown from its start (the whole in the tooltip)."""
        self.source_combo.setEditText(text)
        show_start(self.source_combo.lineEdit(), text)

    def _on_folder_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "A Hugging Face model folder", "")
        if path:
            self.set_source(path)

    def _on_gguf_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "A GGUF model file", "", "GGUF models (*.gguf)")
        if path:
            self.set_source(path)

    def _on_browse_clicked(self) -> None:
        self.open_picker()

    def open_picker(self):
        """Open the list of the models on this machine (read anew each time, in the background);
        the one chosen becomes the source. Returns the dialog."""
        from ..model_picker import ModelPickerDialog

        if self.picker is None:
            self.picker = ModelPickerDialog(self)
            self.picker.chosen.connect(self.set_source)
        self.picker.current = self.source_combo.currentText().strip()
        self.picker.start()
        self.picker.open()
        return self.picker

    def shutdown(self) -> None:
        self._timer.stop()
        self.describe_task.shutdown(30000)
        if self.picker is not None:
            self.picker.shutdown()


def describe_html(d: dict) -> str:
    """A few lines about a model description (studio.core.modelfiles.describe_model)."""
    parts = []
    arch = d.get("architecture") or d.get("model_type") or "unknown architecture"
    head = f"<b>{escape(str(arch))}</b>"
    if d.get("parameters"):
        head += f" · {_human(d['parameters'])} parameters"
    parts.append(head)
    shape = [f"{d[k]} {w}" for k, w in (("layers", "layers"), ("hidden_size", "hidden"), ("vocab_size", "vocab"))
             if d.get(k)]
    if shape:
        parts.append(" · ".join(shape))
    extra = []
    if d.get("suits"):
        extra.append(f"suits {escape(str(d['suits']))}")
    if d.get("has_chat_template") is not None:
        extra.append("chat template" if d["has_chat_template"] else "no chat template")
    if d.get("kind"):
        extra.append(escape(str(d["kind"])) + (f" ({escape(str(d['dtype']))})" if d.get("dtype") else ""))
    if extra:
        parts.append(" · ".join(extra))
    if d.get("note"):
        parts.append(f"<i>{escape(str(d['note']))}</i>")
    for w in d.get("warnings") or []:
        parts.append(f"<span style='color:#b26b00'>⚠ {escape(str(w))}</span>")
    return "<br>".join(parts)
