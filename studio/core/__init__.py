"""The Qt-free engine: configs, models, data, variants, training sessions and the event log."""
