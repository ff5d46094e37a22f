"""Issue 20: a first launch on a desktop without libxcb-icccm4 and libxcb-keysyms1 aborted in Qt,
whose message named libxcb-cursor0. lora-studio checks first and names what is missing."""

from __future__ import annotations

import subprocess
import sys

from studio.ui import qtlibs


def test_xcb_is_expected_only_on_a_linux_x_display():
    assert qtlibs.uses_xcb({"DISPLAY": ":0"}, "linux")
    assert not qtlibs.uses_xcb({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert not qtlibs.uses_xcb({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert qtlibs.uses_xcb({"QT_QPA_PLATFORM": "xcb"}, "linux")
    assert not qtlibs.uses_xcb({"DISPLAY": ":0"}, "darwin")


def test_the_missing_libraries_are_named_with_the_install_line():
    present = set(qtlibs.XCB_LIBRARIES) - {"xcb-icccm", "xcb-keysyms"}
    lacking = qtlibs.missing(lambda name: f"lib{name}.so" if name in present else None)
    assert lacking == ["xcb-icccm", "xcb-keysyms"]
    text = qtlibs.message(lacking)
    assert "libxcb-icccm4, libxcb-keysyms1" in text
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1" in text
    assert "sudo dnf install xcb-util-keysyms xcb-util-wm" in text
    assert "\n" not in text


def test_lora_studio_says_so_instead_of_aborting(tmp_path):
    """The real entry point, in a fresh process on a pretend X display where two libraries are
    missing: one line, exit 2, no Qt abort."""
    code = (
        "import ctypes.util, sys\n"
        "real = ctypes.util.find_library\n"
        "ctypes.util.find_library = lambda n: None if n in ('xcb-icccm', 'xcb-keysyms') else (real(n) or 'lib' + n)\n"
        "from studio.ui.app import main\n"
        "sys.exit(main())\n"
    )
    env = {"PATH": "/usr/bin:/bin", "DISPLAY": ":99", "HOME": str(tmp_path), "LORA_STUDIO_HOME": str(tmp_path),
           "PYTHONPATH": ":".join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "libxcb-icccm4, libxcb-keysyms1" in lines[0], done.stderr
