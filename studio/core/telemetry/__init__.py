"""What a run reports about itself: the event log (events.py), and the live measurements of its
adapters (monitor.py): singular-value spectra computed from the low-rank factors (spectra.py,
updates.py), per-layer importance, rank allocation and the DoRA paper's magnitude/direction
decomposition."""

from .events import EventLog, Sink, make_event, plain, read_events

__all__ = ["EventLog", "Sink", "make_event", "plain", "read_events"]
