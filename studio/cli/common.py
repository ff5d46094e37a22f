"""What every command of the CLI shares: the one-line error, the exit codes, JSON on stdout, the
progress line of a long operation and the guard that turns an engine error into its exit code.

Nothing here imports a command module (they import this one), nor, when imported, the engine.
"""

from __future__ import annotations

import json
import sys

# exit codes (studio.core.errors gives each engine error its own: StudioError.exit_code)
OK = 0
FAILED = 1            # a failure while training, a full disk, a bug
BAD_INPUT = 2         # a config, dataset, model or argument at fault
INTERRUPTED = 130     # Ctrl-C


def error_line(message: str) -> None:
    """`lora-studio: error: MESSAGE` on stderr, over a progress status line if one is showing."""
    clear = "\r\033[K" if sys.stderr.isatty() else ""
    print(f"{clear}lora-studio: error: {message}", file=sys.stderr)


def print_json(data, *, one_line: bool = False) -> None:
    """`data` as JSON on stdout: indented for a person and a file, or one line per event (flushed,
    for a reader following the stream)."""
    if one_line:
        print(json.dumps(data), flush=True)
    else:
        print(json.dumps(data, indent=1))


class Progress:
    """progress(message, fraction) on stderr: one rewritten line on a terminal, else a line per message."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.last = None

    def __call__(self, message: str, fraction: float | None = None) -> None:
        if message == self.last:
            return
        self.last = message
        pct = f"{fraction:4.0%} " if fraction is not None else ""
        if self.tty:
            print(f"\r\033[K{pct}{message}", end="", file=sys.stderr, flush=True)
        else:
            print(f"{pct}{message}", file=sys.stderr)

    def done(self) -> None:
        if self.tty and self.last is not None:
            print(file=sys.stderr)


def guarded(command):
    """A command's StudioError -> one line and its exit code; a full disk, another file-system
    error or running out of memory -> one line and exit 1 (not bad input); the rest is
    studio.cli.main's job. A command that shows a Progress keeps it in `args.progress`, so that
    the error line starts on a line of its own."""
    def wrapped(args) -> int:
        from studio.core.errors import StudioError
        from studio.core.paths import disk_full_error

        def report(message: str, code: int) -> int:
            if getattr(args, "progress", None):
                args.progress.done()
            error_line(message)
            return code

        try:
            return command(args)
        except StudioError as e:
            return report(str(e), e.exit_code)
        except MemoryError:
            return report("out of memory (RAM): close other programs and try again; nothing was written", FAILED)
        except OSError as e:
            full = disk_full_error(e, e.filename or "a file", where=e.filename)
            if full is not None:
                return report(str(full), FAILED)
            return report(f"{str(e.filename) + ': ' if e.filename else ''}{e.strerror or e}", FAILED)
    return wrapped
