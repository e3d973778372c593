"""The selection core: pure Python + numpy, no Kafka, no clock, no global RNG.

Typical use, one state per input partition:

    policy = SelectorPolicy().for_partition(partition, num_partitions)
    state = SelectorState.create(policy, seed=partition)
    batch = PredictionBatch.from_events(events, refs)
    for s in select(state, batch).selected: ...
    checkpoint = state.snapshot()  # JSON-able; SelectorState.from_snapshot(checkpoint, policy)
"""

from services.core.batch import PredictionBatch
from services.core.budget import BudgetPolicy
from services.core.dedupe import DedupePolicy
from services.core.events import InferenceEventLike, PredictionLike
from services.core.eventtime import EventTimePolicy
from services.core.feedback import FeedbackPolicy
from services.core.policy import SelectorPolicy, WarmupPolicy, with_overrides
from services.core.reservoir import ReservoirPolicy
from services.core.selection import STRATEGIES, Selected, Selection
from services.core.selector import SelectorState, select
from services.core.stats import ConfidenceStatsPolicy
from services.core.thresholds import ThresholdPolicy

__all__ = [
    "STRATEGIES",
    "BudgetPolicy",
    "ConfidenceStatsPolicy",
    "DedupePolicy",
    "EventTimePolicy",
    "FeedbackPolicy",
    "InferenceEventLike",
    "PredictionBatch",
    "PredictionLike",
    "ReservoirPolicy",
    "Selected",
    "Selection",
    "SelectorPolicy",
    "SelectorState",
    "ThresholdPolicy",
    "WarmupPolicy",
    "select",
    "with_overrides",
]
