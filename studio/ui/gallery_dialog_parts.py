"""What the gallery's Combine and Resize dialogs share: their OK/Cancel buttons, the label that
says why OK is off, the check of a new entry's name, and an entry's size.

Both dialogs only collect a choice; the controller (gallery_actions.GalleryController) runs the
combine or resize itself in a background task. What the engine can check cheaply
(studio.core.combine's combine_problem, gallery names) is checked live and keeps OK disabled with
the reason shown.
"""

from __future__ import annotations

from PySide6.QtWidgets import QDialogButtonBox, QLabel

from studio.core.errors import StudioError
from studio.core.gallery import Entry, Gallery, check_name

from .panels.labels import error_label


def name_problem(gallery: Gallery, name: str) -> str | None:
    """Why `name` cannot be a new gallery entry's name, or None."""
    try:
        check_name(name)
    except StudioError as e:
        return str(e)
    if (gallery.root / name).exists():
        return f"an adapter named {name!r} already exists"
    return None


def dialog_buttons(ok_name: str, ok_text: str) -> QDialogButtonBox:
    """OK (named `ok_name`, reading `ok_text`) and Cancel (the same name with Cancel for Ok)."""
    box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
    ok = box.button(QDialogButtonBox.StandardButton.Ok)
    ok.setObjectName(ok_name)
    ok.setText(ok_text)
    box.button(QDialogButtonBox.StandardButton.Cancel).setObjectName(ok_name.replace("Ok", "Cancel"))
    return box


def problem_label(name: str) -> QLabel:
    """The label under a dialog's choices that says, in the error colour, why OK is disabled."""
    return error_label(name, hidden=False)


def entry_size(entry: Entry) -> int:
    """The entry's size on disk in bytes, 0 when it cannot be read."""
    try:
        return entry.size_bytes
    except OSError:
        return 0
