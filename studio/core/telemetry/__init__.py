"""What a run reports about itself: the event log (events.py), and later spectra, importance,
rank allocation and DoRA decomposition computed from the live adapters."""

from .events import EventLog, Sink, make_event, plain, read_events

__all__ = ["EventLog", "Sink", "make_event", "plain", "read_events"]
