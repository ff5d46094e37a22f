"""`lora-studio gallery`: the finished adapters kept in the gallery (the same core functions the
window's Gallery menu calls).

    lora-studio gallery list [--json]                 the adapters, newest first
    lora-studio gallery show NAME [--json]            one adapter's record
    lora-studio gallery add RUN_FOLDER [--name N]     add a run's adapter (runs add themselves)
    lora-studio gallery import FOLDER [--name N] [--base MODEL]   a PEFT adapter made elsewhere
    lora-studio gallery rename NAME NEW | note NAME TEXT | delete NAME [--yes]

NAME (for show) is a gallery name, or the path of an adapter folder or a run folder. What is done
with an adapter (export, combine, resize, generate) is in adapters.py.
"""

from __future__ import annotations

import sys

from studio.cli.common import BAD_INPUT, FAILED, error_line, guarded, print_json


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@guarded
def cmd_gallery(args) -> int:
    from studio.core.gallery import Gallery

    gallery = Gallery()
    action = args.action
    if action == "list":
        entries = gallery.entries()
        if args.json:
            print_json([e.summary() for e in entries])
            return 0
        if not entries:
            print(f"the gallery is empty ({gallery.root}); finished runs add their adapters here", file=sys.stderr)
            return 0
        rows = [(e.name, e.variant, str(e.rank or "-"), e.base_model, _human(e.size_bytes),
                 f"{e.final_loss:.4f}" if e.final_loss is not None else "-", e.created.replace("T", " "))
                for e in entries]
        head = ("NAME", "VARIANT", "RANK", "BASE MODEL", "SIZE", "LOSS", "CREATED")
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        for row in [head] + rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        return 0
    if action == "show":
        from studio.core.export import entry_from

        summary = entry_from(args.name).summary()
        if args.json:
            print_json(summary)
            return 0
        for key, value in summary.items():
            if key == "size_bytes":
                value = _human(value)
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
            print(f"{key:<17} {value if value not in (None, '') else '-'}")
        return 0
    if action == "add":
        entry = gallery.add_run(args.target, name=args.name)
    elif action == "import":
        entry = gallery.import_folder(args.target, name=args.name, base_model=args.base)
    elif action == "rename":
        entry = gallery.rename(args.name, args.new_name)
    elif action == "note":
        entry = gallery.annotate(args.name, args.text)
    elif action == "delete":
        entry = gallery.get(args.name)
        if not args.yes:
            if not sys.stdin.isatty():
                error_line(f"delete {entry.name}: confirm with --yes (no terminal to ask on)")
                return BAD_INPUT
            answer = input(f"delete {entry.name} ({entry.variant}, {_human(entry.size_bytes)})? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("kept", file=sys.stderr)
                return FAILED
        gallery.delete(entry.name)
        print(f"deleted {entry.name}", file=sys.stderr)
        return 0
    else:  # argparse keeps this unreachable
        error_line(f"gallery: unknown action {action!r}")
        return BAD_INPUT
    print(entry.name)
    return 0


def add_command(sub) -> None:
    gallery = sub.add_parser("gallery", help="list, show, add, import, rename, annotate or delete adapters")
    actions = gallery.add_subparsers(dest="action", required=True)
    p = actions.add_parser("list", help="the adapters, newest first")
    p.add_argument("--json", action="store_true")
    p = actions.add_parser("show", help="one adapter's record")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p = actions.add_parser("add", help="add a run folder's adapter")
    p.add_argument("target", metavar="RUN_FOLDER")
    p.add_argument("--name")
    p = actions.add_parser("import", help="import a PEFT adapter folder made elsewhere")
    p.add_argument("target", metavar="FOLDER")
    p.add_argument("--name")
    p.add_argument("--base", help="its base model, when adapter_config.json does not name one usable here")
    p = actions.add_parser("rename", help="rename an adapter")
    p.add_argument("name")
    p.add_argument("new_name")
    p = actions.add_parser("note", help="set an adapter's notes")
    p.add_argument("name")
    p.add_argument("text")
    p = actions.add_parser("delete", help="delete an adapter")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="do not ask")
    gallery.set_defaults(func=cmd_gallery)


COMMANDS = ("gallery",)
