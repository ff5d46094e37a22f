"""The variant registry: every module of this package registers one variant when imported, and
central code looks variants up here by name and asks them, never branching on a name itself.

A ninth variant is one new module in this folder: it is found and imported below (no list to
edit), listed by its `order`, and reaches the window's form, the CLI, runs, the gallery and
export through the registry (tests/core/test_ninth_variant.py proves it from outside)."""

from __future__ import annotations

import importlib
import pkgutil

from .base import REGISTRY, BuildContext, CommonOptions, Variant, register

# base.py holds the common machinery; every other module is a variant
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"):
    importlib.import_module(f"{__name__}.{_module}")
del _module
_order = sorted(REGISTRY.values(), key=lambda v: (v.order, v.name))
REGISTRY.clear()
REGISTRY.update((v.name, v) for v in _order)
del _order


def variant_names() -> list[str]:
    return list(REGISTRY)


def get_variant(name: str) -> Variant:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r} (known: {', '.join(REGISTRY)})") from None


def infer_variant(config: dict) -> str | None:
    """The variant whose saved form a stock PEFT adapter_config.json is (None: no variant's):
    LoRA, DoRA, VeRA or AdaLoRA. Variants that save as plain LoRA read back as LoRA."""
    return next((v.name for v in REGISTRY.values() if v.recognizes(config)), None)


def peft_types() -> list[str]:
    """The peft_type values some variant saves as (what the gallery can import)."""
    return list(dict.fromkeys(v.peft_type for v in REGISTRY.values()))


__all__ = ["BuildContext", "CommonOptions", "Variant", "register", "get_variant", "variant_names", "REGISTRY",
           "infer_variant", "peft_types"]
