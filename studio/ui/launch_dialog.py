"""Run ▸ Export run as launch script…: the run in the window as a folder (run.toml,
accelerate.yaml, launch.sh) that trains it on a multi-GPU workstation or cluster nodes.

The dialog only collects the choices (processes, machines, DDP or FSDP, CPU processes, the
folder); studio.core.launchscript checks them against the run config and writes the files. What it
can check at once (the batch split, a variant FSDP cannot shard) is shown live under the form and
keeps Export disabled; a failure while writing is shown the same way, with the dialog left open.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from studio.core.config import RunConfig
from studio.core.errors import StudioError
from studio.core.launchscript import STRATEGIES, LaunchPlan, write_launch_folder

from .forms import ERROR_STYLE


class LaunchScriptDialog(QDialog):
    def __init__(self, config: RunConfig, default_folder: Path, parent=None):
        super().__init__(parent)
        self.setObjectName("launchScriptDialog")
        self.setWindowTitle("Export run as launch script")
        self.config = config
        self.written: Path | None = None

        self.processes = QSpinBox(objectName="launchProcesses", minimum=1, maximum=64, value=2)
        self.processes.setToolTip("Processes on each machine: one per GPU")
        self.machines = QSpinBox(objectName="launchMachines", minimum=1, maximum=1024, value=1)
        self.machines.setToolTip("Machines (cluster nodes) of the job; launch.sh runs on each")
        self.strategy = QComboBox(objectName="launchStrategy")
        for key, text in STRATEGIES.items():
            self.strategy.addItem(key.upper(), key)
            self.strategy.setItemData(self.strategy.count() - 1, text, 3)   # tooltip role
        self.cpu = QCheckBox("CPU processes (gloo), no GPU", objectName="launchCpu")
        self.folder = QLineEdit(str(default_folder), objectName="launchFolder")
        browse = QPushButton("Browse…", objectName="launchBrowse")
        browse.clicked.connect(self._browse)
        row = QWidget()
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.folder, 1)
        box.addWidget(browse)

        form = QFormLayout()
        form.addRow("Processes per machine", self.processes)
        form.addRow("Machines", self.machines)
        form.addRow("Strategy", self.strategy)
        form.addRow("", self.cpu)
        form.addRow("Folder (new or empty)", row)
        self.summary = QLabel(objectName="launchSummary", wordWrap=True)
        self.problem = QLabel(objectName="launchProblem", wordWrap=True)
        self.problem.setStyleSheet(ERROR_STYLE)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.export_button.setObjectName("launchExport")
        self.buttons.accepted.connect(self.export)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.problem)
        layout.addWidget(self.buttons)
        for signal in (self.processes.valueChanged, self.machines.valueChanged, self.strategy.currentIndexChanged,
                       self.cpu.toggled, self.folder.textChanged):
            signal.connect(self._update)
        self._update()

    def plan(self) -> LaunchPlan:
        return LaunchPlan(processes=self.processes.value(), machines=self.machines.value(),
                          strategy=self.strategy.currentData(), cpu=self.cpu.isChecked())

    def _update(self, *_) -> None:
        plan = self.plan()
        batch = self.config.train.batch_size
        unit = "CPU processes" if plan.cpu else "GPUs"
        share = f"gives each {batch // plan.total}" if batch % plan.total == 0 else "does not split evenly"
        self.summary.setText(f"{plan.total} {unit} in all; a step of {batch} examples {share}. "
                             f"The run folder appears in {self.config.train.output_dir}.")
        problem = ""
        try:
            plan.check(self.config)
        except StudioError as e:
            problem = str(e)
        if not problem and not self.folder.text().strip():
            problem = "folder: choose where to write the launch files"
        self._show(problem)

    def _show(self, problem: str) -> None:
        self.problem.setText(problem)
        self.problem.setVisible(bool(problem))
        self.export_button.setEnabled(not problem)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for the launch files", self.folder.text())
        if path:
            self.folder.setText(path)

    def export(self) -> None:
        try:
            self.written = write_launch_folder(self.config, self.folder.text().strip(), self.plan())
        except StudioError as e:
            self._show(str(e))
            return
        except OSError as e:
            self._show(f"{self.folder.text().strip()}: cannot write the launch files ({e.strerror})")
            return
        self.accept()
