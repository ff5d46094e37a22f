"""Fill a gallery with real adapters on the bundled models, drive the window's gallery offscreen
and save screenshots of it: the cards and details, the combine and resize dialogs, the playground
(a real generation on SmolLM2, and a classifier on MiniLM).

    .venv/bin/python tests/bench/gallery_tour.py                    # into resources/screenshots
    .venv/bin/python tests/bench/gallery_tour.py --home /tmp/tour   # keep (and reuse) the gallery

Short real runs train the adapters (a few minutes on a laptop CPU, once: with --home they are
reused). The studio's model cache is shared with the default studio home, so the bundled GGUF is
not converted again. Nothing is mocked; screenshots are saved as small palette PNGs.
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATASETS = ROOT / "resources" / "datasets"
RUNS = [  # name, model, task, dataset, variant options, steps, notes
    ("tutor-lora-r8", "bundled:smollm2-135m-instruct", "causal-lm", "chat_sample.jsonl",
     {"name": "lora", "r": 8, "alpha": 16}, 24, "unit conversions and short definitions; first try"),
    ("tutor-lora-r4", "bundled:smollm2-135m-instruct", "causal-lm", "chat_sample.jsonl",
     {"name": "lora", "r": 4, "alpha": 8}, 16, ""),
    ("tutor-dora-r8", "bundled:smollm2-135m-instruct", "causal-lm", "chat_sample.jsonl",
     {"name": "dora", "r": 8, "alpha": 16}, 16, "DoRA for comparison: slower steps"),
    ("reviews-lora", "bundled:minilm-l6", "sequence-classification", "classification_sample.csv",
     {"name": "lora", "r": 8, "alpha": 16}, 40, "product reviews: negative / neutral / positive"),
]
PROMPT = "Define photosynthesis."


def wait_until(app, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)


def settle(app, n: int = 30) -> None:
    for _ in range(n):
        app.processEvents()
        time.sleep(0.005)


def save(widget, path: Path) -> None:
    """A PNG small enough for the repository: the 256 most used colours (a flat UI has few; the
    rest, antialiasing, map to the nearest of them), no dithering noise."""
    import numpy as np
    from PySide6.QtGui import QImage

    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    w, h = image.width(), image.height()
    pixels = np.frombuffer(image.constBits(), dtype=np.uint32, count=image.bytesPerLine() * h // 4)
    pixels = pixels.reshape(h, image.bytesPerLine() // 4)[:, :w] & 0xFFFFFF
    colours, inverse, counts = np.unique(pixels.ravel(), return_inverse=True, return_counts=True)
    keep = colours[np.argsort(-counts)[:256]]
    rgb = lambda c: np.stack([(c >> 16) & 255, (c >> 8) & 255, c & 255], axis=-1).astype(np.int32)
    nearest = np.empty(len(colours), dtype=np.uint8)
    kept_rgb = rgb(keep)
    for start in range(0, len(colours), 4096):     # each distinct colour to its nearest kept one
        chunk = rgb(colours[start:start + 4096])
        nearest[start:start + 4096] = ((chunk[:, None, :] - kept_rgb[None]) ** 2).sum(-1).argmin(1)
    indices = np.ascontiguousarray(nearest[inverse].reshape(h, w))
    out = QImage(indices.data, w, h, w, QImage.Format.Format_Indexed8)
    out.setColorTable([int(0xFF000000 | int(c)) for c in keep])
    out.save(str(path), "PNG", 9)
    print(f"saved {path} ({path.stat().st_size // 1024} KB)", flush=True)


def train(home: Path) -> None:
    from studio.core.config import RunConfig
    from studio.core.gallery import Gallery
    from studio.core.training import Session

    gallery = Gallery()
    have = {e.name for e in gallery.entries()}
    for name, model, task, data, variant, steps, notes in RUNS:
        if name in have:
            continue
        raw = {"model": {"source": model, "task": task},
               "data": {"path": str(DATASETS / data), "eval_fraction": 0.0, "max_seq_len": 96},
               "variant": variant,
               "train": {"output_dir": str(home / "runs" / name), "max_steps": steps, "batch_size": 4,
                         "learning_rate": 1e-3 if task == "causal-lm" else 2e-3, "save_every": 0,
                         "eval_every": 0, "device": "cpu", "precision": "fp32", "gallery": False},
               "telemetry": {"every": 4, "budget": 0.0}}
        started = time.monotonic()
        result = Session(RunConfig.from_dict(raw, "tour")).run()
        if result.status != "completed":
            raise SystemExit(f"{name}: {result.error}")
        entry = gallery.add_run(result.run_dir, name=name)
        if notes:
            gallery.annotate(entry.name, notes)
        print(f"trained {name} in {time.monotonic() - started:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=None, help="studio home for the tour's gallery (reused if it exists)")
    parser.add_argument("--out", default=str(ROOT / "resources" / "screenshots"))
    parser.add_argument("--theme", default="light", choices=("light", "dark"))
    parser.add_argument("--size", default="1600x1000",
                        help="window size WxH; other than 1600x1000 the files are named NAME-WxH.png")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    suffix = "" if (width, height) == (1600, 1000) else f"-{width}x{height}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="gallery-tour-"))
    home.mkdir(parents=True, exist_ok=True)
    from studio.core.paths import studio_home

    shared_cache = studio_home() / "cache"        # the default home's cache, before the override
    os.environ["LORA_STUDIO_HOME"] = str(home)
    if shared_cache.is_dir() and not (home / "cache").exists():
        (home / "cache").symlink_to(shared_cache, target_is_directory=True)
    train(home)

    from PySide6.QtCore import QSettings, Qt
    from studio.ui.app import application, dispose, open_window

    app = application()
    window = open_window(None, settings=QSettings(str(home / "settings.ini"), QSettings.Format.IniFormat))
    window.set_theme(args.theme)
    window.resize(width, height)
    window.gallery_dock.raise_()
    window.resizeDocks([window.gallery_dock], [640], Qt.Orientation.Horizontal)
    view = window.gallery_view
    view.refresh(select="tutor-lora-r8")
    settle(app)
    save(window, out / f"gallery-window{suffix}.png")

    # the gallery alone, wide: cards beside the details
    window.gallery_dock.setFloating(True)
    window.gallery_dock.resize(1180, 820)
    settle(app)
    view.details.chart_tabs.setCurrentIndex(0)
    settle(app)
    save(window.gallery_dock, out / f"gallery-details{suffix}.png")
    view.details.chart_tabs.setCurrentIndex(1)
    settle(app)
    save(window.gallery_dock, out / f"gallery-details-importance{suffix}.png")
    view.details.chart_tabs.setCurrentIndex(0)

    # combine: r8 + r4 with linear shows why not; cat is fine
    window.gallery.combine()
    dialog = window.gallery.combine_dialog
    dialog.set_checked("tutor-lora-r4")
    dialog.set_method("linear")
    settle(app)
    save(dialog, out / f"gallery-combine-problem{suffix}.png")
    dialog.set_method("ties")
    dialog.weight_spins["tutor-lora-r4"].setValue(0.7)
    dialog.set_method("cat")
    settle(app)
    save(dialog, out / f"gallery-combine{suffix}.png")
    dialog.reject()
    settle(app)

    # resize: the energy curve of the r8 adapter
    window.gallery.resize()
    dialog = window.gallery.resize_dialog
    wait_until(app, lambda: dialog.curve is not None, 600, "the energy curve")
    dialog.set_rank(4)
    settle(app)
    save(dialog, out / f"gallery-resize{suffix}.png")
    dialog.reject()
    settle(app)

    # the playground: a real answer from SmolLM2, base and adapted
    window.gallery.open_playground()
    playground = window.gallery.playground
    wait_until(app, lambda: playground.session is not None, 600, "the playground to load")
    playground.max_tokens.setValue(64)
    playground.prompt.setPlainText(PROMPT)
    done = []
    playground.generated.connect(done.append)
    playground.generate()
    wait_until(app, lambda: bool(done), 600, "the generation")
    settle(app)
    save(playground, out / f"gallery-playground{suffix}.png")
    playground.adapter_combo.setCurrentIndex(playground.adapter_combo.findData("reviews-lora"))
    wait_until(app, lambda: playground.session is not None and playground.session_name == "reviews-lora", 600,
               "the classifier")
    playground.prompt.setPlainText("The headphones broke after two days. Poor quality.")
    done.clear()
    playground.classified.connect(done.append)
    playground.generate()
    wait_until(app, lambda: bool(done), 600, "the classification")
    settle(app)
    save(playground, out / f"gallery-playground-classifier{suffix}.png")
    playground.close()
    window.gallery_dock.setFloating(False)
    dispose(window)


if __name__ == "__main__":
    main()
