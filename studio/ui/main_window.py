"""The studio window: set-up panels on the left, live charts on the right, runs, data preview, the
adapter gallery and the log in docks, menus, a toolbar and a status bar.

The window holds no training logic. Train builds a RunConfig from the panels and hands it to a
RunController (worker.py), which runs a core Session in a QThread; the events it reports are
added to a RunHistory (plain data) and the charts repaint from it on a timer, at most ten times a
second, whatever the step rate. A past run opens from its folder's events.jsonl into the same
RunHistory, so it looks exactly as it did live.
"""

from __future__ import annotations

import time
from html import escape
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QHBoxLayout, QInputDialog, QLabel,
                               QLineEdit, QListWidget, QListWidgetItem, QMainWindow, QMessageBox, QPlainTextEdit,
                               QProgressBar,
                               QPushButton, QScrollArea, QSplitter, QTextBrowser, QVBoxLayout, QWidget)

from studio.core.config import RunConfig
from studio.core.errors import StudioError
from studio.core.events import describe
from studio.core import runlock
from studio.core.paths import studio_home
from studio.core.resources import default_config_path
from studio.core.storage import held_text

from . import wheelguard
from .charts_panel import ChartsPanel
from .elide import ElidedLabel
from .gallery_actions import GalleryController
from .help_dialogs import about_box, help_actions
from .history import RunHistory
from .panels import DATA_SUFFIXES, DataPanel, ModelPanel, TrainingPanel, VariantPanel, preview_html
from .theme import THEMES, apply_theme
from .worker import BackgroundJob, RunController, running_threads

DEFAULT_CONFIG = default_config_path()
MAX_RECENT = 8
FINISHED = ("completed", "stopped", "failed")
REPAINT_MS = 100          # charts and status bar repaint at most this often while a run reports
BANNER_STYLE = ("QLabel { background: #fbe3e1; color: #7a1b14; border: 1px solid #e5a29c; "
                "border-radius: 4px; padding: 6px; }")


def default_config() -> RunConfig:
    try:
        return RunConfig.from_toml(DEFAULT_CONFIG)
    except StudioError:   # an installed copy without resources: the built-in defaults
        return RunConfig()


class MainWindow(QMainWindow):
    """The whole studio. `load(path)` opens a run config (.toml) or a run folder."""

    run_finished = Signal(dict)     # re-emitted from the controller, after the window has updated

    def __init__(self, settings: QSettings | None = None):
        super().__init__()
        wheelguard.install()   # the wheel scrolls the set-up column, never a value under the pointer
        self.setObjectName("mainWindow")
        self.setWindowTitle("LoRA Studio")
        self.setAcceptDrops(True)
        self.settings = settings or QSettings()
        self.controller = RunController(self)
        self.controller.events_arrived.connect(self._on_controller_events)
        self.controller.run_finished.connect(self._on_controller_finished)
        self.controller.state_changed.connect(self._on_controller_state)
        self.history = RunHistory()
        self.run_dir: Path | None = None
        self.config_path: Path | None = None
        self._changed: set[str] = set()
        self._close_when_finished = False
        self._status = {}
        self._run_started_at: float | None = None
        self._overlay_cache: dict[str, tuple[float, RunHistory]] = {}
        self._gallery_entry: str | None = None     # what the run under way was added to the gallery as

        self._build_panels()
        self._build_central()
        self._build_docks()
        self._build_actions()
        self._build_menus_and_toolbar()
        self._build_status_bar()

        self.repaint_timer = QTimer(self, interval=REPAINT_MS)
        self.repaint_timer.timeout.connect(self._on_repaint_timer)
        self.validate_timer = QTimer(self, singleShot=True, interval=150)
        self.validate_timer.timeout.connect(self.validate)
        screen = QApplication.primaryScreen()
        room = screen.availableGeometry().size() if screen is not None else None
        self.resize(min(1400, room.width()) if room else 1400, min(900, room.height()) if room else 900)
        self.resizeDocks([self.log_dock], [140], Qt.Orientation.Vertical)
        # the gallery's cards, combos and details want ~400 px (GalleryView.sizeHint)
        self.resizeDocks([self.runs_dock], [self.gallery_view.sizeHint().width()], Qt.Orientation.Horizontal)
        self._restore_layout()
        self.set_config(default_config(), None)
        self.gallery.view.refresh()

    # -- construction ------------------------------------------------------------------------

    def _build_panels(self) -> None:
        self.model_panel = ModelPanel()
        self.data_panel = DataPanel()
        self.variant_panel = VariantPanel()
        self.training_panel = TrainingPanel()
        for panel in (self.model_panel, self.data_panel, self.variant_panel, self.training_panel):
            panel.changed.connect(self._on_setup_changed)
        self.data_panel.preview_ready.connect(self._on_preview_ready)
        self._raise_preview = False   # Preview was pressed: its tab comes to the front when ready
        self.data_panel.preview_button.clicked.connect(lambda: setattr(self, "_raise_preview", True))
        self.data_panel.preview_started.connect(lambda: self.preview_view.setHtml("<i>reading the dataset…</i>"))
        self.data_panel.preview_failed.connect(
            lambda text: self.preview_view.setHtml(f"<p style='color:#d0342c'>{escape(text)}</p>"))
        holder = QWidget()
        column = QVBoxLayout(holder)
        for panel in (self.model_panel, self.data_panel, self.variant_panel, self.training_panel):
            column.addWidget(panel)
        column.addStretch(1)
        self.setup_scroll = QScrollArea()
        self.setup_scroll.setObjectName("setupPanel")
        self.setup_scroll.setWidgetResizable(True)
        self.setup_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setup_scroll.setWidget(holder)
        self.setup_scroll.setMinimumWidth(380)

    def _build_central(self) -> None:
        self.train_button = QPushButton("Train")
        self.train_button.setObjectName("trainButton")
        self.train_button.setAccessibleName("Train")
        self.train_button.setDefault(True)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setObjectName("pauseButton")
        self.pause_button.setAccessibleName("Pause or resume")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stopButton")
        self.stop_button.setAccessibleName("Stop")
        self.validation_label = QLabel()
        self.validation_label.setObjectName("validationLabel")
        self.validation_label.setStyleSheet("color: #d0342c;")
        self.validation_label.setWordWrap(True)
        self.validation_label.setMinimumWidth(120)
        # the memory plan (studio.core.plan): estimated peak against the device's free memory,
        # re-estimated in the background whenever the set-up changes
        self.memory_label = ElidedLabel(name="memoryPlan")
        self.memory_label.setAccessibleName("Memory plan")
        self._plan_job = None
        self.plan = None
        self.plan_timer = QTimer(self)
        self.plan_timer.setSingleShot(True)
        self.plan_timer.setInterval(300)
        self.plan_timer.timeout.connect(self._start_plan)
        # the texts that grow with a run are shortened to their room, never widening the window
        self.run_title = ElidedLabel(name="runTitle")
        bold = self.run_title.font()
        bold.setBold(True)
        self.run_title.setFont(bold)
        bar = QHBoxLayout()
        bar.addWidget(self.train_button)
        bar.addWidget(self.pause_button)
        bar.addWidget(self.stop_button)
        bar.addWidget(self.validation_label, 1)
        bar.addWidget(self.memory_label)
        self.banner = QLabel()
        self.banner.setObjectName("errorBanner")
        self.banner.setAccessibleName("Error")
        self.banner.setStyleSheet(BANNER_STYLE)
        self.banner.setWordWrap(True)
        self.banner.setMinimumWidth(120)     # a long path wraps or is cut; it never widens the window
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner.hide()
        self.charts = ChartsPanel()
        right = QWidget()
        column = QVBoxLayout(right)
        column.addLayout(bar)
        column.addWidget(self.run_title)
        column.addWidget(self.banner)
        column.addWidget(self.charts, 1)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.addWidget(self.setup_scroll)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([420, 1000])
        self.setCentralWidget(self.splitter)

    def _build_docks(self) -> None:
        self.runs_view = QListWidget()
        self.runs_view.setObjectName("runsView")
        self.runs_view.setAccessibleName("Past runs")
        self.runs_view.setToolTip("Tick runs to overlay their loss curves; double-click to open one")
        self.runs_view.itemChanged.connect(self._on_runs_item_changed)
        self.runs_view.itemDoubleClicked.connect(lambda item: self.open_run_folder(item.data(Qt.ItemDataRole.UserRole)))
        refresh = QPushButton("Refresh")
        refresh.setObjectName("refreshRunsButton")
        refresh.clicked.connect(self.refresh_runs)
        self.resume_button = QPushButton("Resume run")
        self.resume_button.setObjectName("resumeRunButton")
        self.resume_button.setToolTip("Continue the opened run from its last checkpoint")
        self.resume_button.clicked.connect(lambda: self.resume_run())
        runs = QWidget()
        column = QVBoxLayout(runs)
        column.setContentsMargins(2, 2, 2, 2)
        column.addWidget(self.runs_view, 1)
        row = QHBoxLayout()
        row.addWidget(refresh)
        row.addWidget(self.resume_button)
        column.addLayout(row)
        self.runs_dock = self._dock("Runs", "runsDock", runs, Qt.DockWidgetArea.RightDockWidgetArea)

        self.preview_view = QTextBrowser()
        self.preview_view.setObjectName("dataPreview")
        self.preview_view.setAccessibleName("Dataset preview")
        self.preview_view.setOpenLinks(False)
        self.preview_dock = self._dock("Data preview", "previewDock", self.preview_view,
                                       Qt.DockWidgetArea.RightDockWidgetArea)

        self.log_view = QPlainTextEdit()
        self.log_view.setObjectName("runLog")
        self.log_view.setAccessibleName("Run log")
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_dock = self._dock("Log", "logDock", self.log_view, Qt.DockWidgetArea.BottomDockWidgetArea)

        self.gallery = GalleryController(self)
        self.gallery_view = self.gallery.view
        self.gallery_dock = self._dock("Gallery", "galleryDock", self.gallery_view,
                                       Qt.DockWidgetArea.RightDockWidgetArea)
        self.tabifyDockWidget(self.runs_dock, self.preview_dock)
        self.tabifyDockWidget(self.preview_dock, self.gallery_dock)
        self.runs_dock.raise_()

    def _dock(self, title: str, name: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, text: str, name: str, slot, shortcut=None, tip: str = "") -> QAction:
        action = QAction(text, self)
        action.setObjectName(name)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.triggered.connect(lambda *_: slot())
        return action

    def _build_actions(self) -> None:
        K = QKeySequence.StandardKey
        self.new_action = self._action("&New run", "newRunAction", self.new_run, K.New,
                                       "Start again from the default run config")
        self.open_config_action = self._action("&Open run config…", "openConfigAction", self.open_config_dialog,
                                               K.Open, "Load a run config (.toml)")
        self.open_run_action = self._action("Open run &folder…", "openRunAction", self.open_run_dialog,
                                            "Ctrl+Shift+O", "Open a past run's folder and redraw its charts")
        self.save_config_action = self._action("&Save run config", "saveConfigAction", self.save_config, K.Save,
                                               "Save the run config")
        self.save_as_action = self._action("Save run config &as…", "saveConfigAsAction", self.save_config_as,
                                           K.SaveAs)
        self.quit_action = self._action("&Quit", "quitAction", self.close, K.Quit)
        self.train_action = self._action("&Train", "trainAction", self.train, "Ctrl+Return",
                                         "Start training with these settings")
        self.pause_action = self._action("&Pause", "pauseAction", self.controller.pause, "Ctrl+P",
                                         "Pause after the step under way")
        self.resume_action = self._action("R&esume", "resumeAction", self.controller.resume, "Ctrl+Shift+P",
                                          "Continue a paused run")
        self.stop_action = self._action("&Stop", "stopAction", self.stop, "Ctrl+.",
                                        "Stop after the step under way; the adapter is saved")
        self.resume_run_action = self._action("Resume run from &checkpoint", "resumeRunAction",
                                              lambda: self.resume_run(), None,
                                              "Continue the opened stopped or failed run from its last checkpoint")
        self.launch_script_action = self._action(
            "E&xport run as launch script…", "exportLaunchScriptAction", self.export_launch_script, None,
            "Write this run as a script and accelerate config for several GPUs or cluster nodes")
        self.help_actions = help_actions(self)     # documentation, keyboard shortcuts, About
        self.about_action = self.help_actions["about"]
        self.train_button.clicked.connect(self.train_action.trigger)
        self.stop_button.clicked.connect(self.stop_action.trigger)
        self.pause_button.clicked.connect(self._on_pause_button_clicked)

    def _build_menus_and_toolbar(self) -> None:
        menu = self.menuBar()
        file = menu.addMenu("&File")
        file.setObjectName("fileMenu")
        for a in (self.new_action, self.open_config_action, self.open_run_action):
            file.addAction(a)
        self.recent_menu = file.addMenu("Open &recent")
        self.recent_menu.setObjectName("recentMenu")
        file.addSeparator()
        file.addAction(self.save_config_action)
        file.addAction(self.save_as_action)
        file.addSeparator()
        file.addAction(self.quit_action)
        run = menu.addMenu("&Run")
        run.setObjectName("runMenu")
        for a in (self.train_action, self.pause_action, self.resume_action, self.stop_action):
            run.addAction(a)
        run.addSeparator()
        self.preset_menu = run.addMenu("&Preset by model size")
        self.preset_menu.setObjectName("presetMenu")
        self.preset_menu.setToolTipsVisible(True)
        from studio.core.presets import PRESETS

        for preset in PRESETS.values():
            action = self.preset_menu.addAction(preset.title)
            action.setObjectName(f"preset-{preset.name}")
            action.setToolTip(", ".join(f"{k} = {v}" for k, v in preset.settings.items()))
            action.triggered.connect(lambda _=False, name=preset.name: self.apply_preset(name))
        self.preset_menu.aboutToShow.connect(self._mark_suggested_preset)
        run.addAction(self.resume_run_action)
        run.addAction(self.launch_script_action)
        self.gallery_menu = self.gallery.build_menu(menu.addMenu("&Gallery"))
        view = menu.addMenu("&View")
        view.setObjectName("viewMenu")
        for dock in (self.runs_dock, self.preview_dock, self.gallery_dock, self.log_dock):
            view.addAction(dock.toggleViewAction())
        self.gallery_dock.toggleViewAction().setObjectName("showGalleryAction")
        self.gallery_dock.toggleViewAction().setShortcut(QKeySequence("Ctrl+Shift+G"))
        view.addSeparator()
        themes = view.addMenu("&Theme")
        group = QActionGroup(self)
        self.theme_actions = {}
        current = self.settings.value("theme", "system")
        for mode in THEMES:
            a = QAction(mode.capitalize(), self, checkable=True)
            a.setObjectName(f"theme{mode.capitalize()}Action")
            a.setChecked(mode == current)
            a.triggered.connect(lambda checked, m=mode: self.set_theme(m))
            group.addAction(a)
            themes.addAction(a)
            self.theme_actions[mode] = a
        help_menu = menu.addMenu("&Help")
        help_menu.setObjectName("helpMenu")
        for key in ("docs", "shortcuts"):
            help_menu.addAction(self.help_actions[key])
        help_menu.addSeparator()
        help_menu.addAction(self.about_action)
        self.toolbar = self.addToolBar("Main")
        self.toolbar.setObjectName("mainToolbar")
        for a in (self.open_config_action, self.save_config_action, self.open_run_action):
            self.toolbar.addAction(a)
        self.toolbar.addSeparator()
        for a in (self.train_action, self.pause_action, self.resume_action, self.stop_action):
            self.toolbar.addAction(a)
        self.toolbar.addSeparator()
        self.toolbar.addAction(self.gallery.playground_action)
        self._update_recent_menu()

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("runProgress")
        self.progress_bar.setMaximumWidth(180)
        self.progress_bar.hide()
        self.status_labels = {}
        for key, tip in (("device", "Where the run trains"), ("step", "Optimizer step / total"),
                         ("speed", "Tokens per second"), ("eta", "Estimated time left"),
                         ("memory", "Memory in use (GPU allocator on a GPU, the process on a CPU)")):
            label = ElidedLabel(name=f"{key}Status", tip=tip)
            bar.addPermanentWidget(label)
            self.status_labels[key] = label
        bar.addPermanentWidget(self.progress_bar)
        self._update_status_bar()

    # -- the run config ----------------------------------------------------------------------

    def set_config(self, config: RunConfig, path: Path | None) -> None:
        """Show a run config in the panels."""
        self.config_path = Path(path) if path else None
        source = str(path) if path else str(DEFAULT_CONFIG if path is None else "")
        raw = config.to_dict()
        self.model_panel.config_source = source
        self.data_panel.config_source = source
        self.model_panel.set_values(raw["model"])
        self.data_panel.set_values(raw["data"])
        self.variant_panel.set_values(raw["variant"])
        self.training_panel.set_values(raw["train"], raw["telemetry"])
        self.validate()
        self._update_title()
        self.refresh_runs()

    def apply_preset(self, name: str) -> bool:
        """Set storage, rank, batch, length, learning rate and checkpointing from a preset
        (studio.core.presets); the rest of the set-up stays. False, with the reason shown, when
        the set-up is not valid yet."""
        from studio.core.presets import get_preset

        try:
            current = self.current_config()
            overrides = get_preset(name).overrides(current.variant_name)
            config = current.with_overrides(overrides)
        except StudioError as e:
            self.show_error(f"cannot apply the preset: {e}")
            return False
        raw = config.to_dict()
        self.model_panel.options.set_values(raw["model"])   # whole sections: set_values resets what it is not given
        self.data_panel.options.set_values(raw["data"])
        self.variant_panel.set_values(raw["variant"])
        self.training_panel.train.set_values(raw["train"])
        self.log(f"preset {name}: " + ", ".join(o.replace("=", " = ", 1) for o in overrides))
        self.validate()
        return True

    def _mark_suggested_preset(self) -> None:
        """The preset that suits the chosen model's size is marked in the menu."""
        from studio.core.presets import PRESETS, suggest

        described = self.model_panel.description or {}
        best = suggest(described.get("parameters"))
        for action in self.preset_menu.actions():
            name = action.objectName().removeprefix("preset-")
            title = PRESETS[name].title if name in PRESETS else action.text()
            action.setText(f"{title}   (suits this model)" if name == best else title)

    def raw_config(self) -> dict:
        model = self.model_panel.values()
        train, telemetry = self.training_panel.values()
        return {"model": model, "data": self.data_panel.values(), "variant": self.variant_panel.values(),
                "train": train, "telemetry": telemetry}

    def current_config(self) -> RunConfig:
        """The panels as a checked RunConfig (raises ConfigError with the field at fault)."""
        where = str(self.config_path) if self.config_path else "run config"
        config = RunConfig.from_dict(self.raw_config(), where)
        config.source_path = str(self.config_path) if self.config_path else str(DEFAULT_CONFIG)
        out = Path(config.train.output_dir).expanduser()
        if not out.is_absolute():
            # a desktop app has no meaningful working folder: runs go beside the config file, or
            # into the studio's data folder for the built-in default
            base = self.config_path.parent if self.config_path else studio_home()
            config.train.output_dir = str(base / out)
        return config

    def validate(self) -> bool:
        """Mark every invalid value next to its field; Train is enabled only for a valid run."""
        errors = {}
        for panel in (self.model_panel, self.data_panel, self.variant_panel, self.training_panel):
            errors.update(panel.errors())
        if not errors:
            try:
                self.current_config()
            except StudioError as e:
                errors["config"] = e.reason
                self._mark_cross_field_error(e.reason, field=e.field)
        self.validation_errors = errors
        self.variant_panel.set_run_steps(self.planned_steps())
        if errors:
            self.plan_timer.stop()
            self._show_plan(None)
        else:
            self.plan_timer.start()
        busy = self.model_panel.busy and self.model_panel.description is None
        if errors:
            first_key = next(iter(errors))
            message = errors[first_key]
            if first_key != "config" and not message.startswith(f"{first_key}:"):   # a core error names it already
                message = f"{first_key}: {message}"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            self.validation_label.setText(message + more)
        else:
            self.validation_label.setText("")
        self._update_actions(valid=not errors and not busy)
        return not errors

    def _start_plan(self) -> None:
        from studio.core.plan import estimate   # torch-free: file headers, psutil, nvidia-smi

        try:
            config = self.current_config()
        except StudioError:
            return
        if self._plan_job is not None:
            self._plan_job.cancel()
        def work(progress, should_stop):
            try:
                return estimate(config), None
            except StudioError as e:     # the error object: its field marks the form
                return None, e

        job = BackgroundJob(work, self, name="memoryPlan")
        job.succeeded.connect(lambda value, j=job: j is self._plan_job and self._show_plan(*value))
        job.failed.connect(lambda text, j=job: j is self._plan_job and self._show_plan(None, text))
        self._plan_job = job.start()

    def _show_plan(self, plan, error: "str | StudioError | None" = "") -> None:
        """'Memory ~2.8 of 17.6 GiB', red with what would make it fit when it will not fit."""
        from studio.core.plan import gib

        self.plan = plan
        if plan is None:
            self.memory_label.setText("")
            self.memory_label.set_tip(f"memory plan: {error}" if error else "")
            field = getattr(error, "field", None)
            if field and field.startswith("variant."):   # a rank the layers cannot take: before Train, once
                self._mark_cross_field_error(error.reason, field)
                self.validation_errors = {"config": error.reason}
                self.validation_label.setText(str(error))
                self._update_actions(valid=False)
            return
        free = f" of {gib(plan.free_bytes)} free" if plan.free_bytes is not None else ""
        text = f"Memory ~{gib(plan.peak_bytes)}{free}"
        details = "\n".join([plan.summary(), *plan.lines()])
        if plan.fits is False:
            hint = plan.advice[0] if plan.advice else "a smaller model"
            self.memory_label.setText(f"{text}: will not fit (try {hint.split(':')[0]})")
            self.memory_label.setStyleSheet("color: #d0342c; font-weight: bold;")
        else:
            self.memory_label.setText(text)
            self.memory_label.setStyleSheet("")
        self.memory_label.set_tip(details)

    def planned_steps(self) -> int | None:
        """The optimizer steps the set-up would train: from train.max_steps, or from the
        dataset preview's training examples, the batch size and the epochs (None while unknown)."""
        from studio.core.training import planned_steps   # plain arithmetic, no torch imported

        train = self.training_panel.train.values()
        preview = None if self.data_panel.busy else self.data_panel.preview
        examples = (preview or {}).get("train_examples")
        try:
            if int(train["max_steps"]) <= 0 and not isinstance(examples, int):
                return None
            return planned_steps(examples or 0, int(train["batch_size"]), int(train["grad_accum"]),
                                 float(train["epochs"]), int(train["max_steps"]))
        except (TypeError, ValueError, ZeroDivisionError):
            return None

    def _mark_cross_field_error(self, text: str, field: str | None, reveal: bool = False) -> None:
        """A whole-config error about `field` ("variant.r"): put `text` next to that field."""
        forms = {"variant": self.variant_panel.form, "train": self.training_panel.train,
                 "telemetry": self.training_panel.telemetry, "data": self.data_panel.options,
                 "model": self.model_panel.options}
        if field and "." in field:
            section, key = field.split(".", 1)
            form = forms.get(section)
            if form is not None and key in form.editors:
                form.set_external_error(key, text)
                if reveal:   # scroll the set-up column to the field at fault
                    self.setup_scroll.ensureWidgetVisible(form.error_labels.get(key, form.editors[key]))

    def _place_run_error(self, error: str, field: str | None = None) -> None:
        """A run that failed on its input also shows the reason next to what caused it: the model
        source, the data file, or the option the error is about (its `field`)."""
        config = getattr(self, "_run_config", None)
        reason = error[len(field) + 2:] if field and error.startswith(field + ": ") else error
        if field == "model.source":
            self.model_panel.show_source_error(reason)
        elif field in ("data.path", "data.eval_path"):
            self.data_panel.show_file_error(error)
        elif field and field != "train.output_dir":   # a folder problem is not the field's
            self._mark_cross_field_error(reason, field, reveal=True)
        elif config is not None:
            # a data error starts with the file (a Windows path has a colon of its own)
            files = [config.data.path, Path(config.data.path).name]
            if config.data.eval_path:
                files += [config.data.eval_path, Path(config.data.eval_path).name]
            if any(f and error.startswith(f + ":") for f in files):
                self.data_panel.show_file_error(error)
        self.validate()

    def _on_setup_changed(self) -> None:
        model = self.model_panel.values()
        described = self.model_panel.description
        if described is not None and described.get("source") == model["source"]:
            self.data_panel.set_model(model["source"], model.get("task", ""), ready=described.get("ready", True)
                                      and described.get("kind") != "hub")
        self.validate_timer.start()

    # -- files -------------------------------------------------------------------------------

    def load(self, path: str | Path) -> bool:
        """Open a run config (.toml) or a run folder; a bad one is explained in the banner."""
        path = Path(path).expanduser()
        if path.is_dir():
            return self.open_run_folder(path)
        return self.open_config(path)

    def open_config(self, path: str | Path) -> bool:
        path = Path(path)
        try:
            config = RunConfig.from_toml(path)
        except StudioError as e:
            self.show_error(str(e))
            return False
        self.hide_error()
        self.set_config(config, path)
        self._add_recent(path)
        self.statusBar().showMessage(f"Opened {path}", 5000)
        return True

    def open_config_dialog(self) -> None:
        path = self._ask_open_file("Open run config", "Run configs (*.toml)")
        if path:
            self.open_config(path)

    def save_config(self) -> bool:
        if self.config_path is None:
            return self.save_config_as()
        return self._write_config(self.config_path)

    def save_config_as(self) -> bool:
        path = self._ask_save_file("Save run config", "Run configs (*.toml)")
        if not path:
            return False
        path = Path(path) if str(path).endswith(".toml") else Path(str(path) + ".toml")
        return self._write_config(path)

    def _write_config(self, path: Path) -> bool:
        from studio.core.paths import write_text_atomic

        try:
            config = RunConfig.from_dict(self.raw_config(), str(path))
        except StudioError as e:
            self.show_error(f"not saved: {e}")
            return False
        try:
            write_text_atomic(path, config.to_toml())
        except OSError as e:
            self.show_error(f"{path}: cannot write ({e.strerror})")
            return False
        self.config_path = path
        self.model_panel.config_source = self.data_panel.config_source = str(path)
        self._add_recent(path)
        self._update_title()
        self.statusBar().showMessage(f"Saved {path}", 5000)
        return True

    def open_run_dialog(self) -> None:
        path = self._ask_directory("Open run folder")
        if path:
            self.open_run_folder(path)

    def open_run_folder(self, path: str | Path) -> bool:
        """Redraw a past run from its events.jsonl and load its config into the panels."""
        path = Path(path)
        if self.controller.is_running:
            self.show_error("a run is in progress: stop it before opening another")
            return False
        if not (path / "events.jsonl").is_file():
            self.show_error(f"{path}: not a run folder (expected events.jsonl inside)")
            return False
        try:
            history = RunHistory.from_run_folder(path)
        except (OSError, ValueError) as e:
            self.show_error(f"{path / 'events.jsonl'}: cannot read ({e})")
            return False
        self.hide_error()
        if (path / "config.toml").is_file():
            try:
                config = RunConfig.from_toml(path / "config.toml")
                self.set_config(config, None)
                self.config_path = None
            except StudioError as e:
                self.show_error(f"the run's charts are shown, but its config could not be loaded: {e}")
        self.history = history
        self.run_dir = path
        self.charts.show_history(history, None)
        self._status = _status_from_history(history)
        self._update_status_bar()
        self._add_recent(path)
        self._update_title()
        self._update_actions()
        if history.status.get("state") == "failed" and history.status.get("error"):
            self.show_error(f"this run failed: {history.status['error']}")
        elif history.status.get("state") not in FINISHED:
            self._explain_unfinished(path)
        self.statusBar().showMessage(f"Opened run {path.name}", 5000)
        return True

    def _explain_unfinished(self, path: Path) -> None:
        """A log without run_finished: the run is alive in another process, or it was killed
        (or crashed) and can be resumed from its last checkpoint."""
        pid = runlock.holder(path)
        if pid is not None:
            self.show_error(f"this run is still being written by process {pid}: its charts are as of now")
            return
        self.history.status["state"] = "interrupted"
        from studio.core.runfolder import last_checkpoint   # a complete one (no torch imported)

        checkpoint = last_checkpoint(path)
        step = self.history.status.get("step", 0)
        hint = (f"Resume run continues from {checkpoint.name}" if checkpoint
                else "it has no complete checkpoint yet, so Resume run starts it again")
        self.show_error(f"this run was interrupted at step {step} (its process was killed or crashed); {hint}")
        self._update_actions()
        self._update_title()

    # -- recent files ------------------------------------------------------------------------

    def recent(self) -> list[str]:
        value = self.settings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [v for v in (value or []) if v]

    def _add_recent(self, path: Path) -> None:
        items = [str(Path(path).resolve())] + [p for p in self.recent() if p != str(Path(path).resolve())]
        self.settings.setValue("recent", items[:MAX_RECENT])
        self._update_recent_menu()

    def _update_recent_menu(self) -> None:
        self.recent_menu.clear()
        items = self.recent()
        for p in items:
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda checked=False, p=p: self.load(p))
        self.recent_menu.setEnabled(bool(items))

    # -- the run -----------------------------------------------------------------------------

    def train(self) -> bool:
        if self.controller.is_running:
            return False
        if not self.validate():
            self.show_error("cannot train yet: " + self.validation_label.text())
            return False
        try:
            config = self.current_config()
        except StudioError as e:
            self.show_error(str(e))
            return False
        self.hide_error()
        self.history = RunHistory()
        self.run_dir = None
        self.charts.clear()
        self._start(config, None)
        return True

    def resume_run(self, run_dir: str | Path | None = None) -> bool:
        """Continue a stopped, failed or interrupted run from its last checkpoint."""
        from studio.core.runfolder import last_checkpoint

        run_dir = Path(run_dir) if run_dir else self.run_dir
        if self.controller.is_running or run_dir is None:
            return False
        pid = runlock.holder(run_dir)
        if pid is not None:
            self.show_error(f"{run_dir}: this run is still running in process {pid}")
            return False
        if last_checkpoint(run_dir) is None and self.history.status.get("state") != "interrupted":
            self.show_error(f"{run_dir}: no checkpoint to resume from")
            return False
        try:
            config = RunConfig.from_toml(run_dir / "config.toml")
        except StudioError as e:
            self.show_error(str(e))
            return False
        self.hide_error()
        self.history = RunHistory.from_run_folder(run_dir)
        # until the resumed run reports, it is loading (not the "stopped" its folder last said)
        self.history.status.update(state="waiting", message="resuming: loading the model and the checkpoint",
                                   error=None)
        self._changed.add("status")
        self.run_dir = run_dir
        self._start(config, run_dir)
        return True

    def _start(self, config: RunConfig, resume_dir: Path | None) -> None:
        self.log_view.appendPlainText(f"— {'resuming ' + resume_dir.name if resume_dir else 'starting'}: "
                                      f"{config.variant_name} on {config.model.source}")
        self._status = {"device": config.train.device, "total": 0, "step": 0}
        self._run_started_at = None
        self._gallery_entry = None
        self.progress_bar.setRange(0, 0)     # busy until the run knows its length
        self.progress_bar.show()
        self._run_config = config
        self.controller.start(config, resume_dir)
        self.repaint_timer.start()
        self._changed.add("status")       # the header says "loading" at once
        self._on_repaint_timer()
        self._update_actions()
        self._update_status_bar()

    def stop(self) -> None:
        if self.controller.is_running:
            self.controller.stop()
            self.statusBar().showMessage("Stopping after the step under way…")

    def _on_pause_button_clicked(self) -> None:
        if self.controller.state == "paused":
            self.controller.resume()
        else:
            self.controller.pause()

    def _on_controller_events(self, events: list) -> None:
        for event in events:
            self._changed |= self.history.add(event)
            self._note_event(event)

    def _note_event(self, e: dict) -> None:
        kind = e.get("type")
        s = self._status
        if kind == "step":
            s["step"] = e.get("step", 0)
            s["total"] = e.get("total_steps") or s.get("total", 0)
            if e.get("tokens_per_s") is not None:
                s["speed"] = e["tokens_per_s"]
            if e.get("memory_mb") is not None:
                s["memory"] = e["memory_mb"]
            if self._run_started_at is None:
                self._run_started_at = time.monotonic()
                s["first_step"] = s["step"]
        elif kind == "run_started":
            s["device"] = f"{e.get('device')} · {held_text(e)}"
            s["total"] = e.get("total_steps", 0)
            s["step"] = e.get("step", 0)
            self.run_dir = Path(e["run_dir"]) if e.get("run_dir") else self.run_dir
        elif kind == "progress":
            self.statusBar().showMessage(e.get("message", ""))
        elif kind == "run_finished":
            self._gallery_entry = e.get("gallery_entry") or self._gallery_entry
        line = describe(e)          # the same line the CLI prints (studio.core.events)
        if line is not None:
            self.log(line)
        if kind == "run_started":
            self.log(f"run folder: {e.get('run_dir')}")

    def _on_repaint_timer(self) -> None:
        if self._changed:
            changed, self._changed = self._changed, set()
            self.charts.show_history(self.history, changed)
            if "status" in changed:
                self._update_title()
        self._update_status_bar()

    def _on_controller_state(self, state: str) -> None:
        self._update_actions()
        self.pause_button.setText("Resume" if state == "paused" else "Pause")
        # the header follows a request at once; the run's own paused/resumed/finished events then
        # set the state it reached (a pause takes effect after the step under way)
        shown = self.history.status.get("state")
        if state == "paused" and shown == "running":
            self._set_shown_state("pausing")
        elif state == "running" and shown == "pausing":
            self._set_shown_state("running")
        elif state == "stopping" and shown in ("running", "pausing", "paused"):
            self._set_shown_state("stopping")
        if state == "paused":
            self.statusBar().showMessage("Paused — press Resume to continue")
        elif self.statusBar().currentMessage().startswith("Paused"):   # it follows the run's state
            self.statusBar().clearMessage()

    def _set_shown_state(self, state: str) -> None:
        self.history.status["state"] = state
        self._changed.add("status")
        self._on_repaint_timer()

    def _on_controller_finished(self, result: dict) -> None:
        self.repaint_timer.stop()
        self._on_repaint_timer()
        if self.history.status.get("state") not in FINISHED:     # the Session could not even report
            self._changed |= self.history.add({"type": "run_finished", "step": self._status.get("step", 0),
                                               "time": time.time(), **result})
            self._on_repaint_timer()
        self.progress_bar.hide()
        status, error = result.get("status"), result.get("error")
        if result.get("run_dir"):
            self.run_dir = Path(result["run_dir"])
            self._add_recent(self.run_dir)
        if status == "failed":
            self.show_error(f"the run failed: {error}" if error else "the run failed")
            if error:
                self._place_run_error(error, result.get("error_field"))
            self.statusBar().showMessage("Run failed", 10000)
        else:
            self.statusBar().showMessage(f"Run {status}" + (f": {result.get('adapter_path')}"
                                                            if result.get("adapter_path") else ""), 10000)
        added = result.get("gallery_entry") or self._gallery_entry
        self._gallery_entry = None
        if added:
            self.gallery.on_run_added(str(added))
            self.log(f"the adapter is in the gallery as {added}")
        self.refresh_runs()
        self._update_actions()
        self._update_title()
        self.run_finished.emit(result)
        if self._close_when_finished:
            self.close()

    # -- runs dock ---------------------------------------------------------------------------

    def runs_folder(self) -> Path | None:
        try:
            return Path(self.current_config().train.output_dir)
        except StudioError:
            return None

    def refresh_runs(self) -> None:
        folder = self.runs_folder()
        checked = {self.runs_view.item(i).data(Qt.ItemDataRole.UserRole)
                   for i in range(self.runs_view.count())
                   if self.runs_view.item(i).checkState() == Qt.CheckState.Checked}
        self.runs_view.blockSignals(True)
        self.runs_view.clear()
        runs = sorted((p for p in folder.iterdir() if (p / "events.jsonl").is_file()),
                      key=lambda p: p.stat().st_mtime, reverse=True) if folder and folder.is_dir() else []
        for p in runs:
            item = QListWidgetItem(p.name)
            item.setData(Qt.ItemDataRole.UserRole, str(p))
            item.setToolTip(str(p))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if str(p) in checked else Qt.CheckState.Unchecked)
            self.runs_view.addItem(item)
        self.runs_view.blockSignals(False)

    def _on_runs_item_changed(self, item: QListWidgetItem) -> None:
        self.set_overlays([self.runs_view.item(i).data(Qt.ItemDataRole.UserRole)
                           for i in range(self.runs_view.count())
                           if self.runs_view.item(i).checkState() == Qt.CheckState.Checked])

    def set_overlays(self, run_dirs: list[str | Path]) -> None:
        """Overlay these runs' loss curves on the loss chart, to compare variants."""
        histories = []
        for d in run_dirs:
            path = Path(d) / "events.jsonl"
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            cached = self._overlay_cache.get(str(d))
            if cached is None or cached[0] != mtime:
                try:
                    cached = (mtime, RunHistory.from_run_folder(d))
                except (OSError, ValueError):
                    continue
                self._overlay_cache[str(d)] = cached
            histories.append(cached[1])
        self.charts.set_overlays(histories)

    # -- status, actions, messages -----------------------------------------------------------

    def _update_actions(self, valid: bool | None = None) -> None:
        if valid is None:
            valid = not getattr(self, "validation_errors", {"?": ""})
        state = self.controller.state
        running = self.controller.is_running
        self.train_action.setEnabled(valid and not running)
        self.train_button.setEnabled(valid and not running)
        self.pause_action.setEnabled(running and state == "running")
        self.resume_action.setEnabled(running and state == "paused")
        self.pause_button.setEnabled(running and state in ("running", "paused"))
        self.stop_action.setEnabled(running and state != "stopping")
        self.stop_button.setEnabled(running and state != "stopping")
        run_state = self.history.status.get("state")
        resumable = (not running and self.run_dir is not None
                     and (run_state == "interrupted" or (run_state in ("stopped", "failed")
                                                     and self._has_checkpoint(self.run_dir))))
        self.resume_run_action.setEnabled(bool(resumable))
        self.resume_button.setEnabled(bool(resumable))
        for a in (self.open_run_action, self.open_config_action, self.new_action):
            a.setEnabled(not running)
        self.setup_scroll.widget().setEnabled(not running)

    @staticmethod
    def _has_checkpoint(run_dir: Path) -> bool:
        from studio.core.runfolder import last_checkpoint

        return last_checkpoint(run_dir) is not None

    def _update_status_bar(self) -> None:
        s, labels = self._status, self.status_labels
        labels["device"].setText(f"device: {s.get('device', 'auto')}")
        step, total = s.get("step", 0), s.get("total", 0)
        labels["step"].setText(f"step {step}/{total}" if total else "step –")
        speed = s.get("speed")
        labels["speed"].setText(f"{speed:,.0f} tok/s" if speed else "– tok/s")
        eta = "ETA –"
        # an ETA only while the run goes on: not once it stopped or finished, nor while it is paused
        if (self.controller.is_running and self.controller.state != "paused" and self._run_started_at is not None
                and total and step > s.get("first_step", 0)):
            rate = (time.monotonic() - self._run_started_at) / (step - s.get("first_step", 0))
            eta = f"ETA {_hms(rate * (total - step))}"
        labels["eta"].setText(eta)
        memory = s.get("memory")
        labels["memory"].setText(f"{memory / 1024:.2f} GiB" if memory and memory >= 1024
                                 else f"{memory:.0f} MiB" if memory else "memory –")
        if self.controller.is_running and total:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(min(step, total))

    def _update_title(self) -> None:
        name = self.config_path.name if self.config_path else "default run"
        self.setWindowTitle(f"{name} — LoRA Studio")
        state = self.history.status.get("state")
        if state == "waiting" and self.controller.is_running:
            state = "loading"
        if state and state != "waiting":
            where = self.run_dir.name if self.run_dir else ""
            self.run_title.setText(" ".join(p for p in (self.history.variant, where) if p) + f" — {state}")
        else:
            self.run_title.setText("")

    def log(self, text: str) -> None:
        self.log_view.appendPlainText(text)

    def export_launch_script(self):
        """The run in the panels as launch.sh + accelerate.yaml + run.toml (launch_dialog.py).
        Returns the dialog (tests drive it; a person sees it modal)."""
        from .launch_dialog import LaunchScriptDialog

        try:
            config = self.current_config()
        except StudioError as e:
            self.show_error(f"not exported: {e}")
            return None
        base = self.config_path.parent if self.config_path else studio_home()
        stem = self.config_path.stem if self.config_path else "run"
        folder = base / f"{stem}-launch"
        i = 2
        while folder.exists():
            folder = base / f"{stem}-launch-{i}"
            i += 1
        dialog = LaunchScriptDialog(config, folder, self)
        dialog.finished.connect(lambda *_: self._launch_script_written(dialog))
        dialog.open()
        return dialog

    def _launch_script_written(self, dialog) -> None:
        if dialog.written is not None:
            script = dialog.written / "launch.sh"
            self.log(f"launch script: {script} (run it with: bash {script})")
            self.statusBar().showMessage(f"Wrote {script}", 8000)

    def show_error(self, text: str) -> None:
        """One readable line in the window (never a traceback, never a modal box)."""
        self.banner.setText(text)
        self.banner.show()
        self.log(f"error: {text}")

    def hide_error(self) -> None:
        self.banner.hide()

    def new_run(self) -> None:
        if self.controller.is_running:
            return
        self.set_config(default_config(), None)
        self.history = RunHistory()
        self.run_dir = None
        self.charts.clear()
        self.hide_error()
        self._status = {}
        self._update_status_bar()
        self._update_title()

    def set_theme(self, mode: str) -> None:
        apply_theme(QApplication.instance(), mode)
        self.settings.setValue("theme", mode)
        if mode in self.theme_actions:
            self.theme_actions[mode].setChecked(True)

    def about(self):
        self.help_dialog = about_box(self)
        return self.help_dialog

    def _on_preview_ready(self, preview: dict) -> None:
        self.preview_view.setHtml(preview_html(preview))
        self.validate_timer.start()
        if self._raise_preview:   # asked for: shown in front of the Runs tab (the automatic check is not)
            self._raise_preview = False
            self.preview_dock.show()
            self.preview_dock.raise_()

    # -- dialogs (methods, so tests replace them) --------------------------------------------

    def _ask_open_file(self, caption: str, file_filter: str) -> str:
        path, _ = QFileDialog.getOpenFileName(self, caption, "", file_filter)
        return path

    def _ask_save_file(self, caption: str, file_filter: str) -> str:
        path, _ = QFileDialog.getSaveFileName(self, caption, str(self.config_path or "run.toml"), file_filter)
        return path

    def _ask_directory(self, caption: str) -> str:
        return QFileDialog.getExistingDirectory(self, caption, str(self.runs_folder() or ""))

    def _ask_text(self, title: str, label: str, text: str = "") -> str | None:
        """One line of text from the person (a new name), or None when cancelled."""
        value, ok = QInputDialog.getText(self, title, label, QLineEdit.EchoMode.Normal, text)
        return value if ok else None

    def _open_url(self, url) -> bool:
        """Hand a file or web address to the desktop (the file manager, the browser)."""
        return QDesktopServices.openUrl(url)

    def confirm(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    # -- drag and drop -----------------------------------------------------------------------

    def dragEnterEvent(self, event):
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event):
        for url in event.mimeData().urls():
            path = Path(url.toLocalFile())
            if path.is_dir() and (path / "events.jsonl").is_file():
                self.open_run_folder(path)
            elif path.suffix == ".toml":
                self.open_config(path)
            elif path.suffix.lower() in DATA_SUFFIXES:
                self.data_panel.path.set_text(str(path))
            elif path.suffix == ".gguf" or (path.is_dir() and (path / "config.json").is_file()):
                self.model_panel.source_combo.setEditText(str(path))
            else:
                continue
            event.acceptProposedAction()
            return

    # -- layout and closing ------------------------------------------------------------------

    def showEvent(self, event) -> None:   # noqa: N802 (Qt's name)
        super().showEvent(event)
        if not getattr(self, "_fitted", False):
            self._fitted = True
            self.fit_to_screen()

    def fit_to_screen(self) -> None:
        """Keep the whole window, title bar and frame included, on the screen's available area
        (resize() sets the inside: a first launch at the screen's size put the status bar off it)."""
        screen = self.screen() or QApplication.primaryScreen()
        if screen is None:
            return
        room = screen.availableGeometry()
        frame, inner = self.frameGeometry(), self.geometry()
        extra_w, extra_h = frame.width() - inner.width(), frame.height() - inner.height()
        width = min(self.width(), room.width() - extra_w)
        height = min(self.height(), room.height() - extra_h)
        if (width, height) != (self.width(), self.height()):
            self.resize(width, height)
        frame = self.frameGeometry()
        x = min(max(frame.x(), room.x()), room.right() - frame.width() + 1)
        y = min(max(frame.y(), room.y()), room.bottom() - frame.height() + 1)
        if (x, y) != (frame.x(), frame.y()):
            self.move(x, y)


    def _restore_layout(self) -> None:
        geometry = self.settings.value("window/geometry")
        state = self.settings.value("window/state")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        if isinstance(state, QByteArray):
            self.restoreState(state)
        splitter = self.settings.value("window/splitter")
        if isinstance(splitter, QByteArray):
            self.splitter.restoreState(splitter)

    def _save_layout(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("window/splitter", self.splitter.saveState())
        self.settings.sync()

    def closeEvent(self, event):
        if self.controller.is_running:
            if not self._close_when_finished:
                if not self.confirm("A run is in progress",
                                    "Stop the run and close? The adapter trained so far and a checkpoint "
                                    "are saved, and the run can be resumed later."):
                    event.ignore()
                    return
                self._close_when_finished = True
                self.controller.stop()
                self.statusBar().showMessage("Stopping the run; the window closes when it has saved…")
            event.ignore()      # closes for real from _on_controller_finished
            return
        self._save_layout()
        self.plan_timer.stop()
        if self._plan_job is not None:
            self._plan_job.cancel()
            self._plan_job.wait(30000)
        self.model_panel.shutdown()
        self.data_panel.shutdown()
        self.gallery.shutdown()
        for thread in running_threads():   # a preview job between phases; they end at the next one
            thread.wait(60000)
        super().closeEvent(event)


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _status_from_history(history: RunHistory) -> dict:
    st = history.status
    return {"device": f"{st['device']} · {held_text(st)}" if st.get("device") else "auto",
            "step": st.get("step", 0), "total": st.get("total_steps") or 0,
            "speed": st.get("tokens_per_s"), "memory": st.get("memory_mb")}
