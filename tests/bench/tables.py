"""Plain-text tables for the benchmark scripts (first column left, the rest right-aligned)."""

from __future__ import annotations

import sys
from typing import Callable


def table(title: str, headers: list[str], rows: list[list], note: str = "",
          cell: Callable[[object], str] = str) -> None:
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print(f"\n{title}")
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    print(line)
    print("-" * len(line))
    for r in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if note:
        print(note)
    sys.stdout.flush()
