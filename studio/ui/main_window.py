"""The studio window, as the composition root: it builds the set-up panels on the left, the run
controls and live charts on the right, the Runs, Data preview, Gallery and Log docks, and hands
each concern to a small controller:

    session       run_session.RunSession     the run: train, pause, resume, stop, a past run; header, status bar
    setup_check   setup_check.SetupCheck     validation and the memory plan
    config_files  config_files.ConfigFiles   open, save, presets, launch script
    runs          runs_dock.RunsDock         past runs and their overlays; recent_files: File ▸ Open recent
    gallery       gallery_actions.GalleryController
    prompts       prompts.Prompts            every question to the person (tests replace its methods)

The window holds no training logic: Train builds a RunConfig from the panels and the session hands
it to a RunController (worker.py), which runs a core Session in a QThread. Actions and menus are
built in window_menus.py, the layout's persistence is window_layout.py.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (QApplication, QDockWidget, QHBoxLayout, QLabel, QMainWindow, QPlainTextEdit,
                               QScrollArea, QSplitter, QTextBrowser, QVBoxLayout, QWidget)

from studio.core.config import RunConfig
from studio.core.errors import StudioError
from studio.core.paths import studio_home
from studio.core.resources import default_config_path

from . import wheelguard, window_layout
from .charts_panel import ChartsPanel
from .config_files import ConfigFiles
from .gallery_actions import GalleryController
from .help_dialogs import about_box
from .history import RunHistory
from .panels import DATA_SUFFIXES, DataPanel, ModelPanel, TrainingPanel, VariantPanel, preview_html
from .prompts import Prompts
from .run_session import RunSession
from .runs_dock import RecentFiles, RunsDock
from .setup_check import SetupCheck
from .theme import apply_theme
from .window_menus import build_actions, build_menus_and_toolbar
from .tasks import running_threads

DEFAULT_CONFIG = default_config_path()
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
        self.config_path: Path | None = None
        self.prompts = Prompts(self, start_folder=lambda: str(self.runs_folder() or ""),
                               start_file=lambda: str(self.config_path or "run.toml"))
        self.session = RunSession(self)
        self.controller = self.session.controller
        self.train_button, self.pause_button = self.session.train_button, self.session.pause_button
        self.stop_button, self.run_title = self.session.stop_button, self.session.run_title
        self.status_labels, self.progress_bar = self.session.status_labels, self.session.progress_bar
        self.setup_check = SetupCheck(self)
        self.validation_label, self.memory_label = self.setup_check.label, self.setup_check.memory_label
        self.config_files = ConfigFiles(self)

        self._build_panels()
        self._build_central()
        self._build_docks()
        build_actions(self)
        build_menus_and_toolbar(self)
        self.recent_files = RecentFiles(self.settings, self.recent_menu, self.load)
        self.session.install_status_bar(self.statusBar())

        window_layout.first_size(self)
        self.resizeDocks([self.log_dock], [140], Qt.Orientation.Vertical)
        # the gallery's cards, combos and details want ~400 px (GalleryView.sizeHint)
        self.resizeDocks([self.runs_dock], [self.gallery_view.sizeHint().width()], Qt.Orientation.Horizontal)
        window_layout.restore_layout(self, self.settings, self.splitter)
        self.set_config(default_config(), None)
        self.gallery.view.refresh()

    # -- construction ------------------------------------------------------------------------

    def _build_panels(self) -> None:
        self.model_panel = ModelPanel()
        self.data_panel = DataPanel()
        self.variant_panel = VariantPanel()
        self.training_panel = TrainingPanel()
        for panel in (self.model_panel, self.data_panel, self.variant_panel, self.training_panel):
            panel.changed.connect(self.setup_check.on_setup_changed)
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
        self.runs = RunsDock(self.charts, open_run=self.open_run_folder, resume=self.resume_run,
                             refresh=self.refresh_runs)
        self.runs_view, self.resume_button = self.runs.view, self.runs.resume_button
        self.runs_dock = self._dock("Runs", "runsDock", self.runs, Qt.DockWidgetArea.RightDockWidgetArea)

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

    # -- the set-up: the panels as a run config ----------------------------------------------

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
        self.session.update_title()
        self.refresh_runs()

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
        return self.setup_check.validate()

    def new_run(self) -> None:
        if self.controller.is_running:
            return
        self.set_config(default_config(), None)
        self.hide_error()
        self.session.reset()

    # -- files (config_files.py) and runs (run_session.py, runs_dock.py) -----------------------

    def load(self, path: str | Path) -> bool:
        """Open a run config (.toml) or a run folder; a bad one is explained in the banner."""
        path = Path(path).expanduser()
        if path.is_dir():
            return self.open_run_folder(path)
        return self.open_config(path)

    def open_config(self, path: str | Path) -> bool:
        return self.config_files.open_config(path)

    def open_config_dialog(self) -> None:
        self.config_files.open_config_dialog()

    def save_config(self) -> bool:
        return self.config_files.save_config()

    def save_config_as(self) -> bool:
        return self.config_files.save_config_as()

    def apply_preset(self, name: str) -> bool:
        return self.config_files.apply_preset(name)

    def export_launch_script(self):
        return self.config_files.export_launch_script()

    def open_run_dialog(self) -> None:
        path = self.prompts.ask_directory("Open run folder")
        if path:
            self.open_run_folder(path)

    def open_run_folder(self, path: str | Path) -> bool:
        """Redraw a past run from its events.jsonl and load its config into the panels."""
        return self.session.open_run_folder(path)

    def train(self) -> bool:
        return self.session.train()

    def resume_run(self, run_dir: str | Path | None = None) -> bool:
        """Continue a stopped, failed or interrupted run from its last checkpoint."""
        return self.session.resume_run(run_dir)

    def stop(self) -> None:
        self.session.stop()

    @property
    def history(self) -> RunHistory:
        """The run shown: the one under way or the past run opened."""
        return self.session.history

    @property
    def run_dir(self) -> Path | None:
        return self.session.run_dir

    def runs_folder(self) -> Path | None:
        try:
            return Path(self.current_config().train.output_dir)
        except StudioError:
            return None

    def refresh_runs(self) -> None:
        self.runs.refresh(self.runs_folder())

    def set_overlays(self, run_dirs: list[str | Path]) -> None:
        """Overlay these runs' loss curves on the loss chart, to compare variants."""
        self.runs.set_overlays(run_dirs)

    def recent(self) -> list[str]:
        return self.recent_files.items()

    # -- messages, theme, help ---------------------------------------------------------------

    def show_error(self, text: str) -> None:
        """One readable line in the window (never a traceback, never a modal box)."""
        self.banner.setText(text)
        self.banner.show()
        self.log(f"error: {text}")

    def hide_error(self) -> None:
        self.banner.hide()

    def log(self, text: str) -> None:
        self.log_view.appendPlainText(text)

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
        self.setup_check.validate_timer.start()
        if self._raise_preview:   # asked for: shown in front of the Runs tab (the automatic check is not)
            self._raise_preview = False
            self.preview_dock.show()
            self.preview_dock.raise_()

    # -- drag and drop -----------------------------------------------------------------------

    def dragEnterEvent(self, event):   # noqa: N802 (Qt's name)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event):   # noqa: N802 (Qt's name)
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

    # -- showing and closing -----------------------------------------------------------------

    def showEvent(self, event) -> None:   # noqa: N802 (Qt's name)
        super().showEvent(event)
        if not getattr(self, "_fitted", False):
            self._fitted = True
            self.fit_to_screen()

    def fit_to_screen(self) -> None:
        """Keep the whole window, title bar and frame included, on the screen's available area."""
        window_layout.fit_to_screen(self)

    def closeEvent(self, event):   # noqa: N802 (Qt's name)
        if not self.session.may_close():
            event.ignore()      # a run is stopping: closes for real when it has finished
            return
        window_layout.save_layout(self, self.settings, self.splitter)
        self.setup_check.shutdown()
        self.model_panel.shutdown()
        self.data_panel.shutdown()
        self.gallery.shutdown()
        for thread in running_threads():   # a preview job between phases; they end at the next one
            thread.wait(60000)
        super().closeEvent(event)
