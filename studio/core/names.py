"""PEFT's names for the modules it wraps: a PeftModel's module and state-dict names start with
"base_model.model.", which the studio strips wherever it shows or matches a layer."""

from __future__ import annotations

PEFT_PREFIX = "base_model.model."


def layer_name(name: str) -> str:
    """A module or state-dict name without PEFT's wrapper prefix."""
    return name.removeprefix(PEFT_PREFIX)
