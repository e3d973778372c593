"""The retrain trigger a drift fires (rule `drift`, docs/mastery.md "Retrain trigger on drift").

When the scorer's drift report reopens a mastered class, the model's input has changed under a
class it was trusted on: its labels since the previous trigger go to training at once, rather
than when the usual rules next fire. Without such labels there is nothing new to train on and
no trigger is published (a retrain on the same labels gives the same model); the reopening
still gives the class its budget back, so labels of the new distribution come, and the usual
rules fire on them. The trigger cooldown holds for it like for any rule.

Exactly once, like a label's trigger (docs/label-sink.md): the book's row records the
reopening with the drift report's id (`Mastery.drift_due`) before the trigger is published;
the trigger is delivered before the model's state row records the closed batch with that
change's seq (`Ledger.close`, one row). A replay of the drift record after a crash finds the
batch still open and publishes the same trigger (same labels, same trigger_id), or finds the
seq and publishes nothing.
"""

from __future__ import annotations

from typing import Any

from services.core.triggers import Decision, TriggerPolicy, TriggerState
from services.label_sink.mastery import DRIFT, Mastery
from services.label_sink.tables import Ledger

DRIFT_RULE = "drift"


def due_trigger(row: dict[str, Any], mastery: Mastery, ledger: Ledger, policy: TriggerPolicy
                ) -> tuple[int, Decision] | None:
    """(the reopening's seq, the trigger) to publish for the drift record `row` (a `drift_row`,
    applied to the book already), or None: its reopening's trigger is not due (the record
    reopened nothing, or another report's reopening is the latest), was fired and closed
    already, or has no labels to carry. `ledger` must be valid (rebuilt). Query."""
    model_id = row["m"]
    due = mastery.drift_due(model_id, row[DRIFT][0])
    if due is None:
        return None
    seq, detail = due
    if ledger.partition_of(model_id) is None or ledger.drift_fired(model_id) >= seq:
        return None  # no label counted for the model, or fired (and closed) already
    decision = drift_decision(ledger.get(model_id), policy, detail)
    return None if decision is None else (seq, decision)


def drift_decision(state: TriggerState, policy: TriggerPolicy, detail: str) -> Decision | None:
    """The `drift` trigger of the model whose state is `state`: its labels since the last
    trigger; None without any, or within the cooldown (event time: the newest label's
    `labeled_at`, which is also the trigger's `triggered_at`). Query."""
    if state.total == 0 or state.clock is None:
        return None
    if state.last_triggered_at is not None and \
            state.clock - state.last_triggered_at < policy.cooldown_s:
        return None
    return Decision(rule=DRIFT_RULE,
                    detail=f"{detail}; {state.total} new labels since the last trigger",
                    counts=dict(sorted(state.pending.labels.items())), total=state.total,
                    triggered_at=state.clock, ranges=state.ranges())
