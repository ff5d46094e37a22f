"""A form built from a described dataclass (studio/core/options.py): one editor per field, the
field's help as tooltip, and the reason a value is invalid shown next to it.

No per-variant UI code: the variant panel builds `OptionsForm(variant.options_cls)`, and a new
variant's options appear in the window by themselves. The same `coerce()` that checks a config
file checks each editor, so the window and the CLI accept exactly the same values.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QAbstractSpinBox, QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QSpinBox, QVBoxLayout, QWidget)

from studio.core.options import coerce, describe_fields, steps_of_run

ERROR_STYLE = "color: #d0342c;"


def camel(name: str) -> str:
    head, *rest = name.replace("-", "_").split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


class IntBox(QSpinBox):
    """A spin box that keeps what was typed, in its option's range or not: a value out of range is
    marked by the form like any invalid value (a plain QSpinBox put 16 back for a typed 0, and
    500 for 5000, without a word). The arrows, keys and wheel stay within the range."""

    def __init__(self, low: int, high: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.low, self.high = low, high
        self.setRange(-2**31, 2**31 - 1)

    def stepBy(self, steps: int) -> None:   # noqa: N802 (Qt's name)
        self.setValue(min(max(self.value() + steps * self.singleStep(), self.low), self.high))

    def stepEnabled(self):   # noqa: N802
        flags = QAbstractSpinBox.StepEnabledFlag.StepNone
        if self.value() < self.high:
            flags |= QAbstractSpinBox.StepEnabledFlag.StepUpEnabled
        if self.value() > self.low:
            flags |= QAbstractSpinBox.StepEnabledFlag.StepDownEnabled
        return flags


class OptionsForm(QWidget):
    """Editors for the fields of `cls`; `values()` gives them back in their Python types."""

    changed = Signal()

    def __init__(self, cls: type, *, prefix: str, skip: tuple[str, ...] = (), parent: QWidget | None = None):
        super().__init__(parent)
        self.cls = cls
        self.prefix = prefix            # "train", "variant", ...: for objectNames and error paths
        self.fields = [f for f in describe_fields(cls) if f["name"] not in skip]
        self.editors: dict[str, QWidget] = {}
        self.error_labels: dict[str, QLabel] = {}
        self.step_labels: dict[str, QLabel] = {}   # run_fraction fields: the value in steps
        self.run_steps: int | None = None
        self._external: dict[str, str] = {}   # errors found by whole-config checks
        layout = QFormLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for f in self.fields:
            editor = self._make_editor(f)
            editor.setObjectName(f"{prefix}_{f['name']}")
            editor.setAccessibleName(f"{prefix}.{f['name']}")
            editor.setToolTip(_tooltip(f))
            error = QLabel()
            error.setObjectName(f"{prefix}_{f['name']}_error")
            error.setStyleSheet(ERROR_STYLE)
            error.setWordWrap(True)
            error.hide()
            cell = QWidget()
            box = QVBoxLayout(cell)
            box.setContentsMargins(0, 0, 0, 0)
            box.setSpacing(1)
            box.addWidget(editor)
            if f.get("run_fraction"):
                steps = QLabel()
                steps.setObjectName(f"{prefix}_{f['name']}_steps")
                steps.setStyleSheet("color: palette(placeholder-text); font-size: small;")
                box.addWidget(steps)
                self.step_labels[f["name"]] = steps
            box.addWidget(error)
            label = QLabel(f["name"].replace("_", " "))
            label.setToolTip(f["help"])
            label.setBuddy(editor)
            layout.addRow(label, cell)
            self.editors[f["name"]] = editor
            self.error_labels[f["name"]] = error
        self.set_values({})

    # -- editors -----------------------------------------------------------------------------

    def _make_editor(self, f: dict) -> QWidget:
        kind = f["type"]
        if kind == "bool":
            editor = QCheckBox()
            editor.toggled.connect(self._on_editor_changed)
        elif "choices" in f:
            editor = QComboBox()
            editor.addItems([str(c) for c in f["choices"]])
            editor.currentIndexChanged.connect(self._on_editor_changed)
        elif kind == "int" and f.get("max", 0) <= 2**31 - 1:
            editor = IntBox(int(f.get("min", -2**31)), int(f.get("max", 2**31 - 1)))
            editor.setKeyboardTracking(False)
            editor.valueChanged.connect(self._on_editor_changed)
        else:   # floats in a line edit: learning rates are written 2e-4
            editor = QLineEdit()
            editor.textChanged.connect(self._on_editor_changed)
        return editor

    def _read(self, name: str) -> Any:
        editor = self.editors[name]
        if isinstance(editor, QCheckBox):
            return editor.isChecked()
        if isinstance(editor, QComboBox):
            f = next(f for f in self.fields if f["name"] == name)
            return f["choices"][editor.currentIndex()] if editor.currentIndex() >= 0 else None
        if isinstance(editor, QSpinBox):
            return editor.value()
        text = editor.text().strip()
        kind = next(f["type"] for f in self.fields if f["name"] == name)
        if kind in ("float", "int"):
            try:
                return int(text) if kind == "int" else float(text)
            except ValueError:
                return text
        return editor.text()

    def _write(self, name: str, value: Any) -> None:
        editor = self.editors[name]
        editor.blockSignals(True)
        try:
            if isinstance(editor, QCheckBox):
                editor.setChecked(bool(value))
            elif isinstance(editor, QComboBox):
                f = next(f for f in self.fields if f["name"] == name)
                choices = list(f["choices"])
                editor.setCurrentIndex(choices.index(value) if value in choices else -1)
            elif isinstance(editor, QSpinBox):
                editor.setValue(int(value))
            else:
                editor.setText(_format(value))
        finally:
            editor.blockSignals(False)

    # -- values and errors -------------------------------------------------------------------

    def values(self) -> dict:
        return {f["name"]: self._read(f["name"]) for f in self.fields}

    def set_values(self, values: dict) -> None:
        defaults = {f.name: f.default for f in dataclasses.fields(self.cls)}
        for f in self.fields:
            self._write(f["name"], values.get(f["name"], defaults.get(f["name"])))
        self._external = {}
        self._refresh_errors()
        self._refresh_steps()

    def field_errors(self) -> dict[str, str]:
        """Reasons, by field name, why a value is not accepted (the same check as a config file)."""
        out = {}
        for f in self.fields:
            try:
                coerce(self.cls, f["name"], self._read(f["name"]))
            except ValueError as e:
                out[f["name"]] = str(e)
        for name, text in self._external.items():
            out.setdefault(name, text)
        return out

    def set_external_error(self, name: str, text: str | None) -> None:
        """An error found when the whole config was checked (cross-field rules)."""
        if text:
            self._external[name] = text
        else:
            self._external.pop(name, None)
        self._refresh_errors()

    def set_run_steps(self, total: int | None) -> None:
        """The run's optimizer steps (None: not known yet), for the fields given as a fraction of
        the run, which then also show their value in steps."""
        self.run_steps = total
        self._refresh_steps()

    def _refresh_steps(self) -> None:
        for name, label in self.step_labels.items():
            value = self._read(name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                label.setText("")
            elif self.run_steps is None:
                label.setText("of the run's steps" if value < 1 else "steps")
            else:
                steps = steps_of_run(float(value), self.run_steps)
                label.setText(f"= {steps} of this run's {self.run_steps} steps")

    def _refresh_errors(self) -> None:
        errors = self.field_errors()
        for name, label in self.error_labels.items():
            text = errors.get(name)
            label.setText(text or "")
            label.setVisible(bool(text))
            self.editors[name].setProperty("invalid", bool(text))

    def _on_editor_changed(self, *_):
        self._external = {}
        self._refresh_errors()
        self._refresh_steps()
        self.changed.emit()


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def _tooltip(f: dict) -> str:
    bounds = []
    if "choices" in f:
        bounds.append("one of " + ", ".join(map(str, f["choices"])))
    if "min" in f:
        bounds.append(f"min {f['min']:g}")
    if "max" in f:
        bounds.append(f"max {f['max']:g}")
    extra = f" ({'; '.join(bounds)})" if bounds else ""
    return f"{f['help']}{extra}. Default: {_format(f['default'])}"


class FileField(QWidget):
    """A path editor with a Browse button. The dialog is a method so tests can replace it."""

    changed = Signal()

    def __init__(self, *, object_name: str, caption: str, file_filter: str = "", folder: bool = False,
                 parent: QWidget | None = None):
        super().__init__(parent)
        from PySide6.QtWidgets import QPushButton

        self.caption, self.file_filter, self.folder = caption, file_filter, folder
        self.edit = QLineEdit()
        self.edit.setObjectName(object_name)
        self.edit.setAccessibleName(caption)
        self.edit.textChanged.connect(lambda _: self.changed.emit())
        self.edit.textChanged.connect(self.edit.setToolTip)     # the whole path, when the field is narrow
        self.button = QPushButton("Browse…")
        self.button.setObjectName(object_name + "Browse")
        self.button.clicked.connect(self._on_button_clicked)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(self.button)

    def text(self) -> str:
        return self.edit.text().strip()

    def set_text(self, text: str) -> None:
        show_start(self.edit, text)

    def _on_button_clicked(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        if self.folder:
            path = QFileDialog.getExistingDirectory(self, self.caption, self.text())
        else:
            path, _ = QFileDialog.getOpenFileName(self, self.caption, self.text(), self.file_filter)
        if path:
            self.set_text(path)


def show_start(edit: QLineEdit, text: str) -> None:
    """Set a field's text showing its start (QLineEdit scrolls to the end: a narrow field showed
    "led:smollm2-135m-instruct"); the whole text is the tooltip."""
    edit.setText(text)
    edit.setCursorPosition(0)
    edit.setToolTip(text)


__all__ = ["OptionsForm", "FileField", "camel", "ERROR_STYLE", "show_start"]
