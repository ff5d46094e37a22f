"""Run configs as files: open, save, save as, a preset by model size applied to the set-up, and
the run exported as a launch script (launch_dialog.py).

    files = ConfigFiles(window)      # window.config_files
    files.open_config(path)          # a bad file is explained in the window's banner
    files.save_config()
"""

from __future__ import annotations

from pathlib import Path

from studio.core.config import RunConfig
from studio.core.errors import StudioError
from studio.core.paths import studio_home


class ConfigFiles:
    """Reading and writing the window's run config; `window.config_path` is the file shown."""

    def __init__(self, window):
        self.window = window

    def open_config(self, path: str | Path) -> bool:
        w = self.window
        path = Path(path)
        try:
            config = RunConfig.from_toml(path)
        except StudioError as e:
            w.show_error(str(e))
            return False
        w.hide_error()
        w.set_config(config, path)
        w.recent_files.add(path)
        w.statusBar().showMessage(f"Opened {path}", 5000)
        return True

    def open_config_dialog(self) -> None:
        path = self.window.prompts.ask_open_file("Open run config", "Run configs (*.toml)")
        if path:
            self.open_config(path)

    def save_config(self) -> bool:
        if self.window.config_path is None:
            return self.save_config_as()
        return self.write_config(self.window.config_path)

    def save_config_as(self) -> bool:
        path = self.window.prompts.ask_save_file("Save run config", "Run configs (*.toml)")
        if not path:
            return False
        path = Path(path) if str(path).endswith(".toml") else Path(str(path) + ".toml")
        return self.write_config(path)

    def write_config(self, path: Path) -> bool:
        from studio.core.paths import write_text_atomic

        w = self.window
        try:
            config = RunConfig.from_dict(w.raw_config(), str(path))
        except StudioError as e:
            w.show_error(f"not saved: {e}")
            return False
        try:
            write_text_atomic(path, config.to_toml())
        except OSError as e:
            w.show_error(f"{path}: cannot write ({e.strerror})")
            return False
        w.config_path = path
        w.model_panel.config_source = w.data_panel.config_source = str(path)
        w.recent_files.add(path)
        w.session.update_title()
        w.statusBar().showMessage(f"Saved {path}", 5000)
        return True

    def apply_preset(self, name: str) -> bool:
        """Set storage, rank, batch, length, learning rate and checkpointing from a preset
        (studio.core.presets); the rest of the set-up stays. False, with the reason shown, when
        the set-up is not valid yet."""
        from studio.core.presets import get_preset

        w = self.window
        try:
            current = w.current_config()
            overrides = get_preset(name).overrides(current.variant_name)
            config = current.with_overrides(overrides)
        except StudioError as e:
            w.show_error(f"cannot apply the preset: {e}")
            return False
        raw = config.to_dict()
        w.model_panel.options.set_values(raw["model"])   # whole sections: set_values resets what it is not given
        w.data_panel.options.set_values(raw["data"])
        w.variant_panel.set_values(raw["variant"])
        w.training_panel.train.set_values(raw["train"])
        w.log(f"preset {name}: " + ", ".join(o.replace("=", " = ", 1) for o in overrides))
        w.validate()
        return True

    def export_launch_script(self):
        """The run in the panels as launch.sh + accelerate.yaml + run.toml (launch_dialog.py).
        Returns the dialog (tests drive it; a person sees it modal)."""
        from .launch_dialog import LaunchScriptDialog

        w = self.window
        try:
            config = w.current_config()
        except StudioError as e:
            w.show_error(f"not exported: {e}")
            return None
        base = w.config_path.parent if w.config_path else studio_home()
        stem = w.config_path.stem if w.config_path else "run"
        folder = base / f"{stem}-launch"
        i = 2
        while folder.exists():
            folder = base / f"{stem}-launch-{i}"
            i += 1
        dialog = LaunchScriptDialog(config, folder, w)
        dialog.finished.connect(lambda *_: self._launch_script_written(dialog))
        dialog.open()
        return dialog

    def _launch_script_written(self, dialog) -> None:
        if dialog.written is not None:
            script = dialog.written / "launch.sh"
            self.window.log(f"launch script: {script} (run it with: bash {script})")
            self.window.statusBar().showMessage(f"Wrote {script}", 8000)
