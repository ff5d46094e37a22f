"""The gallery's actions in the window (GalleryController): the Gallery menu and the cards'
context menu — import, export (adapter or merged), combine, resize, playground, rename, delete,
open folder — their dialogs, and the one background job the gallery runs at a time.

    controller = GalleryController(window)  # owns the GalleryView (gallery_view.py), actions, dialogs
    controller.build_menu(menu_bar.addMenu("&Gallery"))

It asks the window for what a person decides (`window.confirm`, `window._ask_directory`,
`window._ask_text`), so tests replace those instead of driving modal dialogs. Everything that
touches tensors (export, combine, resize, the playground) or copies an adapter (import) runs in a
BackgroundJob with a progress bar and a Cancel button; studio.core.export imports torch inside
its functions, on the job's thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, Qt, QUrl, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu

from studio.core.errors import StudioError
from studio.core.gallery import Entry

from .gallery_dialogs import CombineDialog, ResizeDialog
from .gallery_view import Card, GalleryView, human_size
from .playground import PlaygroundDialog
from .worker import BackgroundJob


def export_target(chosen: str | Path, name: str, suffix: str = "") -> Path:
    """Where an export goes: the chosen folder itself when it is empty (made for it), else a new
    folder named after the adapter inside it."""
    chosen = Path(chosen)
    if chosen.is_dir() and not any(chosen.iterdir()):
        return chosen
    return chosen / f"{name}{suffix}"


class GalleryController(QObject):
    """The gallery's actions (menu, context menu), its dialogs and its one background job.

    It asks the window for what a person decides (`window.confirm`, `window._ask_directory`,
    `window._ask_text`), so tests replace those instead of driving modal dialogs, and reports
    through `window.show_error` (one line in the banner), `window.log` and the status bar."""

    job_finished = Signal(str, object)       # outcome ("ok", "failed", "cancelled"), value or message

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.view = GalleryView()
        self.view.failed.connect(window.show_error)
        self.view.selection_changed.connect(lambda *_: self.update_actions())
        self.view.context_menu_requested.connect(self._on_view_context_menu_requested)
        self.view.activated.connect(lambda name: self.open_playground())
        self.view.cancel_requested.connect(self.cancel_job)
        self.view.notes_saved.connect(lambda name: window.statusBar().showMessage(f"Notes of {name} saved", 4000))
        self.job: BackgroundJob | None = None
        self.job_what = ""
        self.combine_dialog = None
        self.resize_dialog = None
        self.playground = None
        self._build_actions()
        self.update_actions()

    # -- actions and menus -------------------------------------------------------------------

    def _action(self, text: str, name: str, slot: Callable, tip: str, shortcut=None,
                on_cards: bool = True) -> QAction:
        action = QAction(text, self.window)
        action.setObjectName(name)
        action.setStatusTip(tip)
        action.setToolTip(tip)
        if shortcut:
            action.setShortcut(shortcut)
            if on_cards:     # Del and F2 act on the cards only while they have the focus
                action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
                self.view.list.addAction(action)
        action.triggered.connect(lambda *_: slot())
        return action

    def _build_actions(self) -> None:
        a = self._action
        self.import_action = a("&Import adapter…", "importAdapterAction", self.import_adapter,
                               "Add a PEFT adapter folder (safetensors) made elsewhere")
        self.export_adapter_action = a("Export &adapter…", "exportAdapterAction", lambda: self.export("adapter"),
                                       "Write the adapter as a PEFT folder that stock PEFT loads")
        self.export_merged_action = a("Export &merged model…", "exportMergedAction", lambda: self.export("merged"),
                                      "Merge the adapter into its base model and write a full model folder")
        self.export_merged_as_action = a("Export merged model &as…", "exportMergedAsAction",
                                         lambda: self.export("merged-as"),
                                         "Merge the adapter into its base model and write it in bf16, fp16 or fp32")
        self.combine_action = a("&Combine…", "combineAction", self.combine,
                                "Combine this adapter with others on the same base model into a new one")
        self.resize_action = a("Re&size rank…", "resizeAction", self.resize,
                               "Truncate the adapter to a lower rank, keeping most of its update")
        self.playground_action = a("&Playground…", "playgroundAction", self.open_playground,
                                   "Try the adapter: base model and adapted model side by side", "Ctrl+G",
                                   on_cards=False)
        self.rename_action = a("&Rename…", "renameAction", self.rename, "Rename the adapter", "F2")
        self.delete_action = a("&Delete…", "deleteAction", self.delete, "Delete the adapter from the gallery",
                               "Del")
        self.refresh_action = a("Re&fresh", "refreshAction", lambda: self.view.refresh(),
                                "Read the gallery folder again")
        self.open_folder_action = a("Open &folder", "openFolderAction", self.open_folder,
                                    "Show the adapter's folder in the file manager")
        self.actions = [self.import_action, self.export_adapter_action, self.export_merged_action,
                        self.export_merged_as_action, self.combine_action, self.resize_action, self.playground_action,
                        self.rename_action,
                        self.delete_action, self.refresh_action, self.open_folder_action]

    def build_menu(self, menu: QMenu) -> QMenu:
        """Fill the window's Gallery menu."""
        menu.setObjectName("galleryMenu")
        return _fill(menu, ((self.import_action, self.refresh_action),
                            (self.playground_action, self.combine_action, self.resize_action),
                            (self.export_adapter_action, self.export_merged_action, self.export_merged_as_action),
                            (self.rename_action, self.open_folder_action, self.delete_action)))

    def context_menu(self) -> QMenu:
        menu = QMenu(self.view)
        menu.setObjectName("galleryContextMenu")
        return _fill(menu, ((self.playground_action,), (self.export_adapter_action, self.export_merged_action),
                            (self.combine_action, self.resize_action),
                            (self.rename_action, self.open_folder_action, self.delete_action),
                            (self.import_action, self.refresh_action)))

    def update_actions(self) -> None:
        selected = self.view.selected_entry() is not None
        busy = self.job is not None
        for action in (self.export_adapter_action, self.export_merged_action, self.export_merged_as_action,
                       self.combine_action,
                       self.resize_action, self.rename_action, self.delete_action):
            action.setEnabled(selected and not busy)
        self.open_folder_action.setEnabled(selected)
        self.playground_action.setEnabled(bool(self.view.cards))
        self.import_action.setEnabled(not busy)

    def _on_view_context_menu_requested(self, global_pos) -> None:
        self.context_menu().popup(global_pos)

    # -- the one gallery job -----------------------------------------------------------------

    def start_job(self, what: str, fn: Callable, on_success: Callable[[object], None]) -> bool:
        """Run fn(progress, should_stop) in a BackgroundJob, with the progress strip and Cancel."""
        if self.job is not None:
            self.window.show_error(f"{self.job_what} is still running: wait for it or cancel it first")
            return False
        self.window.hide_error()
        job = BackgroundJob(fn, self, name="galleryJob")
        job.progressed.connect(lambda message, fraction: self.view.show_job(f"{what}: {message}", fraction))
        job.succeeded.connect(lambda value, j=job: self._on_job_done(j, "ok", value, on_success))
        job.failed.connect(lambda text, j=job: self._on_job_done(j, "failed", text, None))
        job.cancelled.connect(lambda j=job: self._on_job_done(j, "cancelled", None, None))
        self.job, self.job_what = job, what
        self.view.show_job(f"{what}…")
        self.window.log(f"{what}…")
        self.update_actions()
        job.start()
        return True

    def cancel_job(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.view.cancel_button.setEnabled(False)
            self.view.job_label.setText(f"{self.job_what}: cancelling…")

    def _on_job_done(self, job, outcome: str, value, on_success) -> None:
        if job is not self.job:
            return
        what = self.job_what
        self.job, self.job_what = None, ""
        self.view.hide_job()
        self.update_actions()
        if outcome == "ok":
            try:
                on_success(value)
            except StudioError as e:
                self.window.show_error(str(e))
        elif outcome == "failed":
            self.window.show_error(f"{what} failed: {value}")
        else:
            self.window.log(f"{what}: cancelled")
            self.window.statusBar().showMessage(f"{what}: cancelled", 6000)
        self.job_finished.emit(outcome, value)

    def shutdown(self, timeout_ms: int = 60000) -> None:
        """The window is closing: cancel what runs, release the playground's model."""
        self.view.details.save_notes()
        if self.playground is not None:
            self.playground.shutdown()
        if self.resize_dialog is not None:
            self.resize_dialog.shutdown()
        if self.job is not None:
            self.job.cancel()
            self.job.wait(timeout_ms)

    # -- the actions -------------------------------------------------------------------------

    def _selected(self) -> Entry | None:
        entry = self.view.selected_entry()
        if entry is None:
            self.window.show_error("select an adapter in the gallery first")
        return entry

    def import_adapter(self) -> None:
        folder = self.window._ask_directory("Import a PEFT adapter folder (adapter_config.json + safetensors)")
        if not folder:
            return
        gallery = self.view.gallery
        self.start_job(f"importing {Path(folder).name}",
                       lambda progress, should_stop: gallery.import_folder(folder),
                       lambda entry: self._on_added(entry, f"imported {folder} as {entry.name}"))

    def _on_added(self, entry: Entry, message: str) -> None:
        self.view.refresh(select=entry.name)
        self.window.log(message)
        self.window.statusBar().showMessage(message, 8000)

    def ask_dtype(self) -> str | None:
        """The merged model's dtype: fp32, bf16 or fp16 (None: cancelled)."""
        from PySide6.QtWidgets import QInputDialog

        choices = ["bf16", "fp16", "fp32"]
        picked, ok = QInputDialog.getItem(self.window, "Export merged model", "Weights of the merged model:",
                                          choices, 0, False)
        return picked if ok else None

    def export(self, kind: str) -> None:
        """kind "adapter" (a PEFT folder), "merged" (the base model with the adapter merged in, in
        the base's own dtype) or "merged-as" (the same, in a dtype asked for)."""
        entry = self._selected()
        if entry is None:
            return
        what = "the merged model" if kind == "merged" else "the adapter"
        extra = {}
        if kind == "merged-as":   # the merged model in a dtype the person picks
            dtype = self.ask_dtype()
            if not dtype:
                return
            kind, extra["dtype"] = "merged", dtype
            what = f"the merged model ({dtype})"
        chosen = self.window._ask_directory(f"Export {what} of {entry.name}: choose a folder")
        if not chosen:
            return
        target = export_target(chosen, entry.name, "-merged" if kind == "merged" else "")
        overwrite = target.is_dir() and any(target.iterdir())
        if overwrite and not self.window.confirm("Replace the folder?",
                                                 f"{target} already exists. Replace what is in it with the export?"):
            return
        from studio.core import export as engine

        fn = engine.export_merged if kind == "merged" else engine.export_adapter
        gallery = self.view.gallery

        def work(progress, should_stop):
            return fn(entry, target, overwrite=overwrite, gallery=gallery, progress=progress, should_stop=should_stop,
                      **extra)

        def done(path):
            message = f"exported {what} of {entry.name} to {path}"
            self.window.log(message)
            self.window.statusBar().showMessage(message, 10000)

        self.start_job(f"exporting {what} of {entry.name}", work, done)

    def combine(self) -> None:
        entry = self._selected()
        if entry is None:
            return

        try:
            compatible = self.view.gallery.compatible(entry.name)
        except StudioError as e:
            self.window.show_error(str(e))
            return
        dialog = CombineDialog(entry, compatible, self.view.gallery, self.window)
        dialog.accepted.connect(lambda d=dialog: self._on_combine_accepted(d))
        dialog.finished.connect(lambda *_ , d=dialog: self._forget_dialog("combine_dialog", d))
        self.combine_dialog = dialog
        dialog.open()

    def _on_combine_accepted(self, dialog) -> None:
        from studio.core import export as engine

        entries, weights = dialog.chosen()
        method, density, name, gallery = dialog.method(), dialog.density(), dialog.name(), self.view.gallery

        def work(progress, should_stop):
            return engine.combine(entries, weights, method=method, name=name, density=density, gallery=gallery,
                                  progress=progress, should_stop=should_stop)

        self.start_job(f"combining {len(entries)} adapters ({method})", work,
                       lambda entry: self._on_added(entry, f"combined {', '.join(e.name for e in entries)} "
                                                           f"({method}) into {entry.name}"))

    def resize(self) -> None:
        entry = self._selected()
        if entry is None:
            return

        dialog = ResizeDialog(entry, self.view.gallery, self.window)
        dialog.accepted.connect(lambda d=dialog: self._on_resize_accepted(d))
        dialog.finished.connect(lambda *_, d=dialog: self._forget_dialog("resize_dialog", d))
        self.resize_dialog = dialog
        dialog.open()
        dialog.start()

    def _on_resize_accepted(self, dialog) -> None:
        from studio.core import export as engine

        entry, choice, name, gallery = dialog.entry, dialog.choice(), dialog.name(), self.view.gallery

        def work(progress, should_stop):
            return engine.resize(entry, **choice, name=name, gallery=gallery, progress=progress,
                                 should_stop=should_stop)

        how = f"rank {choice['rank']}" if "rank" in choice else f"{100 * choice['energy']:.1f}% of ‖ΔW‖²"
        self.start_job(f"resizing {entry.name} to {how}", work,
                       lambda new: self._on_added(new, f"resized {entry.name} to {how}: {new.name}"))

    def _forget_dialog(self, attribute: str, dialog) -> None:
        if getattr(self, attribute) is dialog:
            setattr(self, attribute, None)
        if hasattr(dialog, "shutdown"):
            dialog.shutdown()
        dialog.deleteLater()

    def rename(self) -> None:
        entry = self._selected()
        if entry is None:
            return
        new = self.window._ask_text("Rename adapter", f"New name for {entry.name}:", entry.name)
        if new is None or not str(new).strip() or str(new).strip() == entry.name:
            return
        if self.playground is not None:
            self.playground.forget(entry.name)
        try:
            renamed = self.view.gallery.rename(entry.name, str(new).strip())
        except StudioError as e:
            self.window.show_error(str(e))
            return
        except OSError as e:
            self.window.show_error(f"{entry.name}: cannot rename ({e.strerror or e})")
            return
        self.window.hide_error()
        self.view.refresh(select=renamed.name)
        self.window.log(f"renamed {entry.name} to {renamed.name}")

    def delete(self) -> None:
        entry = self._selected()
        if entry is None:
            return
        if not self.window.confirm("Delete adapter",
                                   f"Delete {entry.name} ({human_size(Card.of(entry).size_bytes)}) from the "
                                   "gallery? Its folder is removed; this cannot be undone."):
            return
        if self.playground is not None:
            self.playground.forget(entry.name)
        try:
            self.view.gallery.delete(entry.name)
        except StudioError as e:
            self.window.show_error(str(e))
            return
        except OSError as e:
            self.window.show_error(f"{entry.name}: cannot delete ({e.strerror or e})")
            return
        self.window.hide_error()
        self.view.refresh(select="")
        self.window.log(f"deleted {entry.name} from the gallery")
        self.window.statusBar().showMessage(f"Deleted {entry.name}", 6000)

    def open_folder(self) -> None:
        entry = self._selected()
        if entry is not None:
            self.window._open_url(QUrl.fromLocalFile(str(entry.path)))

    def open_playground(self) -> None:

        if self.playground is None:
            self.playground = PlaygroundDialog(self.window)
            self.playground.failed.connect(self.window.show_error)
        self.playground.set_entries(self.view.entries(), self.view.selected_name() or None)
        self.playground.show()
        self.playground.raise_()
        self.playground.activateWindow()

    def on_run_added(self, name: str) -> None:
        """A finished run put its adapter in the gallery as `name`: show and select it."""
        self.view.refresh(select=name)
        if self.playground is not None and self.playground.isVisible():
            self.playground.set_entries(self.view.entries(), None)


def _fill(menu: QMenu, groups) -> QMenu:
    """Add groups of actions to a menu, a separator between groups."""
    for i, group in enumerate(groups):
        if i:
            menu.addSeparator()
        for action in group:
            menu.addAction(action)
    return menu
