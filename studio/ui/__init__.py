"""The window (PySide6 + pyqtgraph). It receives plain data from studio.core and never imports
torch, transformers or peft (enforced by import-linter, see pyproject.toml)."""

import os as _os

# superqt (elided labels) reaches Qt through qtpy: make it pick the binding the studio uses
_os.environ.setdefault("QT_API", "pyside6")
