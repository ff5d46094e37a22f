"""The run charts: one pyqtgraph widget per chart, each fed plain data (numpy arrays, lists, the
snapshots of studio.ui.history) through a small `set_...()` method, never a model or a worker.
ChartsPanel (studio.ui.charts_panel) arranges them in tabs and feeds them from a RunHistory."""

from .common import ChartWidget
from .decomposition import DecompositionChart
from .importance import ImportanceChart
from .loss import LossChart
from .optimizer import OptimizerChart
from .ranks import RankChart
from .spectrum import SpectrumChart
from .throughput import ThroughputChart

__all__ = ["ChartWidget", "DecompositionChart", "ImportanceChart", "LossChart", "OptimizerChart", "RankChart",
           "SpectrumChart", "ThroughputChart"]
