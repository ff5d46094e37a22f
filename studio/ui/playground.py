"""The playground: try a gallery adapter against its base model, side by side.

    dialog = PlaygroundDialog(window)            # objectName "playground"
    dialog.set_entries(gallery_entries, "my-adapter")
    dialog.show()                                # loads base + adapter in the background, once

This module is the dialog's controller: the adapter choice, loading the base model and the adapter,
and running a generation or a classification in a BackgroundJob. The answer panes, the options
and the probability table are in playground_widgets.py.

A causal-LM adapter gets a prompt box and two panes, "Base model" and "With adapter", filled
token by token while studio.core.playground.Playground generates (base answer first, then the
adapted one). The pieces arrive on the job's thread; a TextPump (textpump.py) buffers them and
wakes the GUI thread once per batch it has time to take, so a fast model costs one repaint per
batch, not per token. A classifier adapter gets a text box and a table: each label's probability
under the base model and with the adapter.

The loaded Playground is kept for later prompts, and closed when another adapter is picked or
the dialog closes (it holds a whole base model in memory).
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QComboBox, QDialog, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton,
                               QStackedWidget, QVBoxLayout, QWidget)

from studio.core.errors import Cancelled
from studio.core.gallery import Entry

from .forms import ERROR_STYLE
from .gallery_text import muted, short_base
from .playground_widgets import AnswerPanes, ClassificationView, GenerationOptions
from .tasks import TaskSlot
from .textpump import TextPump

CLASSIFIER = "sequence-classification"


def make_playground(entry: Entry):
    """The entry's Playground, loaded in the engine process (tests replace this with a fake)."""
    from studio.core.engineclient import RemotePlayground

    return RemotePlayground(entry)


class PlaygroundDialog(QDialog):
    """Pick an adapter, write a prompt, compare the base model's answer with the adapted one."""

    failed = Signal(str)           # one readable line
    loaded = Signal(str)           # the entry name whose Playground is ready
    generated = Signal(dict)       # {"base": str, "adapted": str}
    classified = Signal(dict)      # {"labels", "base", "adapted"}

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("playground")
        self.setWindowTitle("Playground — LoRA Studio")
        self.setModal(False)
        self.entries: dict[str, Entry] = {}
        self.session = None                  # the loaded studio.core.playground.Playground
        self.session_name: str | None = None
        self.load_task = TaskSlot(self, "playgroundLoad")   # the model loads in the engine process
        self.run_task = TaskSlot(self, "playgroundRun")
        self._pending = False                # Generate was pressed while loading
        self._run_id = 0
        self._started = 0.0
        self.pump = TextPump(self)
        self.pump.arrived.connect(self._on_pump_arrived)

        self.adapter_combo = QComboBox()
        self.adapter_combo.setObjectName("playgroundAdapter")
        self.adapter_combo.setAccessibleName("Adapter to try")
        self.adapter_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.adapter_combo.setMinimumContentsLength(24)
        self.adapter_combo.currentIndexChanged.connect(self._on_adapter_combo_changed)
        self.about = QLabel()
        self.about.setObjectName("playgroundAbout")
        muted(self.about)
        self.status = QLabel()
        self.status.setObjectName("playgroundStatus")
        self.status.setWordWrap(True)
        self.busy = QProgressBar()
        self.busy.setObjectName("playgroundProgress")
        self.busy.setRange(0, 0)
        self.busy.setMaximumWidth(140)
        self.busy.setMaximumHeight(14)
        self.busy.setTextVisible(False)
        self.busy.hide()

        self.prompt = QPlainTextEdit()
        self.prompt.setObjectName("playgroundPrompt")
        self.prompt.setAccessibleName("Prompt")
        self.prompt.setPlaceholderText("Write a prompt (Ctrl+Enter generates)")
        self.prompt.setFixedHeight(90)
        self.options_row = GenerationOptions()
        self.max_tokens = self.options_row.max_tokens
        self.temperature = self.options_row.temperature
        self.generate_button = QPushButton("Generate")
        self.generate_button.setObjectName("playgroundGenerate")
        self.generate_button.setDefault(True)
        self.generate_button.clicked.connect(self.generate)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("playgroundStop")
        self.stop_button.clicked.connect(self.stop)
        QShortcut(QKeySequence("Ctrl+Return"), self, activated=self.generate)

        self.answers = AnswerPanes()
        self.base_pane, self.adapted_pane = self.answers.base_pane, self.answers.adapted_pane
        self.base_title, self.adapted_title = self.answers.base_title, self.answers.adapted_title
        self.classification = ClassificationView()
        self.prediction, self.table = self.classification.prediction, self.classification.table
        self.class_note = self.classification.class_note
        self.pages = QStackedWidget()
        self.pages.addWidget(self.answers)
        self.pages.addWidget(self.classification)

        top = QHBoxLayout()
        top.addWidget(QLabel("Adapter"))
        top.addWidget(self.adapter_combo, 1)
        top.addWidget(self.about, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.options_row)
        buttons.addStretch(1)
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.stop_button)
        status_row = QHBoxLayout()
        status_row.addWidget(self.status, 1)
        status_row.addWidget(self.busy)
        column = QVBoxLayout(self)
        column.addLayout(top)
        column.addWidget(self.prompt)
        column.addLayout(buttons)
        column.addLayout(status_row)
        column.addWidget(self.pages, 1)
        self.resize(960, 560)
        self._update_controls()

    # -- adapters ----------------------------------------------------------------------------

    def set_entries(self, entries: list[Entry], current: str | None = None) -> None:
        """The adapters to choose from; `current` is picked (else the one picked stays)."""
        keep = current or self.adapter_combo.currentData()
        self.entries = {e.name: e for e in entries}
        if self.session_name is not None and self.session_name not in self.entries:
            self.release()
        self.adapter_combo.blockSignals(True)
        self.adapter_combo.clear()
        for e in entries:
            self.adapter_combo.addItem(e.name, e.name)
            self.adapter_combo.setItemData(self.adapter_combo.count() - 1,
                                           f"{e.variant} · {e.base_model}", Qt.ItemDataRole.ToolTipRole)
        index = self.adapter_combo.findData(keep) if keep else -1
        self.adapter_combo.setCurrentIndex(index if index >= 0 else (0 if entries else -1))
        self.adapter_combo.blockSignals(False)
        self._on_adapter_combo_changed(self.adapter_combo.currentIndex())

    def current_entry(self) -> Entry | None:
        return self.entries.get(self.adapter_combo.currentData() or "")

    def forget(self, name: str) -> None:
        """`name` is about to be renamed or deleted: let go of its loaded model."""
        if self.session_name == name or (self.load_job is not None and self.adapter_combo.currentData() == name):
            self.release()

    def _on_adapter_combo_changed(self, index: int) -> None:
        entry = self.current_entry()
        classifier = entry is not None and entry.task == CLASSIFIER
        self.pages.setCurrentIndex(1 if classifier else 0)
        self.options_row.setVisible(not classifier)
        self.generate_button.setText("Classify" if classifier else "Generate")
        self.prompt.setPlaceholderText("Text to classify (Ctrl+Enter classifies)" if classifier
                                       else "Write a prompt (Ctrl+Enter generates)")
        if entry is None:
            self.about.setText("")
            self.release()
            self.status.setText("No adapter in the gallery yet")
            self._update_controls()
            return
        self.about.setText(f"{entry.variant}{f' · r {entry.rank}' if entry.rank else ''} on "
                           f"{short_base(entry.base_model)}")
        self.answers.set_adapter_name(entry.name)
        if entry.name == self.session_name and self.session is not None:
            self._update_controls()
            return
        self.release()
        if self.isVisible():
            self.load()
        self._update_controls()

    # -- loading -----------------------------------------------------------------------------

    def load(self) -> None:
        """Load base model + adapter for the chosen entry in the background (once)."""
        entry = self.current_entry()
        if entry is None or self.load_job is not None or (self.session is not None and
                                                          self.session_name == entry.name):
            return

        def work(progress, should_stop):
            session = make_playground(entry)
            try:
                session.load(progress=progress, should_stop=should_stop)
            except BaseException:
                _close_quietly(session)
                raise
            if should_stop():             # picked another adapter (or closed) while this loaded
                _close_quietly(session)
                raise Cancelled("loading cancelled")
            return session

        self._set_status(f"loading the base model and {entry.name}…")
        self.load_task.start(work, done=lambda session: self._on_loaded(entry.name, session),
                             failed=self._on_load_failed, cancelled=lambda: self._on_load_failed(None),
                             progress=lambda message, fraction: self._set_status(f"loading {entry.name}: {message}"),
                             discarded=_close_quietly)
        self._update_controls()

    @property
    def load_job(self):
        """The load under way (None when there is none)."""
        return self.load_task.job

    @property
    def run_job(self):
        """The generation or classification under way (None when there is none)."""
        return self.run_task.job

    def _on_loaded(self, name: str, session) -> None:
        self.session, self.session_name = session, name
        self._set_status(f"{name} is ready: write a prompt and press {self.generate_button.text()}")
        self.loaded.emit(name)
        self._update_controls()
        if self._pending:
            self._pending = False
            self.generate()

    def _on_load_failed(self, text: str | None) -> None:
        self._pending = False
        self._ended(text, "loading cancelled")

    def _ended(self, error: str | None, cancelled: str) -> None:
        """A task ended without a result: its error (shown and signalled), or `cancelled`."""
        if error:
            self._set_status(error, error=True)
            self.failed.emit(error)
        else:
            self._set_status(cancelled)
        self._update_controls()

    def release(self, wait: bool = False) -> None:
        """Stop what runs and close the loaded model (another adapter, or the dialog closes).

        A generation stops at its next token and is waited for (the model it uses is closed
        next). A load cannot stop half way: it is left to finish on its thread, where it closes
        what it loaded itself (it was cancelled); `wait` also waits for it (the window closes)."""
        self._pending = False
        run, load = self.run_task.job, self.load_task.job
        self.run_task.drop()
        self.load_task.drop()
        if run is not None:
            run.wait(60000)
        if wait and load is not None:
            load.wait(300000)
        if self.session is not None:
            _close_quietly(self.session)
        self.session, self.session_name = None, None
        self._update_controls()

    def shutdown(self) -> None:
        self.release(wait=True)

    # -- generating --------------------------------------------------------------------------

    def generate(self) -> None:
        """Generate (or classify) with the loaded model; loads it first when needed."""
        entry = self.current_entry()
        if entry is None or self.run_job is not None:
            return
        text = self.prompt.toPlainText()
        if not text.strip():
            self._set_status("write a prompt first", error=True)
            return
        if self.session is None or self.session_name != entry.name:
            self._pending = True
            self.load()
            return
        session, classifier = self.session, entry.task == CLASSIFIER
        self._run_id += 1
        run = self._run_id
        if classifier:
            def work(progress, should_stop):
                return session.classify(text)
        else:
            self.answers.clear()
            max_new, temperature, pump = self.max_tokens.value(), self.temperature.value(), self.pump

            def work(progress, should_stop):
                return session.generate(text, max_new_tokens=max_new, temperature=temperature,
                                        on_text=lambda which, piece: pump.push(run, which, piece),
                                        should_stop=should_stop)

        self._started = time.monotonic()
        self.run_task.start(work, done=lambda result: self._on_run_done(result, classifier),
                            failed=self._on_run_failed, cancelled=lambda: self._on_run_failed(None))
        self._set_status("classifying…" if classifier
                         else "generating with the base model, then with the adapter…")
        self._update_controls()

    def stop(self) -> None:
        if self.run_task.busy:
            self.run_task.cancel()
            self._set_status("stopping…")
        elif self.load_task.busy:
            self._pending = False
            self.load_task.cancel()

    def _on_pump_arrived(self) -> None:
        for run, which, text in self.pump.take():
            if run != self._run_id:
                continue                  # a stopped generation's last pieces
            self.answers.append(which, text)

    def _on_run_done(self, result: dict, classifier: bool) -> None:
        self._on_pump_arrived()
        took = time.monotonic() - self._started
        if classifier:
            self.show_classification(result)
            self.classified.emit(result)
        else:
            self.answers.settle(result)
            self.generated.emit(result if isinstance(result, dict) else {})
        self._set_status(f"done in {took:.1f} s")
        self._update_controls()

    def _on_run_failed(self, message: str | None) -> None:
        self._on_pump_arrived()
        self._ended(message, "stopped")

    def show_classification(self, result: dict) -> None:
        self.classification.show_result(result)

    # -- state -------------------------------------------------------------------------------

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(ERROR_STYLE if error else "")

    def _update_controls(self) -> None:
        busy = self.run_job is not None or self.load_job is not None
        self.busy.setVisible(busy)
        has = self.current_entry() is not None
        self.generate_button.setEnabled(has and self.run_job is None)
        self.stop_button.setEnabled(busy)
        self.adapter_combo.setEnabled(self.run_job is None)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.session is None and self.load_job is None:
            self.load()

    def done(self, result: int) -> None:
        self.release()
        super().done(result)

    def closeEvent(self, event) -> None:
        self.release()
        super().closeEvent(event)


def _close_quietly(session) -> None:
    try:
        session.close()
    except Exception:   # closing frees memory; a failure there must not take the window down
        pass
