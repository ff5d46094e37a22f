"""`lora-studio gui --screenshot FILE`: the window saves a picture of itself and quits (offscreen),
which is how an installed or frozen app is checked without a display."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PySide6.QtGui import QImage
from PySide6.QtWidgets import QLabel

ROOT = Path(__file__).resolve().parents[2]


def test_gui_screenshot_saves_the_window_and_quits(tmp_path):
    target = tmp_path / "window.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "LORA_STUDIO_HOME": str(tmp_path / "home"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}   # the window's QSettings stay out of ~/.config
    out = subprocess.run([sys.executable, "-m", "studio", "gui", "--screenshot", str(target),
                          "--screenshot-delay", "0.2"], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    image = QImage(str(target))
    assert not image.isNull() and image.width() > 400 and image.height() > 300


def test_a_screenshot_that_cannot_be_written_says_so(qtbot, tmp_path, capsys):
    from studio.ui.app import save_later

    label = QLabel("LoRA Studio")
    qtbot.addWidget(label)
    label.show()
    save_later(label, tmp_path / "no-such-folder" / "window.png", delay_s=0, quit_app=False)
    qtbot.waitUntil(lambda: not label.isVisible(), timeout=5000)
    assert "could not write the screenshot" in capsys.readouterr().err
