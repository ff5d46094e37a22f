"""The Training panel: the training options and the telemetry options, as two forms."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QGroupBox, QVBoxLayout, QWidget

from studio.core.config import TelemetrySection, TrainSection

from ..forms import OptionsForm


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
