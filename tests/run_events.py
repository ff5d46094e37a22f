"""What tests read from a run's events: the loss curve as a reader draws it."""

from __future__ import annotations


def curve(events: list[dict]) -> dict[int, float]:
    """The loss curve a reader draws: a resumed run replaces what came after its checkpoint."""
    losses: dict[int, float] = {}
    for e in events:
        if e["type"] == "run_started" and e.get("resumed_from"):
            step = int(e["resumed_from"].rsplit("-", 1)[-1])
            losses = {k: v for k, v in losses.items() if k <= step}
        elif e["type"] == "step":
            losses[e["step"]] = e["loss"]
    return losses
