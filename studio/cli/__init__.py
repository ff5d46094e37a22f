"""`lora-studio`: the window and the command line. This module assembles the commands and runs one.

    lora-studio                                                    open the window (default run loaded)
    lora-studio CONFIG.toml | RUN_FOLDER                           open the window with a config or a past run
    lora-studio train CONFIG.toml [--set section.key=value ...]   train; prints the run folder (train.py)
    lora-studio train --resume RUN_FOLDER                          continue from its last checkpoint
    lora-studio launch CONFIG.toml --processes N [--cpu]           train on N processes (launch.py)
    lora-studio variants [--options]                               the variants and their options (variants.py)
    lora-studio models [--json] [--filter TEXT]                    models already here (models.py)
    lora-studio plan CONFIG.toml [--json]                          estimated peak memory (plan.py)
    lora-studio info [--json]                                      versions and where files are found (info.py)
    lora-studio gallery list|show|add|import|rename|note|delete    the gallery (gallery.py)
    lora-studio export|combine|resize|generate ADAPTER ...         with a finished adapter (adapters.py)

One module per command group, each with `add_command(s)(sub)` and `COMMANDS`; what they share
(the error line, the exit codes, JSON output) is in common.py, and they do not import each other.

Exit codes: 0 success, 1 a failure while training, 2 bad input (config, dataset, model), 130
interrupted. Errors are one line naming the file, line or field; no traceback unless
LORA_STUDIO_DEBUG=1 (a failed run also keeps the full trace in its folder's error.log).
"""

from __future__ import annotations

import argparse
import os
import sys

from studio.cli import adapters, gallery, gui, info, launch, models, plan, train, variants
from studio.cli.common import BAD_INPUT, FAILED, INTERRUPTED, error_line

COMMANDS = (train.COMMANDS + launch.COMMANDS + variants.COMMANDS + gui.COMMANDS + info.COMMANDS
            + models.COMMANDS + plan.COMMANDS + gallery.COMMANDS + adapters.COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora-studio",
                                     description="Parameter-efficient fine-tuning: LoRA and seven variants.")
    parser.epilog = ("With no command, or with a CONFIG.toml or RUN_FOLDER, lora-studio opens the window: "
                     "lora-studio [CONFIG.toml | RUN_FOLDER]")
    sub = parser.add_subparsers(dest="command")
    # in the order of `lora-studio --help`
    gui.add_command(sub)
    train.add_command(sub)
    variants.add_command(sub)
    launch.add_command(sub)
    gallery.add_command(sub)
    adapters.add_commands(sub)
    info.add_command(sub)
    models.add_command(sub)
    plan.add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and not argv[0].startswith("-")):
        # no command, or a path: the window (Qt and the charts load only on this path)
        if len(argv) > 1:
            error_line(f"expected one CONFIG.toml or RUN_FOLDER to open, got {len(argv)} arguments "
                       "(see lora-studio --help)")
            return BAD_INPUT
        return gui.run_window(argv[0] if argv else None)
    parser = build_parser()
    extra: list[str] = []
    if argv[0] == "launch" and "--" in argv:   # the rest is for accelerate launch, as it is
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    args = parser.parse_args(argv)
    if extra:
        args.accelerate_args = extra
    if args.command is None:
        parser.print_help()
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not os.environ.get("LORA_STUDIO_DEBUG"):
        # the terminal shows our progress and one-line errors; library chatter stays out of it
        import warnings

        warnings.simplefilter("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        error_line("interrupted")
        return INTERRUPTED
    except BrokenPipeError:  # `lora-studio variants | head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as e:  # a bug: still one line unless debugging
        if os.environ.get("LORA_STUDIO_DEBUG"):
            raise
        error_line(f"unexpected {type(e).__name__}: {e} (set LORA_STUDIO_DEBUG=1 for the traceback)")
        return FAILED


__all__ = ["COMMANDS", "build_parser", "main"]
