"""`lora-studio models`: the models already on this machine (studio.core.modelcache).

    lora-studio models                       a table: name, size, revision, source
    lora-studio models --json                the same as a JSON list of objects
    lora-studio models --filter llama        only those matching every word
    lora-studio models --add-folder PATH     also look in PATH from now on (the window too)
    lora-studio models --remove-folder PATH  stop looking there

The source column is what to put into `[model] source`. Notes on what was skipped (a corrupt cache
entry, a folder that is gone) go to stderr, one line each. Nothing is downloaded.
"""

from __future__ import annotations

import sys

from studio.cli.common import error_line, print_json


def _note(message: str) -> None:
    print(f"lora-studio: note: {message}", file=sys.stderr)


def _table(models: list[dict]) -> list[str]:
    from studio.core.modelcache import human_size, revision_text

    rows = [(m["name"] + (f"  [{m['note']}]" if m.get("note") else ""), human_size(m["size_bytes"]),
             revision_text(m) or "-", m["source"]) for m in models]
    header = ("NAME", "SIZE", "REVISION", "SOURCE")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(3)]
    lines = []
    for name, size, revision, source in [header] + rows:
        lines.append(f"{name:<{widths[0]}}  {size:>{widths[1]}}  {revision:<{widths[2]}}  {source}")
    return lines


def cmd_models(args) -> int:
    from studio.core import modelcache
    from studio.core.errors import StudioError

    try:
        if args.add_folder is not None:
            folder = modelcache.add_folder(args.add_folder)
            print(f"added {folder}", file=sys.stderr)
        if args.remove_folder is not None:
            folder = modelcache.remove_folder(args.remove_folder)
            print(f"removed {folder}", file=sys.stderr)
    except StudioError as e:
        error_line(str(e))
        return e.exit_code
    models, notes = modelcache.scan_models()
    models = modelcache.filter_models(models, args.filter)
    for note in notes:
        _note(note)
    if args.json:
        print_json(models)
        return 0
    if not models:
        where = f"matching '{args.filter}' " if args.filter else ""
        print(f"no models {where}in the Hugging Face cache ({modelcache.hub_cache_dir()}) or the added folders"
              f"{' (' + ', '.join(modelcache.added_folders()) + ')' if modelcache.added_folders() else ''}",
              file=sys.stderr)
        return 0
    for line in _table(models):
        print(line)
    return 0


def add_command(sub) -> None:
    models = sub.add_parser("models", help="the models already here: the Hugging Face cache and added folders")
    models.add_argument("--json", action="store_true", help="a JSON list of objects (name, source, size_bytes, "
                        "revision, kind, ...)")
    models.add_argument("--filter", metavar="TEXT", default="",
                        help="only models whose name, source, kind, revision or type holds every word of TEXT")
    models.add_argument("--add-folder", metavar="PATH",
                        help="also look for models in PATH (a model folder, or a folder of them and .gguf files)")
    models.add_argument("--remove-folder", metavar="PATH", help="stop looking in an added folder")
    models.set_defaults(func=cmd_models)


COMMANDS = ("models",)
