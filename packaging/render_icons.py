"""Render resources/icons/lora-studio.svg to the PNG sizes desktops and AppStream want.

    QT_QPA_PLATFORM=offscreen python packaging/render_icons.py     # rewrites resources/icons/*.png

Run it after editing the SVG. The PNGs are committed: a frozen app and a desktop without an SVG
icon loader still get an icon.
"""

from __future__ import annotations

import sys
from pathlib import Path

SIZES = (128, 256)
ICONS = Path(__file__).resolve().parents[1] / "resources" / "icons"


def main() -> int:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])   # painting on a QImage needs one
    renderer = QSvgRenderer(str(ICONS / "lora-studio.svg"))
    if not renderer.isValid():
        print(f"{ICONS / 'lora-studio.svg'}: not a valid SVG", file=sys.stderr)
        return 1
    for size in SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        target = ICONS / f"lora-studio-{size}.png"
        image.save(str(target))
        print(f"{target} ({target.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
