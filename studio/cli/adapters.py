"""`lora-studio export | combine | resize | generate`: what is done with a finished adapter (the
same core functions the window's Gallery menu and Playground call).

    lora-studio export ADAPTER (--merged OUT [--dtype auto|fp32|bf16|fp16] | --adapter OUT) [--force]
    lora-studio combine A B [...] [--weights 1,1] [--method linear] [--density 0.5] [--name N]
    lora-studio resize ADAPTER (--rank K | --energy 0.9) [--name N]
    lora-studio generate ADAPTER PROMPT [--max-new-tokens 128] [--temperature 0]

ADAPTER is a gallery name, or the path of an adapter folder or a run folder. New adapters
(combine, resize) go into the gallery; the gallery itself is gallery.py.
"""

from __future__ import annotations

import sys

from studio.cli.common import Progress, guarded, print_json


@guarded
def cmd_export(args) -> int:
    from studio.core import export

    entry = export.entry_from(args.adapter)
    args.progress = progress = Progress()
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


@guarded
def cmd_combine(args) -> int:
    from studio.core import export
    from studio.core.combine import combine

    entries = [export.entry_from(a) for a in args.adapters]
    weights = _floats(args.weights, "--weights") if args.weights else [1.0] * len(entries)
    args.progress = progress = Progress()
    entry = combine(entries, weights, method=args.method, name=args.name, density=args.density,
                           progress=progress)
    progress.done()
    print(entry.name)
    return 0


@guarded
def cmd_resize(args) -> int:
    from studio.core import export
    from studio.core.errors import InputError
    from studio.core.resize import resize

    if (args.rank is None) == (args.energy is None):
        raise InputError("resize: give --rank K or --energy SHARE (one of them)")
    entry = export.entry_from(args.adapter)
    args.progress = progress = Progress()
    new = resize(entry, rank=args.rank, energy=args.energy, name=args.name, progress=progress)
    progress.done()
    kept = new.meta.get("derived_from", {}).get("energy_kept")
    print(f"rank {new.rank}: keeps {kept:.2%} of the update's energy (‖ΔW‖²)", file=sys.stderr)
    print(new.name)
    return 0


@guarded
def cmd_generate(args) -> int:
    from studio.core.export import entry_from
    from studio.core.playground import Playground

    entry = entry_from(args.adapter)
    args.progress = progress = Progress()
    playground = Playground(entry).load(progress=progress)
    progress.done()
    if playground.task == "sequence-classification":
        result = playground.classify(args.prompt)
        if args.json:
            print_json(result, one_line=True)
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
        print_json(answers, one_line=True)
    else:
        print()
    return 0


def add_commands(sub) -> None:
    from studio.core.combine import COMBINE_METHODS

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


COMMANDS = ("export", "combine", "resize", "generate")
