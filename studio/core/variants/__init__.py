"""The variant registry. Each module registers one variant at import; central code looks
variants up here by name and never branches on a name itself."""

from __future__ import annotations

from .base import REGISTRY, BuildContext, CommonOptions, Variant, register

# Importing the modules registers them, in the order the window lists them.
from . import lora, lora_plus, vera, lora_fa, lora_drop, adalora, dora, delta_lora  # noqa: E402,F401


def variant_names() -> list[str]:
    return list(REGISTRY)


def get_variant(name: str) -> Variant:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r} (known: {', '.join(REGISTRY)})") from None


__all__ = ["BuildContext", "CommonOptions", "Variant", "register", "get_variant", "variant_names", "REGISTRY"]
