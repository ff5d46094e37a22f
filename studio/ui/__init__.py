"""The window (PySide6 + pyqtgraph). It receives plain data from studio.core and never imports
torch, transformers or peft (enforced by import-linter, see pyproject.toml)."""
