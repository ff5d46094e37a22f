"""Adapted layers' module names as the charts show them: short names, tick labels, layer periods.

Pure Python, no Qt: PEFT's wrapper prefix dropped, "L3 q_proj" for a transformer layer's module,
and how many modules one transformer layer has (where a chart draws its layer separators).
"""

from __future__ import annotations

import re

from studio.core.names import PEFT_PREFIX as _PEFT_PREFIX

_LAYER_RE = re.compile(r"layers?\.(\d+)\.")


def short_name(name: str) -> str:
    """A module name for display: without PEFT's "base_model.model." wrapper prefix."""
    return name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name


def module_type(name: str) -> str:
    """The kind of module: the last component of its name (q_proj, down_proj, ...)."""
    return name.rsplit(".", 1)[-1]


def compact_name(name: str) -> str:
    """An axis-tick label: "L3 q_proj" for ...layers.3.self_attn.q_proj, else the short name."""
    found = _LAYER_RE.search(name)
    if found:
        return f"L{found.group(1)} {module_type(name)}"
    return short_name(name)


def layer_period(names: list[str]) -> int:
    """How many modules one transformer layer has in `names` (model order): the length of the
    first run of names with the same layer number; 1 when the names have none."""
    numbers = [m.group(1) if (m := _LAYER_RE.search(n)) else None for n in names]
    if not numbers or numbers[0] is None:
        return 1
    count = 0
    while count < len(numbers) and numbers[count] == numbers[0]:
        count += 1
    return count
