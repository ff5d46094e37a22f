"""How the studio writes durations for people (the CLI's progress bar and the window's ETA)."""

from __future__ import annotations


def hms(seconds: float) -> str:
    """'07:05', or '1:02:03' past an hour; negative counts as 0."""
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
