"""Errors the engine raises on purpose.

Each carries one readable sentence that names the file, line or field at fault and what was
expected. The CLI prints that sentence (exit 2 for bad input, 1 for a failure while training);
the window shows it. Anything else that escapes is a bug and is reported as such.
"""

from __future__ import annotations


class StudioError(Exception):
    """Base class: `str(err)` is the one line a person reads."""

    exit_code = 1


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
