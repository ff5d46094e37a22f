"""`lora-studio variants`: the LoRA variants this installation has, and their options.

    lora-studio variants              one line each: name and description
    lora-studio variants --options    with each variant's options, defaults and bounds
    lora-studio variants --json       everything as one JSON object
"""

from __future__ import annotations

from studio.cli.common import print_json


def cmd_variants(args) -> int:
    from studio.core.options import describe_fields
    from studio.core.variants import REGISTRY

    if args.json:
        print_json({name: {"description": v.description, "options": describe_fields(v.options_cls)}
                    for name, v in REGISTRY.items()})
        return 0
    width = max(len(n) for n in REGISTRY)
    for name, v in REGISTRY.items():
        print(f"{name:<{width}}  {v.description}")
        if args.options:
            for f in describe_fields(v.options_cls):
                bounds = ""
                if "choices" in f:
                    bounds = f" ({'/'.join(map(str, f['choices']))})"
                elif "min" in f or "max" in f:
                    bounds = f" [{f.get('min', '')}..{f.get('max', '')}]"
                print(f"    {f['name']} = {f['default']!r}{bounds}  {f['help']}")
    return 0


def add_command(sub) -> None:
    variants = sub.add_parser("variants", help="list the LoRA variants")
    variants.add_argument("--options", action="store_true", help="also list each variant's options")
    variants.add_argument("--json", action="store_true", help="everything as JSON")
    variants.set_defaults(func=cmd_variants)


COMMANDS = ("variants",)
