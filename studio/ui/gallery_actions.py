"""The gallery's actions in the window (GalleryController): the Gallery menu and the cards'
context menu — import, export (adapter or merged), combine, resize, playground, rename, delete,
open folder — their dialogs, and the one background job the gallery runs at a time.

    controller = GalleryController(window)  # owns the GalleryView (gallery_view.py), actions, dialogs
    controller.build_menu(menu_bar.addMenu("&Gallery"))

It asks the window's prompts for what a person decides (`window.prompts.confirm`, `ask_directory`,
`ask_text`: prompts.py), and itself for what only exports ask (`ask_export_folder`, `ask_replace`),
so tests replace those instead of driving modal dialogs. Everything that touches tensors (export,
combine, resize, the playground) or copies an adapter (import) runs in a BackgroundJob with a
progress bar and a Cancel button; studio.core.export imports torch inside its functions, on the
job's thread.

An export writes the folder the person picks, and only that folder (export_plan): a new name is
made, an empty folder is used, a folder holding an earlier export (a model or an adapter) is
replaced only after a Replace/Cancel question, and any other folder with files in it is refused.
When it is done, a message names the folder and offers to open it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, Qt, QUrl, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QDialog, QMenu, QMessageBox

from studio.core.errors import StudioError
from studio.core.gallery import Entry
from studio.core.modelcache import human_size

from .combine_dialog import CombineDialog
from .export_dialog import ExportFolderDialog
from .gallery_cards import Card
from .gallery_text import failure_line
from .gallery_view import GalleryView
from .playground import PlaygroundDialog
from .resize_dialog import ResizeDialog
from .tasks import TaskSlot


CREATE, USE, ASK, REFUSE = "create", "use", "ask", "refuse"


def export_plan(path: str | Path) -> str:
    """What an export does with the folder picked for it, always that folder itself:
    "create" (it does not exist: the export makes it), "use" (an empty folder), "ask" (it holds
    an earlier export, a model or an adapter: replaced only if the person says so) or "refuse"
    (a file, or a folder with other things in it, which the export never replaces)."""
    path = Path(path).expanduser()
    if not path.exists():
        return CREATE
    if not path.is_dir():
        return REFUSE
    if not any(path.iterdir()):
        return USE
    if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        return ASK
    return REFUSE


class GalleryController(QObject):
    """The gallery's actions (menu, context menu), its dialogs and its one background job.

    It asks the window's prompts for what a person decides (`window.prompts.confirm`, `ask_directory`,
    `ask_text`) and itself for an export's folder (`ask_export_folder`, `ask_replace`),
    so tests replace those instead of driving modal dialogs, and reports through
    `window.show_error` (one line in the banner), `window.log`, the status bar and, for a
    finished export, a message box that is not modal (`show_export_done`)."""

    job_finished = Signal(str, object)       # outcome ("ok", "failed", "cancelled"), value or message

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.view = GalleryView()
        self.view.failed.connect(window.show_error)
        self.view.selection_changed.connect(lambda *_: self.update_actions())
        self.view.cards_changed.connect(self.update_actions)   # Playground: any card, none selected
        self.view.context_menu_requested.connect(self._on_view_context_menu_requested)
        self.view.activated.connect(lambda name: self.open_playground())
        self.view.cancel_requested.connect(self.cancel_job)
        self.view.notes_saved.connect(lambda name: window.statusBar().showMessage(f"Notes of {name} saved", 4000))
        self.task = TaskSlot(self, "galleryJob")   # one gallery job at a time; torch work goes to the engine
        self.job_what = ""
        self.combine_dialog = None
        self.resize_dialog = None
        self.export_done_box: QMessageBox | None = None
        self.export_folder = ""          # where the last export went: the folder picker starts there
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
        busy = self.task.busy
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
        if self.task.busy:
            self.window.show_error(f"{self.job_what} is still running: wait for it or cancel it first")
            return False
        self.window.hide_error()
        self.job_what = what
        self.task.start(fn, done=lambda value: self._on_job_done("ok", value, on_success),
                        failed=lambda text: self._on_job_done("failed", text, None),
                        cancelled=lambda: self._on_job_done("cancelled", None, None),
                        progress=lambda message, fraction: self.view.show_job(f"{what}: {message}", fraction))
        self.view.show_job(f"{what}…")
        self.window.log(f"{what}…")
        self.update_actions()
        return True

    @property
    def job(self):
        """The gallery job under way (None when there is none)."""
        return self.task.job

    def cancel_job(self) -> None:
        if self.task.busy:
            self.task.cancel()
            self.view.cancel_button.setEnabled(False)
            self.view.job_label.setText(f"{self.job_what}: cancelling…")

    def _on_job_done(self, outcome: str, value, on_success) -> None:
        what, self.job_what = self.job_what, ""
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
        self.task.shutdown(timeout_ms)

    # -- the actions -------------------------------------------------------------------------

    def _selected(self) -> Entry | None:
        entry = self.view.selected_entry()
        if entry is None:
            self.window.show_error("select an adapter in the gallery first")
        return entry

    def import_adapter(self) -> None:
        folder = self.window.prompts.ask_directory("Import a PEFT adapter folder (adapter_config.json + safetensors)")
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
        suggested = entry.name + ("-merged" if kind == "merged" else "") + (f"-{extra['dtype']}" if extra else "")
        chosen = self.ask_export_folder(f"Export {what} of {entry.name}: pick a folder or type a new one's name",
                                        suggested)
        if not chosen:
            return
        target = Path(chosen).expanduser()
        plan = export_plan(target)
        if plan == REFUSE:
            self.window.show_error(
                f"{target}: is a file; pick a folder" if not target.is_dir() else
                f"{target}: not empty, and not a model or adapter folder, so it is not replaced; pick an empty "
                "folder or type a new folder's name")
            return
        if plan == ASK and not self.ask_replace(target, what, entry.name):
            return
        overwrite = plan == ASK
        from studio.core.engineclient import engine

        call = "export_merged" if kind == "merged" else "export_adapter"
        args = {"entry": entry.name, "gallery": str(self.view.gallery.root), "out_dir": str(target),
                "overwrite": overwrite, **extra}

        def work(progress, should_stop):   # in the engine process (torch never loads in the window's)
            return engine().call(call, args, progress=progress, should_stop=should_stop)

        def done(path):
            message = f"exported {what} of {entry.name} to {path}"
            self.window.log(message)
            self.window.statusBar().showMessage(message, 10000)
            self.export_folder = str(path)
            self.show_export_done(Path(path), what, entry.name)

        self.start_job(f"exporting {what} of {entry.name}", work, done)

    def ask_export_folder(self, caption: str, suggested: str) -> str:
        """The folder to export into, an existing one or a new name ("" when cancelled); the picker
        starts beside the last export, with `suggested` as the new folder's name."""
        start = Path(self.export_folder).parent if self.export_folder else Path.home()
        dialog = ExportFolderDialog(self.window, caption, start, suggested)
        try:
            return dialog.chosen if dialog.exec() == QDialog.DialogCode.Accepted else ""
        finally:
            dialog.deleteLater()

    def ask_replace(self, folder: Path, what: str, name: str) -> bool:
        """Whether to replace a folder that holds an earlier export (Replace / Cancel)."""
        box = QMessageBox(QMessageBox.Icon.Question, "Replace the folder?",
                          f"Folder {folder} is not empty: it holds a model or an adapter.\n\n"
                          f"Replace it with {what} of {name}? Everything in the folder now is removed.",
                          QMessageBox.StandardButton.Cancel, self.window)
        box.setObjectName("exportReplaceBox")
        replace = box.addButton("Replace", QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        try:
            box.exec()
            return box.clickedButton() is replace
        finally:
            box.deleteLater()

    def show_export_done(self, folder: Path, what: str, name: str) -> QMessageBox:
        """Say where the export went, with Open folder and Close. Not modal to the program (open,
        not exec): the person may go on working, and nothing waits on it."""
        if self.export_done_box is not None:
            try:
                self.export_done_box.close()
            except RuntimeError:        # already deleted by Qt
                pass
        box = QMessageBox(QMessageBox.Icon.Information, "Export finished",
                          f"Exported {what} of {name} to the folder\n{folder}", QMessageBox.StandardButton.Close,
                          self.window)
        box.setObjectName("exportDoneBox")
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        open_button = box.addButton("Open folder", QMessageBox.ButtonRole.ActionRole)
        open_button.setObjectName("exportOpenFolderButton")
        open_button.clicked.connect(lambda: self.window.prompts.open_url(QUrl.fromLocalFile(str(folder))))
        box.setDefaultButton(open_button)
        box.destroyed.connect(lambda *_: self._forget_done_box(box))
        self.export_done_box = box
        box.open()
        return box

    def _forget_done_box(self, box) -> None:
        if self.export_done_box is box:
            self.export_done_box = None

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
        from studio.core.engineclient import engine

        entries, weights = dialog.chosen()
        method, gallery = dialog.method(), self.view.gallery
        args = {"entries": [e.name for e in entries], "weights": list(weights), "method": method,
                "name": dialog.name(), "density": dialog.density(), "gallery": str(gallery.root)}

        def work(progress, should_stop):
            return gallery.get(engine().call("combine", args, progress=progress, should_stop=should_stop))

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
        from studio.core.engineclient import engine

        entry, choice, gallery = dialog.entry, dialog.choice(), self.view.gallery
        args = {"entry": entry.name, **choice, "name": dialog.name(), "gallery": str(gallery.root)}

        def work(progress, should_stop):
            return gallery.get(engine().call("resize", args, progress=progress, should_stop=should_stop))

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
        new = self.window.prompts.ask_text("Rename adapter", f"New name for {entry.name}:", entry.name)
        if new is None or not str(new).strip() or str(new).strip() == entry.name:
            return
        if self.playground is not None:
            self.playground.forget(entry.name)
        try:
            renamed = self.view.gallery.rename(entry.name, str(new).strip())
        except (StudioError, OSError) as e:
            self.window.show_error(failure_line(entry.name, "cannot rename", e))
            return
        self.window.hide_error()
        self.view.refresh(select=renamed.name)
        self.window.log(f"renamed {entry.name} to {renamed.name}")

    def delete(self) -> None:
        entry = self._selected()
        if entry is None:
            return
        if not self.window.prompts.confirm("Delete adapter",
                                   f"Delete {entry.name} ({human_size(Card.of(entry).size_bytes)}) from the "
                                   "gallery? Its folder is removed; this cannot be undone."):
            return
        if self.playground is not None:
            self.playground.forget(entry.name)
        try:
            self.view.gallery.delete(entry.name)
        except (StudioError, OSError) as e:
            self.window.show_error(failure_line(entry.name, "cannot delete", e))
            return
        self.window.hide_error()
        self.view.refresh(select="")
        self.window.log(f"deleted {entry.name} from the gallery")
        self.window.statusBar().showMessage(f"Deleted {entry.name}", 6000)

    def open_folder(self) -> None:
        entry = self._selected()
        if entry is not None:
            self.window.prompts.open_url(QUrl.fromLocalFile(str(entry.path)))

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
