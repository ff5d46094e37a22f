"""Drive the studio window offscreen through a short real run on the bundled SmolLM2 and save
screenshots of every chart tab (the README shows them).

    .venv/bin/python tests/bench/window_tour.py                       # AdaLoRA, 24 steps
    .venv/bin/python tests/bench/window_tour.py --variant dora --steps 16 --out /tmp/shots

The window is used as a person uses it, through its stable names: the variant is picked in
`variantCombo`, the dataset preview is asked for with `previewButton`, the run starts with
`trainButton`. Nothing is mocked; the run folder is left under a temporary studio home.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(key, "1")


def wait_until(app, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="adalora")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--out", default=str(ROOT / "resources" / "screenshots"))
    parser.add_argument("--theme", default="light", choices=("light", "dark"))
    parser.add_argument("--size", default="1600x1000",
                        help="window size WxH; other than 1600x1000 the files are named NAME-WxH.png")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    suffix = "" if (width, height) == (1600, 1000) else f"-{width}x{height}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QComboBox, QPushButton

    from studio.ui.app import application, dispose, open_window

    app = application()
    tmp = Path(tempfile.mkdtemp(prefix="tour-"))
    window = open_window(None, settings=QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat))
    window.set_theme(args.theme)
    window.resize(width, height)
    window.findChild(QComboBox, "variantCombo").setCurrentText(args.variant)
    raw = window.raw_config()
    raw["train"].update(max_steps=args.steps, output_dir=str(tmp / "runs"), eval_every=max(args.steps // 3, 1),
                        save_every=0)
    raw["data"]["max_seq_len"] = 128
    raw["telemetry"].update(every=2, budget=0.0)
    if args.variant == "adalora":
        raw["variant"].update(tinit=2, tfinal=4, deltaT=2)
    from studio.core.config import RunConfig

    window.set_config(RunConfig.from_dict(raw, "tour"), None)
    print("previewing the dataset (converts the bundled model the first time)…", flush=True)
    wait_until(app, lambda: window.model_panel.description is not None, 60, "the model description")
    window.findChild(QPushButton, "previewButton").click()
    window.preview_dock.raise_()
    wait_until(app, lambda: window.data_panel.preview is not None, 600, "the dataset preview")
    wait_until(app, window.train_button.isEnabled, 60, "Train to be enabled")
    for _ in range(20):
        app.processEvents()
    window.grab().save(str(out / f"window-setup{suffix}.png"))

    finished = {}
    window.run_finished.connect(lambda result: finished.update(result))
    started = time.monotonic()
    window.findChild(QPushButton, "trainButton").click()
    window.runs_dock.raise_()
    wait_until(app, lambda: bool(finished), 3600, "the run to finish")
    print(f"run {finished.get('status')} in {time.monotonic() - started:.0f} s: {finished.get('run_dir')}",
          flush=True)
    window.refresh_runs()
    for index in range(window.charts.tabs.count()):
        window.charts.tabs.setCurrentIndex(index)
        for _ in range(20):
            app.processEvents()
        name = window.charts.tabs.tabText(index).lower()
        window.grab().save(str(out / f"window-{name}{suffix}.png"))
        print(f"saved {out / f'window-{name}{suffix}.png'}")
    dispose(window)


if __name__ == "__main__":
    main()
