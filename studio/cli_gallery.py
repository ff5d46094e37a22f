"""The gallery from the command line (the same core functions the window's Gallery menu calls):

    lora-studio gallery list [--json]                 the adapters, newest first
    lora-studio gallery show NAME [--json]            one adapter's record
    lora-studio gallery add RUN_FOLDER [--name N]     add a run's adapter (runs add themselves)
    lora-studio gallery import FOLDER [--name N] [--base MODEL]   a PEFT adapter made elsewhere
    lora-studio gallery rename NAME NEW | note NAME TEXT | delete NAME [--yes]
    lora-studio export ADAPTER (--merged OUT [--dtype auto|fp32|bf16|fp16] | --adapter OUT) [--force]
    lora-studio combine A B [...] [--weights 1,1] [--method linear] [--density 0.5] [--name N]
    lora-studio resize ADAPTER (--rank K | --energy 0.9) [--name N]
    lora-studio generate ADAPTER PROMPT [--max-new-tokens 128] [--temperature 0]

ADAPTER is a gallery name, or the path of an adapter folder or a run folder.
"""

from __future__ import annotations

import json
import sys


def _err(message: str) -> None:
    clear = "\r\033[K" if sys.stderr.isatty() else ""
    print(f"{clear}lora-studio: error: {message}", file=sys.stderr)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class _Progress:
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


def _guard(fn):
    """StudioError -> one line and its exit code; a full disk, another file-system error or
    running out of memory -> one line and exit 1 (not bad input); the rest is cli.main's job."""
    def wrapped(args) -> int:
        from studio.core.errors import StudioError
        from studio.core.paths import disk_full_error

        def fail(message: str, code: int) -> int:
            if getattr(args, "_progress", None):
                args._progress.done()
            _err(message)
            return code

        try:
            return fn(args)
        except StudioError as e:
            return fail(str(e), e.exit_code)
        except MemoryError:
            return fail("out of memory (RAM): close other programs and try again; nothing was written", 1)
        except OSError as e:
            full = disk_full_error(e, e.filename or "a file", where=e.filename)
            if full is not None:
                return fail(str(full), 1)
            return fail(f"{str(e.filename) + ': ' if e.filename else ''}{e.strerror or e}", 1)
    return wrapped


def _entry(ref: str):
    from studio.core.export import entry_from

    return entry_from(ref)


@_guard
def cmd_gallery(args) -> int:
    from studio.core.gallery import Gallery

    gallery = Gallery()
    action = args.action
    if action == "list":
        entries = gallery.entries()
        if args.json:
            print(json.dumps([e.summary() for e in entries], indent=1))
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
        entry = _entry(args.name)
        summary = entry.summary()
        if args.json:
            print(json.dumps(summary, indent=1))
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
                _err(f"delete {entry.name}: confirm with --yes (no terminal to ask on)")
                return 2
            answer = input(f"delete {entry.name} ({entry.variant}, {_human(entry.size_bytes)})? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("kept", file=sys.stderr)
                return 1
        gallery.delete(entry.name)
        print(f"deleted {entry.name}", file=sys.stderr)
        return 0
    else:  # argparse keeps this unreachable
        _err(f"gallery: unknown action {action!r}")
        return 2
    print(entry.name)
    return 0


@_guard
def cmd_export(args) -> int:
    from studio.core import export

    entry = _entry(args.adapter)
    args._progress = progress = _Progress()
    if args.merged:
        out = export.export_merged(entry, args.merged, overwrite=args.force, progress=progress, dtype=args.dtype)
    else:
        out = export.export_adapter(entry, args.adapter_out, overwrite=args.force, progress=progress)
    progress.done()
    print(out)
    return 0


def _floats(text: str, what: str) -> list[float]:
    from studio.core.errors import InputError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{what}: expected numbers separated by commas, got {text!r}") from None


@_guard
def cmd_combine(args) -> int:
    from studio.core import export

    entries = [_entry(a) for a in args.adapters]
    weights = _floats(args.weights, "--weights") if args.weights else [1.0] * len(entries)
    args._progress = progress = _Progress()
    entry = export.combine(entries, weights, method=args.method, name=args.name, density=args.density,
                           progress=progress)
    progress.done()
    print(entry.name)
    return 0


@_guard
def cmd_resize(args) -> int:
    from studio.core import export
    from studio.core.errors import InputError

    if (args.rank is None) == (args.energy is None):
        raise InputError("resize: give --rank K or --energy SHARE (one of them)")
    entry = _entry(args.adapter)
    args._progress = progress = _Progress()
    new = export.resize(entry, rank=args.rank, energy=args.energy, name=args.name, progress=progress)
    progress.done()
    kept = new.meta.get("derived_from", {}).get("energy_kept")
    print(f"rank {new.rank}: keeps {kept:.2%} of the update's energy (‖ΔW‖²)", file=sys.stderr)
    print(new.name)
    return 0


@_guard
def cmd_generate(args) -> int:
    from studio.core.playground import Playground

    entry = _entry(args.adapter)
    args._progress = progress = _Progress()
    playground = Playground(entry).load(progress=progress)
    progress.done()
    if playground.task == "sequence-classification":
        result = playground.classify(args.prompt)
        if args.json:
            print(json.dumps(result))
            return 0
        width = max(len(x) for x in result["labels"])
        print(f"{'label':<{width}}   base  adapted")
        for label, b, a in zip(result["labels"], result["base"], result["adapted"]):
            print(f"{label:<{width}}  {b:5.1%}  {a:6.1%}")
        return 0
    current = {"which": None}

    def on_text(which: str, piece: str) -> None:
        if args.json:
            return
        if which != current["which"]:
            if current["which"] is not None:
                print()
            print(f"── {'base model' if which == 'base' else 'with ' + entry.name} ──")
            current["which"] = which
        print(piece, end="", flush=True)

    answers = playground.generate(args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  on_text=on_text)
    if args.json:
        print(json.dumps(answers))
    else:
        print()
    return 0


def add_commands(sub) -> None:
    from studio.core.export import COMBINE_METHODS

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

    export = sub.add_parser("export", help="write an adapter merged into its base, or alone")
    export.add_argument("adapter", metavar="ADAPTER", help="a gallery name, an adapter folder or a run folder")
    what = export.add_mutually_exclusive_group(required=True)
    what.add_argument("--merged", metavar="OUT", help="a Hugging Face model folder with the adapter merged in")
    what.add_argument("--adapter", dest="adapter_out", metavar="OUT", help="the PEFT adapter folder alone")
    export.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="--merged: the merged weights' dtype (auto: the base model's own)")
    export.add_argument("--force", action="store_true", help="replace OUT if it exists and is not empty")
    export.set_defaults(func=cmd_export)

    combine = sub.add_parser("combine", help="combine adapters of one base into a new gallery entry")
    combine.add_argument("adapters", nargs="+", metavar="ADAPTER")
    combine.add_argument("--weights", help="one weight per adapter, comma-separated (default all 1)")
    combine.add_argument("--method", default="linear", choices=COMBINE_METHODS)
    combine.add_argument("--density", type=float, default=0.5, help="for ties, dare_* and magnitude_prune")
    combine.add_argument("--name")
    combine.set_defaults(func=cmd_combine)

    resize = sub.add_parser("resize", help="truncate an adapter to a lower rank (SVD of ΔW) as a new entry")
    resize.add_argument("adapter", metavar="ADAPTER")
    resize.add_argument("--rank", type=int)
    resize.add_argument("--energy", type=float, help="the share of ‖ΔW‖² to keep, e.g. 0.9")
    resize.add_argument("--name")
    resize.set_defaults(func=cmd_resize)

    generate = sub.add_parser("generate", help="answer a prompt with the base model and with the adapter")
    generate.add_argument("adapter", metavar="ADAPTER")
    generate.add_argument("prompt")
    generate.add_argument("--max-new-tokens", type=int, default=128)
    generate.add_argument("--temperature", type=float, default=0.0)
    generate.add_argument("--json", action="store_true", help="print both answers as one JSON object")
    generate.set_defaults(func=cmd_generate)


COMMANDS = ("gallery", "export", "combine", "resize", "generate")
