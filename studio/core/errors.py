"""Errors the engine raises on purpose.

Each carries one readable sentence that names the file, line or field at fault and what was
expected. The CLI prints that sentence (exit 2 for bad input, 1 for a failure while training);
the window shows it. Anything else that escapes is a bug and is reported as such.
"""

from __future__ import annotations

import re

# the config fields a message may start with ("variant.r: ...")
_FIELD = re.compile(r"((?:model|data|variant|train|telemetry)\.\w+): ")


class StudioError(Exception):
    """Base class: `str(err)` is the one line a person reads. `field` is the config field at fault
    ("variant.r"), or None: given by the raiser, or the "section.key: " the sentence starts with,
    which is how the engine's messages name their field. `reason` is the sentence without it."""

    exit_code = 1

    def __init__(self, message: str = "", *args, field: str | None = None):
        super().__init__(message, *args)
        found = _FIELD.match(str(message)) if field is None else None
        self.field = field or (found.group(1) if found else None)
        text = str(message)
        self.reason = text[len(self.field) + 2:] if self.field and text.startswith(self.field + ": ") else text


class InputError(StudioError):
    """Bad input from the person: a config, a dataset, a model source. Exit code 2."""

    exit_code = 2


class ConfigError(InputError):
    pass


class DataError(InputError):
    pass


class ModelError(InputError):
    pass


class TrainingError(StudioError):
    """Something failed while the run was under way. Exit code 1."""

    exit_code = 1


class Cancelled(StudioError):
    """The person stopped a long operation (an export, a combine); nothing was written."""

    exit_code = 130


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def one_line(e: BaseException) -> str:
    """One line for a person: a StudioError's own sentence; anything else "Type: first line"."""
    text = str(e).strip()
    if isinstance(e, StudioError):
        return text.splitlines()[0] if text else type(e).__name__
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def cause_chain(e: BaseException, *, suppressed: bool = True) -> list[BaseException]:
    """`e`, then what it was raised from or during, in order. With suppressed=False, a
    `raise ... from None` ends the chain there (its context was declared not to be the cause)."""
    chain: list[BaseException] = []
    while e is not None and all(e is not c for c in chain):
        chain.append(e)
        e = e.__cause__ or (e.__context__ if suppressed or not e.__suppress_context__ else None)
    return chain
