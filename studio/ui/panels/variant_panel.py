"""The Variant panel: the variant selector, its description from the paper, and its options as a
form built from the variant's dataclass fields."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QGroupBox, QVBoxLayout, QWidget

from studio.core.variants import REGISTRY

from ..forms import OptionsForm
from .labels import note_label


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
        self.description = note_label("variantDescription")
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
