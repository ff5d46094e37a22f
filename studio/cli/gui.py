"""`lora-studio gui` (and `lora-studio` with no command, or with a path): open the window.

    lora-studio [CONFIG.toml | RUN_FOLDER]
    lora-studio gui [CONFIG.toml | RUN_FOLDER] [--screenshot FILE.png [--screenshot-delay SECONDS]]

Qt and the charts are imported only when the window opens, not with the CLI.
"""

from __future__ import annotations


def run_window(path: str | None = None, **options) -> int:
    """The window (studio.ui.app), with a run config or a run folder loaded; its exit code."""
    from studio.ui.app import main as gui_main

    return gui_main(path, **options)


def cmd_gui(args) -> int:
    return run_window(args.path, screenshot=args.screenshot, screenshot_delay=args.screenshot_delay)


def add_command(sub) -> None:
    gui = sub.add_parser("gui", help="open the window (the default with no command)")
    gui.add_argument("path", nargs="?", help="a run config (.toml) or a run folder to open")
    gui.add_argument("--screenshot", metavar="FILE.png",
                     help="save a picture of the window once it has painted, then quit (works offscreen)")
    gui.add_argument("--screenshot-delay", type=float, default=1.0, metavar="SECONDS",
                     help="how long the window runs before the picture is taken (default 1)")
    gui.set_defaults(func=cmd_gui)


COMMANDS = ("gui",)
