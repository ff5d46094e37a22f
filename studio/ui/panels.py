"""The set-up panels on the left of the window: model, dataset, variant, training options.

Each panel edits one part of the run config and reports it as plain values (`values()`), shows
what was detected (model architecture and size, dataset format and token statistics) and marks
invalid values next to the field with the reason. Detection that reads files (a model's
metadata, a tokenizer for the dataset preview) runs in a BackgroundJob, never on the GUI thread.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QFileDialog, QGroupBox, QHBoxLayout, QLabel, QPushButton,
                               QVBoxLayout, QWidget)

from studio.core.config import DataSection, ModelSection, TelemetrySection, TrainSection
from studio.core.variants import REGISTRY

from .forms import ERROR_STYLE, FileField, OptionsForm, show_start
from .worker import BackgroundJob

BUNDLED_MODELS = {
    "bundled:smollm2-135m-instruct": "SmolLM2-135M-Instruct (bundled, chat)",
    "bundled:minilm-l6": "all-MiniLM-L6-v2 (bundled, classification)",
}
DATA_FILTER = "Datasets (*.jsonl *.json *.csv *.parquet *.txt);;All files (*)"
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")
NOTE_STYLE = "color: palette(placeholder-text);"


def _error_label(name: str) -> QLabel:
    label = QLabel()
    label.setObjectName(name)
    label.setStyleSheet(ERROR_STYLE)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.hide()
    return label


def _note_label(name: str) -> QLabel:
    label = QLabel()
    label.setObjectName(name)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _show_error(label: QLabel, text: str | None) -> None:
    label.setText(text or "")
    label.setVisible(bool(text))


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
        self.info = _note_label("modelInfo")
        self.error = _error_label("modelError")
        box = QVBoxLayout(self)
        box.addLayout(row)
        box.addWidget(self.error)
        box.addWidget(self.info)
        box.addWidget(self.options)
        self.description: dict | None = None
        self._job: BackgroundJob | None = None
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
        return self._timer.isActive() or (self._job is not None and self._job.is_running)

    # -- detection ---------------------------------------------------------------------------

    def show_source_error(self, text: str) -> None:
        """A reason found while the model was loaded for a run (a damaged weight file, ...);
        it stays until the source changes, and does not block Train (the file may be fixed in place)."""
        _show_error(self.error, text)
        self._runtime_error = True

    def _on_source_changed(self, *_):
        self.description = None
        _show_error(self.error, None)
        self._runtime_error = False
        self.info.setText("<i>reading the model…</i>")
        self._timer.start()
        self.changed.emit()

    def _describe(self) -> None:
        from studio.core.modelfiles import describe_model

        source = self.source_combo.currentText().strip()
        task = self.options.values().get("task", "causal-lm")
        if self._job is not None:
            self._job.cancel()
        if not source:
            self.info.setText("")
            return
        config_source = self.config_source
        job = BackgroundJob(lambda progress, should_stop: describe_model(source, task, config_source),
                            self, name="describeModel")
        job.succeeded.connect(lambda d, j=job: self._on_described(j, d))
        job.failed.connect(lambda text, j=job: self._on_describe_failed(j, text))
        self._job = job.start()

    def _on_described(self, job, description: dict) -> None:
        if job is not self._job:
            return
        self.description = description
        self.info.setText(describe_html(description))
        self.changed.emit()

    def _on_describe_failed(self, job, text: str) -> None:
        if job is not self._job:
            return
        self.description = None
        self.info.setText("")
        _show_error(self.error, text)
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
        from .model_picker import ModelPickerDialog

        if self.picker is None:
            self.picker = ModelPickerDialog(self)
            self.picker.chosen.connect(self.set_source)
        self.picker.current = self.source_combo.currentText().strip()
        self.picker.start()
        self.picker.open()
        return self.picker

    def shutdown(self) -> None:
        self._timer.stop()
        if self._job is not None:
            self._job.cancel()
            self._job.wait(30000)
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
        self.info = _note_label("dataInfo")
        self.error = _error_label("dataError")
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
        self._job: BackgroundJob | None = None
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
        return self._timer.isActive() or (self._job is not None and self._job.is_running)

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
        _show_error(self.error, text)
        self._runtime_error = True

    def _on_input_changed(self, *_):
        errors = self.errors()
        _show_error(self.error, None)
        self._runtime_error = False
        if "data.path" in errors:
            _show_error(self.error, errors["data.path"])
        self.changed.emit()
        self._schedule()

    def _schedule(self) -> None:
        if not self.path.text() or not self.model_source:
            return
        if self.model_ready:
            self._timer.start()
        elif self._job is None or not self._job.is_running:
            self.info.setText("<i>Preview renders the rows with the model's tokenizer; this model is "
                              "converted or downloaded first (once), so it waits for you to press Preview.</i>")

    def start_preview(self) -> None:
        from studio.core.config import DataSection as Section
        from studio.core.inspect import preview_dataset

        self._timer.stop()
        if self._job is not None:
            self._job.cancel()
        values = self.values()
        try:
            section = Section(**values)
        except TypeError:
            return
        if self.options.field_errors() or not self.path.text() or not self.model_source:
            return
        source, task, config_source = self.model_source, self.task, self.config_source

        def work(progress, should_stop):
            return preview_dataset(section, source, task, rows=5, config_source=config_source,
                                   progress=progress, should_stop=should_stop)

        job = BackgroundJob(work, self, name="previewDataset", heavy=True)
        job.progress.connect(self.preview_progress)
        job.progress.connect(lambda text: self.info.setText(f"<i>{escape(text)}…</i>"))
        job.succeeded.connect(lambda p, j=job: self._on_preview_done(j, p))
        job.failed.connect(lambda text, j=job: self._on_preview_failed(j, text))
        job.cancelled.connect(lambda j=job: self._on_preview_cancelled(j))
        self._job = job.start()
        self.info.setText("<i>reading the dataset…</i>")
        self.cancel_button.show()
        self.preview_started.emit()

    def cancel_preview(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def _on_preview_done(self, job, preview: dict) -> None:
        if job is not self._job:
            return
        self.cancel_button.hide()
        self.preview = preview
        _show_error(self.error, None)
        self._runtime_error = False
        self.info.setText(preview_summary_html(preview))
        self.preview_ready.emit(preview)
        self.changed.emit()

    def _on_preview_failed(self, job, text: str) -> None:
        if job is not self._job:
            return
        self.cancel_button.hide()
        self.preview = None
        self.info.setText("")
        _show_error(self.error, text)
        self._runtime_error = False
        self.preview_failed.emit(text)
        self.changed.emit()

    def _on_preview_cancelled(self, job) -> None:
        if job is not self._job:
            return
        self.cancel_button.hide()
        self.info.setText("<i>preview cancelled</i>")

    def shutdown(self) -> None:
        self._timer.stop()
        if self._job is not None:
            self._job.cancel()
            self._job.wait(60000)


def preview_summary_html(p: dict) -> str:
    stats = p.get("lengths") or {}
    parts = [f"<b>{escape(str(p.get('format', '?')))}</b> · {p.get('train_examples', '?')} train"
             f" / {p.get('eval_examples') or 0} eval examples"]
    if stats:
        parts.append(f"tokens per row: median {stats.get('median', 0):g}, p95 {stats.get('p95', 0):g}, "
                     f"max {stats.get('max', 0):g}")
    if p.get("truncated"):
        parts.append(f"<span style='color:#b26b00'>⚠ {p['truncated']} rows longer than max_seq_len "
                     "will be truncated</span>")
    return "<br>".join(parts)


def _dropped_file(mime, suffixes: tuple[str, ...]) -> str | None:
    for url in mime.urls() if mime.hasUrls() else []:
        path = url.toLocalFile()
        if path and path.lower().endswith(suffixes):
            return path
    return None


class VariantPanel(QGroupBox):
    """The variant selector, its description from the paper, and its options as a form built
    from the variant's dataclass fields."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Variant", parent)
        self.setObjectName("variantPanel")
        self.combo = QComboBox()
        self.combo.setObjectName("variantCombo")
        self.combo.setAccessibleName("LoRA variant")
        for name, variant in REGISTRY.items():
            self.combo.addItem(name)
            self.combo.setItemData(self.combo.count() - 1, variant.description, Qt.ItemDataRole.ToolTipRole)
        self.description = _note_label("variantDescription")
        self.form_holder = QVBoxLayout()
        box = QVBoxLayout(self)
        box.addWidget(self.combo)
        box.addWidget(self.description)
        box.addLayout(self.form_holder)
        self.form: OptionsForm | None = None
        self.run_steps: int | None = None
        self._values: dict = {"name": "lora"}
        self.combo.currentTextChanged.connect(self._on_combo_changed)
        self._build_form("lora", {})

    def values(self) -> dict:
        return {"name": self.combo.currentText(), **(self.form.values() if self.form else {})}

    def set_values(self, values: dict) -> None:
        name = values.get("name", "lora")
        self.combo.blockSignals(True)
        self.combo.setCurrentText(name)
        self.combo.blockSignals(False)
        self._build_form(name, values)
        self.changed.emit()

    def errors(self) -> dict[str, str]:
        return {f"variant.{k}": v for k, v in (self.form.field_errors() if self.form else {}).items()}

    def set_run_steps(self, total: int | None) -> None:
        """The run's optimizer steps, for options given as a fraction of the run (AdaLoRA's
        schedule), which the form then shows in steps too."""
        if total != self.run_steps:
            self.run_steps = total
            if self.form is not None:
                self.form.set_run_steps(total)

    def _on_combo_changed(self, name: str) -> None:
        # keep the common options the person changed; the rest take the new variant's defaults
        from studio.core.config import keep_customised

        kept = keep_customised(self.values_for(self._values.get("name", "lora")))
        kept["name"] = name
        self._build_form(name, kept)
        self.changed.emit()

    def values_for(self, old_name: str) -> dict:
        return {**(self.form.values() if self.form else {}), "name": old_name}

    def _build_form(self, name: str, values: dict) -> None:
        variant = REGISTRY[name]
        if self.form is not None:
            self.form.setParent(None)
            self.form.deleteLater()
        self.form = OptionsForm(variant.options_cls, prefix="variant")
        self.form.set_values(values)
        self.form.set_run_steps(self.run_steps)
        self.form.changed.connect(self.changed)
        self.form_holder.addWidget(self.form)
        self._values = {"name": name}
        self.description.setText(f"<b>{escape(variant.description)}</b><br>"
                                 f"<span style='font-size:small'>{escape(variant.summary)}</span><br>"
                                 f"<span style='font-size:small'><i>{escape(variant.paper)}</i></span>")


class TrainingPanel(QGroupBox):
    """Training and telemetry options."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Training", parent)
        self.setObjectName("trainingPanel")
        self.train = OptionsForm(TrainSection, prefix="train")
        self.telemetry = OptionsForm(TelemetrySection, prefix="telemetry")
        self.train.changed.connect(self.changed)
        self.telemetry.changed.connect(self.changed)
        telemetry_box = QGroupBox("Telemetry")
        QVBoxLayout(telemetry_box).addWidget(self.telemetry)
        box = QVBoxLayout(self)
        box.addWidget(self.train)
        box.addWidget(telemetry_box)

    def values(self) -> tuple[dict, dict]:
        return self.train.values(), self.telemetry.values()

    def set_values(self, train: dict, telemetry: dict) -> None:
        self.train.set_values(train)
        self.telemetry.set_values(telemetry)

    def errors(self) -> dict[str, str]:
        out = {f"train.{k}": v for k, v in self.train.field_errors().items()}
        out.update({f"telemetry.{k}": v for k, v in self.telemetry.field_errors().items()})
        return out


__all__ = ["ModelPanel", "DataPanel", "VariantPanel", "TrainingPanel", "describe_html",
           "preview_summary_html"]


def preview_html(p: dict) -> str:
    """The dataset preview: statistics, then the first rows as the model sees them, with the
    tokens that carry loss highlighted."""
    stats = p.get("lengths") or {}
    head = [f"<h3>{escape(Path(str(p.get('path', ''))).name)}</h3>",
            f"<p><b>format</b> {escape(str(p.get('format', '?')))} · <b>rows</b> {p.get('rows', '?')} in the file, "
            f"{p.get('train_examples', '?')} training and {p.get('eval_examples') or 0} evaluation examples"]
    if p.get("chat_template"):
        head.append(f" · <b>chat template</b> {escape(str(p['chat_template']))}")
    head.append("</p>")
    if stats:
        head.append("<p><b>tokens per row</b> " + ", ".join(
            f"{k} {stats[k]:,.0f}" for k in ("min", "median", "mean", "p95", "max") if k in stats)
            + (f" · total {p['total_tokens']:,}" if p.get("total_tokens") else "")
            + (f" · {p['loss_tokens']:,} carry loss" if p.get("loss_tokens") else "") + "</p>")
    if p.get("truncated"):
        head.append(f"<p style='color:#b26b00'>{p['truncated']} rows are longer than max_seq_len "
                    f"({p.get('max_seq_len', '?')}) and will be truncated.</p>")
    if p.get("label_names"):
        counts = p.get("label_counts") or {}
        head.append("<p><b>labels</b> " + escape(", ".join(
            f"{name} ({counts[name]})" if name in counts else str(name) for name in p["label_names"])) + "</p>")
    for w in p.get("warnings") or []:
        head.append(f"<p style='color:#b26b00'>⚠ {escape(str(w))}</p>")
    head.append("<p style='font-size:small'>Highlighted text carries the loss (what the model learns to "
                "write); the rest is context.</p>")
    rows = []
    for i, ex in enumerate(p.get("examples") or []):
        segments = ex.get("segments") or [[ex.get("text", ""), True]]
        body = "".join(
            (f"<span style='background:#d7ecd9;color:#0b3d14'>{escape(text)}</span>" if trained
             else escape(text)) for text, trained in segments)
        label = f" — label <b>{escape(str(ex['label']))}</b>" if ex.get("label") is not None else ""
        tokens = f" · {ex['tokens']} tokens" if ex.get("tokens") is not None else ""
        cut = (f"<span style='color:#999'>{escape(ex['cut_text'])}</span>" if ex.get("cut_text") else "")
        rows.append(f"<p><b>row {ex.get('row', i + 1)}</b>{tokens}{label}"
                    + (" · <i>truncated</i>" if ex.get("truncated") else "") + "</p>"
                    f"<pre style='white-space:pre-wrap'>{body}{cut}</pre>")
    return "".join(head) + "<hr>" + "".join(rows)
