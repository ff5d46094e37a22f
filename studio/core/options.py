"""Dataclass fields that describe themselves, and the checks that read those descriptions.

Every option a person can set (run config sections, each variant's options) is a dataclass
field made with `option(...)`. Its metadata carries the help text and bounds, so the window can
build a form from `dataclasses.fields()` and the same bounds are checked for the CLI.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import typing
from typing import Any


def option(default: Any, help: str, *, min: float | None = None, max: float | None = None,
           choices: tuple | None = None, run_fraction: bool = False, legacy: Any = None) -> Any:
    """A dataclass field with `help`, `min`, `max`, `choices` in its metadata. `run_fraction`:
    a number of optimizer steps given as a fraction of the run (below 1) or as steps (1 and
    above; see steps_of_run), which the window shows in steps once it knows the run's length.
    `legacy`: for an option added later, the value that gives the behaviour from before it
    existed (a run folder whose config lacks the option resumes with it; config.legacy_options)."""
    meta = {"help": help}
    if legacy is not None:
        meta["legacy"] = legacy
    if run_fraction:
        meta["run_fraction"] = True
    if min is not None:
        meta["min"] = min
    if max is not None:
        meta["max"] = max
    if choices is not None:
        meta["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=meta)


def field_type(cls: type, name: str) -> type:
    """The plain Python type (int, float, bool, str) of a dataclass field."""
    hints = typing.get_type_hints(cls)
    tp = hints[name]
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0]
    return tp


def _describe(tp: type, meta: dict) -> str:
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    text = words.get(tp, tp.__name__)
    if "choices" in meta:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        text += f" from {lo} to {hi}"
    elif lo is not None:
        text += f" >= {lo}"
    elif hi is not None:
        text += f" <= {hi}"
    return text


def coerce(cls: type, name: str, value: Any) -> Any:
    """Check one value against field `name` of dataclass `cls`; return it in the field's type.

    Raises ValueError with "expected ..., got ..." (the caller adds the field's path).
    """
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    tp = field_type(cls, name)
    meta = dict(f.metadata)
    expected = _describe(tp, meta)
    ok = True
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            try:
                value = float(value)
            except OverflowError:  # an int beyond the float range
                raise ValueError(f"expected a finite {expected.removeprefix('a ')}, got {shown(value)}") from None
            if not math.isfinite(value):  # nan passes every bound check, inf fails later, far from here
                raise ValueError(f"expected a finite {expected.removeprefix('a ')}, got {shown(value)}")
    elif tp is str:
        ok = isinstance(value, str)
    if not ok:
        raise ValueError(f"expected {expected}, got {shown(value)}")
    if "choices" in meta and value not in meta["choices"]:
        raise ValueError(f"expected {expected}, got {shown(value)}")
    if "min" in meta and value < meta["min"]:
        raise ValueError(f"expected {expected}, got {shown(value)}")
    if "max" in meta and value > meta["max"]:
        raise ValueError(f"expected {expected}, got {shown(value)}")
    if tp is int and not -2**63 <= value < 2**63:  # torch, numpy and TOML itself stop at 64 bits
        raise ValueError(f"expected {expected} (a 64-bit integer), got {shown(value)}")
    return value


def steps_of_run(value: float, total_steps: int) -> int:
    """A `run_fraction` option in optimizer steps: below 1 a fraction of the run's total_steps
    (rounded down, so fractions that sum below 1 leave steps between them), else a number of
    steps (transformers' convention for eval_steps and save_steps)."""
    return int(value * total_steps) if value < 1 else int(value)


def check_run_fraction(name: str, value: float) -> None:
    """A run_fraction option is a fraction below 1 or a whole number of steps."""
    if value >= 1 and value != int(value):
        raise ValueError(f"{name}: expected a fraction of the run below 1 or a whole number of steps, got {value:g}")


def shown(value: Any, width: int = 60) -> str:
    """A value as a message shows it: repr, cut short (a TOML value can be a megabyte, or nested
    a thousand lists deep) and on one line (repr escapes newlines)."""
    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlong, r.maxlevel = width, width, width // 2, 3
    return r.repr(value)


def describe_fields(cls: type) -> list[dict]:
    """Plain-data description of a dataclass's options (for forms and `variants --verbose`)."""
    out = []
    for f in dataclasses.fields(cls):
        d = {"name": f.name, "type": field_type(cls, f.name).__name__, "default": f.default}
        d.update(f.metadata)
        out.append(d)
    return out
