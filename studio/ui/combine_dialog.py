"""The gallery's Combine dialog (CombineDialog): several adapters on one base model, each with a
weight, combined by a chosen method into a new gallery entry. It only collects the choice (the
controller runs the combine); studio.core.export's combine_problem and the name are checked live.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout,
                               QHeaderView, QLabel, QLineEdit, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from studio.core.errors import StudioError
from studio.core.gallery import Entry, Gallery
from studio.core.modelcache import human_size

from .gallery_dialog_parts import dialog_buttons, entry_size, name_problem, problem_label
from .gallery_text import muted, short_base

# what each combination method does, for the method combo's tooltips and the note under it
METHOD_HELP = {
    "linear": "Weighted sum of the low-rank factors A and B; every adapter must have the same rank. "
              "Fast, and exact only for one adapter.",
    "svd": "Weighted sum of the full updates ΔW, brought back to a low rank by SVD. Exact up to the "
           "truncation; the slowest.",
    "cat": "Stacks the factors side by side: exactly the weighted sum of the updates, with a rank "
           "that is the sum of the ranks.",
    "ties": "TIES-merging: keep each update's largest `density` share, elect one sign per weight, "
            "average what agrees. Reduces interference between tasks.",
    "dare_linear": "DARE: drop a random (1 − density) of each update and rescale the rest, then sum.",
    "dare_ties": "DARE's random drop and rescale, then TIES's sign election.",
    "magnitude_prune": "Keep the largest `density` share of each update by magnitude, then sum.",
}



class CombineDialog(QDialog):
    """Tick the adapters to combine (the selected one and those on the same base model), give
    each a weight, pick the method (and density where it uses one) and a name."""

    problem_changed = Signal(str)

    def __init__(self, entry: Entry, compatible: list[Entry], gallery: Gallery, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("combineDialog")
        self.setWindowTitle(f"Combine adapters — {entry.name}")
        self.gallery = gallery
        self.entries = [entry] + [e for e in compatible if e.name != entry.name]
        self._name_edited = False     # once the person types a name, it is no longer made up for them
        self._default = ""
        from studio.core.combine import COMBINE_METHODS, DENSITY_METHODS   # torch-free

        methods = list(COMBINE_METHODS)
        self.density_methods = set(DENSITY_METHODS)

        head = QLabel(f"Combine <b>{entry.name}</b> with other adapters on the same base model "
                      f"(<i>{short_base(entry.base_model)}</i>, {entry.task}) into a new gallery entry. "
                      "A negative weight subtracts an adapter's effect.")
        head.setWordWrap(True)
        head.setTextFormat(Qt.TextFormat.RichText)
        self.table = QTableWidget(len(self.entries), 3)
        self.table.setObjectName("combineTable")
        self.table.setAccessibleName("Adapters to combine")
        self.table.setHorizontalHeaderLabels(["Adapter", "Variant · rank · size", "Weight"])
        self.table.verticalHeader().hide()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.weight_spins: dict[str, QDoubleSpinBox] = {}
        self.check_items: dict[str, QTableWidgetItem] = {}
        for row, e in enumerate(self.entries):
            item = QTableWidgetItem(e.name)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if row == 0 else Qt.CheckState.Unchecked)
            item.setToolTip(e.base_model)
            self.table.setItem(row, 0, item)
            about = QTableWidgetItem(" · ".join([e.variant] + ([f"r {e.rank}"] if e.rank else [])
                                                + [human_size(entry_size(e))]))
            about.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.table.setItem(row, 1, about)
            spin = QDoubleSpinBox()
            spin.setObjectName(f"combineWeight{row}")
            spin.setAccessibleName(f"Weight of {e.name}")
            spin.setRange(-10.0, 10.0)
            spin.setDecimals(2)
            spin.setSingleStep(0.1)
            spin.setValue(1.0)
            spin.valueChanged.connect(self._update)
            self.table.setCellWidget(row, 2, spin)
            self.weight_spins[e.name] = spin
            self.check_items[e.name] = item
        self.table.itemChanged.connect(lambda *_: self._update())
        self.table.resizeRowsToContents()
        rows_h = sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        self.table.setMinimumHeight(min(240, rows_h + self.table.horizontalHeader().sizeHint().height() + 6))
        self.table.setMaximumHeight(max(240, self.table.minimumHeight()))

        self.method_combo = QComboBox()
        self.method_combo.setObjectName("combineMethod")
        self.method_combo.setAccessibleName("Combination method")
        for m in methods:
            self.method_combo.addItem(m, m)
            self.method_combo.setItemData(self.method_combo.count() - 1, METHOD_HELP.get(m, ""),
                                          Qt.ItemDataRole.ToolTipRole)
        self.method_help = QLabel()
        self.method_help.setObjectName("combineMethodHelp")
        self.method_help.setWordWrap(True)
        muted(self.method_help)
        self.density_spin = QDoubleSpinBox()
        self.density_spin.setObjectName("combineDensity")
        self.density_spin.setAccessibleName("Density")
        self.density_spin.setRange(0.01, 1.0)
        self.density_spin.setSingleStep(0.05)
        self.density_spin.setValue(0.5)
        self.density_spin.setToolTip("The share of each update's entries kept (TIES, DARE, magnitude pruning)")
        self.name_edit = QLineEdit()
        self.name_edit.setObjectName("combineName")
        self.name_edit.setAccessibleName("Name of the combined adapter")
        self.name_edit.textChanged.connect(self._on_name_changed)
        self.problem = problem_label("combineProblem")
        self.buttons = dialog_buttons("combineOkButton", "Combine")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)

        form = QFormLayout()
        form.addRow("Method", self.method_combo)
        form.addRow("", self.method_help)
        form.addRow("Density", self.density_spin)
        form.addRow("Name", self.name_edit)
        column = QVBoxLayout(self)
        column.addWidget(head)
        column.addWidget(self.table, 1)
        column.addLayout(form)
        column.addWidget(self.problem)
        column.addWidget(self.buttons)
        self.method_combo.currentIndexChanged.connect(lambda *_: self._update())
        self.density_spin.valueChanged.connect(lambda *_: self._update())
        self.name_edit.textChanged.connect(lambda *_: self._update())
        self._update()
        self.resize(640, self.sizeHint().height())

    # -- the choice --------------------------------------------------------------------------

    def chosen(self) -> tuple[list[Entry], list[float]]:
        entries = [e for e in self.entries if self.check_items[e.name].checkState() == Qt.CheckState.Checked]
        return entries, [self.weight_spins[e.name].value() for e in entries]

    def method(self) -> str:
        return self.method_combo.currentData() or "linear"

    def density(self) -> float:
        return self.density_spin.value()

    def name(self) -> str:
        return self.name_edit.text().strip()

    def set_checked(self, name: str, checked: bool = True) -> None:
        self.check_items[name].setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def set_method(self, method: str) -> None:
        self.method_combo.setCurrentIndex(self.method_combo.findData(method))

    # -- checking ----------------------------------------------------------------------------

    def current_problem(self) -> str | None:
        entries, weights = self.chosen()
        from studio.core.combine import combine_problem   # cheap, torch-free

        try:
            problem = combine_problem(entries, self.method())
        except StudioError as e:
            problem = str(e)
        if problem:
            return problem
        if weights and all(w == 0 for w in weights):
            return "every weight is 0: the result would do nothing"
        return name_problem(self.gallery, self.name())

    def _default_name(self) -> str:
        entries, _ = self.chosen()
        stem = "-".join(e.name for e in entries[:3]) if len(entries) > 1 else f"{self.entries[0].name}-combined"
        try:
            return self.gallery.unique_name(f"{stem}-{self.method()}")
        except StudioError:
            return f"{self.entries[0].name}-combined"

    def _on_name_changed(self, text: str) -> None:
        if text != self._default:
            self._name_edited = True

    def _update(self, *_):
        method = self.method()
        self.method_help.setText(METHOD_HELP.get(method, ""))
        self.density_spin.setEnabled(method in self.density_methods)
        if not self._name_edited:
            self._default = self._default_name()
            self.name_edit.setText(self._default)
        problem = self.current_problem()
        self.problem.setText(problem or "")
        self.problem.setVisible(bool(problem))
        self.ok_button.setEnabled(problem is None)
        self.problem_changed.emit(problem or "")

    def accept(self) -> None:
        if self.current_problem() is None:
            super().accept()

