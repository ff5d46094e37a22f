"""Where the studio's own files are: the default config, the sample datasets, the icon.

    from studio.core.resources import resource_path
    resource_path("configs", "default.toml")      # -> .../resources/configs/default.toml

The same files live in one of three places, depending on how LoRA Studio was installed:

    a checkout (running from source, or `pip install -e .`)   <repo>/resources/
    a wheel (`pip install .`, pipx)                           site-packages/studio/resources/
    a PyInstaller bundle                                      <bundle>/_internal/studio/resources/

pyproject.toml maps the package `studio.resources` onto the checkout's top-level `resources/`,
and packaging/lora-studio.spec copies it to the same place in a bundle, so the last two are one
rule: the folder `resources` beside `studio/__init__.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

RESOURCES = "resources"


def _checkout_dir() -> Path | None:
    """The checkout's resources/, when this file sits in one (source tree or editable install).
    pyproject.toml beside it tells a checkout from a site-packages that happens to hold some
    other distribution's top-level `resources` folder."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / RESOURCES).is_dir():
        return root / RESOURCES
    return None


def _installed_dir() -> Path:
    """resources/ beside studio/__init__.py: in a wheel, and in a PyInstaller bundle (whose
    modules have a __file__ under sys._MEIPASS)."""
    return Path(__file__).resolve().parents[1] / RESOURCES


def resource_dir() -> Path:
    """The folder holding configs/, datasets/ and icons/. When none is found (a broken install)
    it is the installed package's place for it, which does not exist: callers then report a
    missing file rather than crash here."""
    candidates = [_checkout_dir(), _installed_dir()]
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        candidates.append(Path(bundle) / "studio" / RESOURCES)
    for folder in candidates:
        if folder is not None and folder.is_dir():
            return folder
    return _installed_dir()


def resource_path(*parts: str) -> Path:
    """A file or folder under resource_dir(), e.g. resource_path("datasets", "chat_sample.jsonl")."""
    return resource_dir().joinpath(*parts)


def default_config_path() -> Path:
    """The run config the window opens with and `lora-studio info` reports."""
    return resource_path("configs", "default.toml")


def icon_path(kind: str = "svg") -> Path:
    """The app icon: "svg", or "png" (256 px, rendered by packaging/render_icons.py)."""
    return resource_path("icons", "lora-studio.svg" if kind == "svg" else "lora-studio-256.png")
