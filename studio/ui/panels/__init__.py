"""The set-up panels on the left of the window (model, dataset, variant, training options),
one module each, re-exported here.

Each panel edits one part of the run config and reports it as plain values (`values()`), shows
what was detected (model architecture and size, dataset format and token statistics) and marks
invalid values next to the field with the reason. Detection that reads files (a model's
metadata, a tokenizer for the dataset preview) runs in a BackgroundJob, never on the GUI thread.
"""

from .data_panel import DATA_FILTER, DATA_SUFFIXES, DataPanel
from .dataset_preview import preview_html, preview_summary_html
from .labels import NOTE_STYLE
from .model_panel import BUNDLED_MODELS, ModelPanel, describe_html
from .training_panel import TrainingPanel
from .variant_panel import VariantPanel

__all__ = ["ModelPanel", "DataPanel", "VariantPanel", "TrainingPanel", "describe_html",
           "preview_summary_html", "preview_html", "BUNDLED_MODELS", "DATA_FILTER", "DATA_SUFFIXES",
           "NOTE_STYLE"]
