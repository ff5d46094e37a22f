"""The window's actions, menus and toolbar: every QAction with its objectName, shortcut and tip,
the File, Run, Gallery, View and Help menus, and the main toolbar.

    build_actions(window)            # window.train_action, window.stop_action, … (objectNames kept)
    build_menus_and_toolbar(window)  # window.recent_menu, window.preset_menu, window.theme_actions, …

The actions are attributes of the window, connected to its public methods, so that tests, the
shortcuts dialog (help_dialogs.py) and the run session find them in one place.
"""

from __future__ import annotations

from PySide6.QtGui import QAction, QActionGroup, QKeySequence

from .help_dialogs import help_actions
from .theme import THEMES


def make_action(parent, text: str, name: str, slot, shortcut=None, tip: str = "") -> QAction:
    action = QAction(text, parent)
    action.setObjectName(name)
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    if tip:
        action.setStatusTip(tip)
        action.setToolTip(tip)
    action.triggered.connect(lambda *_: slot())
    return action


def build_actions(w) -> None:
    K = QKeySequence.StandardKey
    w.new_action = make_action(w, "&New run", "newRunAction", w.new_run, K.New,
                               "Start again from the default run config")
    w.open_config_action = make_action(w, "&Open run config…", "openConfigAction", w.open_config_dialog,
                                       K.Open, "Load a run config (.toml)")
    w.open_run_action = make_action(w, "Open run &folder…", "openRunAction", w.open_run_dialog,
                                    "Ctrl+Shift+O", "Open a past run's folder and redraw its charts")
    w.save_config_action = make_action(w, "&Save run config", "saveConfigAction", w.save_config, K.Save,
                                       "Save the run config")
    w.save_as_action = make_action(w, "Save run config &as…", "saveConfigAsAction", w.save_config_as, K.SaveAs)
    w.quit_action = make_action(w, "&Quit", "quitAction", w.close, K.Quit)
    w.train_action = make_action(w, "&Train", "trainAction", w.train, "Ctrl+Return",
                                 "Start training with these settings")
    w.pause_action = make_action(w, "&Pause", "pauseAction", w.controller.pause, "Ctrl+P",
                                 "Pause after the step under way")
    w.resume_action = make_action(w, "R&esume", "resumeAction", w.controller.resume, "Ctrl+Shift+P",
                                  "Continue a paused run")
    w.stop_action = make_action(w, "&Stop", "stopAction", w.stop, "Ctrl+.",
                                "Stop after the step under way; the adapter is saved")
    w.resume_run_action = make_action(w, "Resume run from &checkpoint", "resumeRunAction",
                                      lambda: w.resume_run(), None,
                                      "Continue the opened stopped or failed run from its last checkpoint")
    w.launch_script_action = make_action(
        w, "E&xport run as launch script…", "exportLaunchScriptAction", w.export_launch_script, None,
        "Write this run as a script and accelerate config for several GPUs or cluster nodes")
    w.help_actions = help_actions(w)     # documentation, keyboard shortcuts, About
    w.about_action = w.help_actions["about"]
    w.train_button.clicked.connect(w.train_action.trigger)
    w.stop_button.clicked.connect(w.stop_action.trigger)


def build_menus_and_toolbar(w) -> None:
    menu = w.menuBar()
    file = menu.addMenu("&File")
    file.setObjectName("fileMenu")
    for a in (w.new_action, w.open_config_action, w.open_run_action):
        file.addAction(a)
    w.recent_menu = file.addMenu("Open &recent")
    w.recent_menu.setObjectName("recentMenu")
    file.addSeparator()
    file.addAction(w.save_config_action)
    file.addAction(w.save_as_action)
    file.addSeparator()
    file.addAction(w.quit_action)
    run = menu.addMenu("&Run")
    run.setObjectName("runMenu")
    for a in (w.train_action, w.pause_action, w.resume_action, w.stop_action):
        run.addAction(a)
    run.addSeparator()
    w.preset_menu = run.addMenu("&Preset by model size")
    w.preset_menu.setObjectName("presetMenu")
    w.preset_menu.setToolTipsVisible(True)
    from studio.core.presets import PRESETS

    for preset in PRESETS.values():
        action = w.preset_menu.addAction(preset.title)
        action.setObjectName(f"preset-{preset.name}")
        action.setToolTip(", ".join(f"{k} = {v}" for k, v in preset.settings.items()))
        action.triggered.connect(lambda _=False, name=preset.name: w.apply_preset(name))
    w.preset_menu.aboutToShow.connect(lambda: mark_suggested_preset(w.preset_menu, w.model_panel.description))
    run.addAction(w.resume_run_action)
    run.addAction(w.launch_script_action)
    w.gallery_menu = w.gallery.build_menu(menu.addMenu("&Gallery"))
    view = menu.addMenu("&View")
    view.setObjectName("viewMenu")
    for dock in (w.runs_dock, w.preview_dock, w.gallery_dock, w.log_dock):
        view.addAction(dock.toggleViewAction())
    w.gallery_dock.toggleViewAction().setObjectName("showGalleryAction")
    w.gallery_dock.toggleViewAction().setShortcut(QKeySequence("Ctrl+Shift+G"))
    view.addSeparator()
    themes = view.addMenu("&Theme")
    group = QActionGroup(w)
    w.theme_actions = {}
    current = w.settings.value("theme", "system")
    for mode in THEMES:
        a = QAction(mode.capitalize(), w, checkable=True)
        a.setObjectName(f"theme{mode.capitalize()}Action")
        a.setChecked(mode == current)
        a.triggered.connect(lambda checked, m=mode: w.set_theme(m))
        group.addAction(a)
        themes.addAction(a)
        w.theme_actions[mode] = a
    help_menu = menu.addMenu("&Help")
    help_menu.setObjectName("helpMenu")
    for key in ("docs", "shortcuts"):
        help_menu.addAction(w.help_actions[key])
    help_menu.addSeparator()
    help_menu.addAction(w.about_action)
    w.toolbar = w.addToolBar("Main")
    w.toolbar.setObjectName("mainToolbar")
    for a in (w.open_config_action, w.save_config_action, w.open_run_action):
        w.toolbar.addAction(a)
    w.toolbar.addSeparator()
    for a in (w.train_action, w.pause_action, w.resume_action, w.stop_action):
        w.toolbar.addAction(a)
    w.toolbar.addSeparator()
    w.toolbar.addAction(w.gallery.playground_action)


def mark_suggested_preset(preset_menu, described: dict | None) -> None:
    """The preset that suits the chosen model's size (`described`: the model panel's description)
    is marked in the menu."""
    from studio.core.presets import PRESETS, suggest

    best = suggest((described or {}).get("parameters"))
    for action in preset_menu.actions():
        name = action.objectName().removeprefix("preset-")
        title = PRESETS[name].title if name in PRESETS else action.text()
        action.setText(f"{title}   (suits this model)" if name == best else title)
