"""The system libraries Qt's xcb (X11) platform plugin needs, checked before Qt starts.

Without them Qt aborts the process with a message that names only libxcb-cursor0, whatever is
missing (seen on a desktop that lacked libxcb-icccm4 and libxcb-keysyms1). `lora-studio` asks the
dynamic linker first (ctypes.util.find_library, which reads ldconfig's cache) and prints what is
missing, with the apt and dnf lines that install it. Qt has no way to ask this ahead of time.
"""

from __future__ import annotations

import os
import sys

# library (as find_library names it) -> (Debian/Ubuntu package, Fedora/RHEL package)
XCB_LIBRARIES = {
    "xcb-cursor": ("libxcb-cursor0", "xcb-util-cursor"),
    "xcb-icccm": ("libxcb-icccm4", "xcb-util-wm"),
    "xcb-keysyms": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "xcb-image": ("libxcb-image0", "xcb-util-image"),
    "xcb-render-util": ("libxcb-render-util0", "xcb-util-renderutil"),
    "xcb-shape": ("libxcb-shape0", "libxcb"),
    "xcb-xkb": ("libxcb-xkb1", "libxcb"),
    "xkbcommon-x11": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
}


def uses_xcb(env=None, platform: str | None = None) -> bool:
    """Whether Qt will try its xcb plugin: Linux, an X display, and no other platform asked for."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return False
    asked = env.get("QT_QPA_PLATFORM", "").strip().lower()
    if asked:
        return asked.startswith("xcb")
    return bool(env.get("DISPLAY")) and not env.get("WAYLAND_DISPLAY")


def missing(find=None) -> list[str]:
    """The libraries of XCB_LIBRARIES the dynamic linker cannot find."""
    if find is None:
        from ctypes.util import find_library as find
    return [name for name in XCB_LIBRARIES if not find(name)]


def message(names: list[str]) -> str:
    apt = sorted({XCB_LIBRARIES[n][0] for n in names})
    dnf = sorted({XCB_LIBRARIES[n][1] for n in names})
    return (f"lora-studio: error: the window needs system libraries that are missing: {', '.join(apt)} "
            f"(install them with: sudo apt install {' '.join(apt)}  or: sudo dnf install {' '.join(dnf)}); "
            "the command line works without them")
