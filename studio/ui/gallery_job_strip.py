"""The strip under the gallery's cards that shows a running gallery job (GalleryJobStrip): its
message, its progress (`show_fraction`, which the Resize dialog's bar uses too) and a Cancel button.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget


class GalleryJobStrip(QWidget):
    """Hidden until show_job; Cancel emits cancel_requested (the controller cancels the job)."""

    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("galleryJobStrip")
        self.label = QLabel()
        self.label.setObjectName("galleryJobLabel")
        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("galleryProgress")
        self.progress_bar.setAccessibleName("Gallery job progress")
        self.progress_bar.setMaximumHeight(16)
        self.progress_bar.setTextVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("galleryCancelButton")
        self.cancel_button.clicked.connect(self.cancel_requested)
        strip = QVBoxLayout(self)
        strip.setContentsMargins(0, 0, 0, 0)
        strip.setSpacing(2)
        strip.addWidget(self.label)
        bar_row = QHBoxLayout()
        bar_row.addWidget(self.progress_bar, 1)
        bar_row.addWidget(self.cancel_button)
        strip.addLayout(bar_row)
        self.hide()

    def show_job(self, message: str, fraction: float | None = None) -> None:
        """Show (or update) the running job: its message, and a determinate bar when the fraction
        is known, else a busy one."""
        self.show()
        self.label.setText(message)
        self.label.setToolTip(message)
        show_fraction(self.progress_bar, fraction)
        self.cancel_button.setEnabled(True)


def show_fraction(bar: QProgressBar, fraction: float | None) -> None:
    """A task's progress on a bar: determinate when the share done is known, else busy."""
    if fraction is None:
        bar.setRange(0, 0)
    else:
        bar.setRange(0, 1000)
        bar.setValue(int(round(fraction * 1000)))
