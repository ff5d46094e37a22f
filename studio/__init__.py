"""LoRA Studio: parameter-efficient fine-tuning on the desktop (studio.core) and in a window (studio.ui)."""

__version__ = "0.1.0"
