"""`lora-studio plan`: a run's estimated peak memory against the device's free memory, before
anything loads (studio.core.plan).

    lora-studio plan CONFIG.toml [--set section.key=value ...]   a few lines: the parts, the peak
    lora-studio plan CONFIG.toml --json                            one JSON object; peak_bytes is the total
    lora-studio plan CONFIG.toml --preset 7-8b                     with a preset (as train --preset)

Exit code 0 whether or not it fits (the answer is in the output: "fits" / "will not fit", and
`fits` in the JSON); 2 for bad input.
"""

from __future__ import annotations

from studio.cli.common import error_line, print_json


def cmd_plan(args) -> int:
    from studio.core.errors import StudioError
    from studio.core.plan import plan_for

    try:
        overrides = args.set
        if args.preset:
            from studio.core.config import RunConfig
            from studio.core.presets import get_preset

            name = RunConfig.from_toml(args.config).with_overrides(args.set).variant_name
            overrides = get_preset(args.preset).overrides(name) + args.set
        plan = plan_for(args.config, overrides)
    except StudioError as e:
        error_line(str(e))
        return e.exit_code
    if args.json:
        print_json(plan.to_dict())
        return 0
    print(plan.summary())
    for line in plan.lines():
        print(line)
    return 0


def add_command(sub) -> None:
    plan = sub.add_parser("plan", help="estimate a run's peak memory before training")
    plan.add_argument("config", help="a run config (TOML)")
    plan.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="override a config value (as for train)")
    plan.add_argument("--preset", metavar="NAME", help="as for train: small, 1-3b, 7-8b, 13b+")
    plan.add_argument("--json", action="store_true", help="one JSON object (peak_bytes is the total)")
    plan.set_defaults(func=cmd_plan)


COMMANDS = ("plan",)
