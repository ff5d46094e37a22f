"""The Qt-free engine: configs, models, data, variants, training sessions and the event log."""

from . import offline_bnb as _offline_bnb

_offline_bnb.install()
