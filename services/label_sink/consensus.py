"""Tiers in the label sink: the consensus join, expert escalation and cost per tier and class.

For every request that carries a `tier` (docs/tiers.md) the sink keeps one row in its `tiers`
table, keyed by request_id, on the request's partition (co-partitioned with the `requests`
table, so a request's labels meet its row on one worker, in offset order):

    {"n": tier, "u": cost of one label, "c": class or None, "m": model_id, "t": event time,
     "q": partition, and for consensus: "k": labels wanted, "w": quorum,
     "l": [[label_id, annotator_id, answer], ...], "d": None | "agreed" | "escalated",
     "a": decided answer or None, "r": the request (for its escalation; dropped once decided)}

`join` is the pure decision: a label joins its consensus row once (by label_id; a second label
of the same annotator is not independent and is ignored), the row is `agreed` as soon as
`quorum` labels give the same answer, and `escalated` when all `k` are in without it. An
escalation asks for an `expert` request (same asset, its own deterministic request_id, the
`tier.escalated_from` link), produced and delivered BEFORE the row records the decision, so a
crash in between produces the same request again (never loses it); replaying a label that
joined already changes nothing. Rows live as long as requests (`request_ttl_s`, pruned with
them), and a table of rows is bounded by the requests table's own bound.

A consensus request counts as ONE label towards triggers, feedback and estimates: the label that
decided it (`decides`); its other labels are votes, in the trigger's manifest but not counted
(an escalated request's k labels are all votes: its expert's label counts).

Every label whose request had a tier is counted once (after the labels table's dedupe) in
`label_sink_tier_cost_units_total{model_id, tier, class}`: its request's cost per label; the
label that decided a consensus request, once, in `label_sink_consensus_decisions_total{model_id,
class, outcome}`. Both count on the worker that counts the model's labels, and bound the
classes of a model like its counts: the first 1,024 names, later ones as `__other__`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson

from services.core.agreement import ClassCap
from services.core.tiers import TierPolicy
from services.label_sink.metrics import LabelSinkMetrics
from services.streaming.annotation_requests import ANNOTATION_REQUEST
from services.streaming.events import (
    AnnotationRequest,
    Label,
    RequestTier,
    encode_annotation_request,
)

log = logging.getLogger(__name__)

# The stored consensus request (a row's `r`, JSON the sink wrote itself) read back into its
# typed form through the declaration's checks.
_READ_REQUEST = ANNOTATION_REQUEST.reader(False)

Row = dict[str, Any]
OUTCOMES = ("duplicate", "pending", "agreed", "escalated", "late")


ANCHORED_TIERS: frozenset[str] = frozenset({"review"})
"""Tiers whose answer is anchored on the model's pre-label (the annotator is shown it): their
labels are counted, but not compared with the prediction (`compared_outcomes`)."""


def compared_outcomes(tier: str | None, outcomes: list[Any]) -> list[Any]:
    """The agreement outcomes a label of a request of `tier` contributes: none for an anchored
    tier, else `outcomes` (None: an untiered request). A review confirms the pre-label it is
    shown unless the annotator catches the error, so counting reviews would inflate a class's
    human-model agreement, and the tier rule widens the review band of a class whose agreement
    is high (services/core/tiers.py `review_band`): a loop feeding itself. Pure."""
    return [] if tier in ANCHORED_TIERS else outcomes


def answer_of(label: Label) -> str:
    """A label's answer as a canonical string: its (instance, class) pairs, sorted, boxes
    ignored (two humans never draw the same box; they agree on what is there)."""
    pairs = sorted((a.instance_id or "", a.label) for a in label.annotations)
    return orjson.dumps(pairs).decode()


def expert_request_id(request_id: str) -> str:
    """The deterministic request_id of the expert request refereeing `request_id`."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(b"expert\x1f" + request_id.encode())
    return digest.hexdigest()


def tier_row(request: AnnotationRequest, partition: int, quorum: int) -> Row | None:
    """The tiers-table row of a request, None for an untiered one."""
    tier = request.tier
    if tier is None:
        return None
    row: Row = {"n": tier.name, "u": tier.cost / tier.annotators, "c": request.reason.class_name,
                "m": request.model_id, "t": request.event_timestamp, "q": partition}
    if tier.name == "consensus":
        row.update(k=tier.annotators, w=min(quorum, tier.annotators), l=[], d=None, a=None,
                   r=request.to_dict())
    return row


def join(row: Row, label_id: str, annotator_id: str, answer: str) -> tuple[Row, str]:
    """(the row after this label, outcome in OUTCOMES). Pure: `row` is not changed.

    `duplicate`: this label (or another of its annotator) joined already; `late`: the row was
    decided before it; `pending`: still waiting; `agreed` / `escalated`: this label decided."""
    if any(lid == label_id or who == annotator_id for lid, who, _ in row["l"]):
        return row, "duplicate"
    if row["d"] is not None:
        return row, "late"
    labels = [*row["l"], [label_id, annotator_id, answer]]
    out = {**row, "l": labels}
    votes: dict[str, int] = {}
    for _, _, given in labels:
        votes[given] = votes.get(given, 0) + 1
    best = max(votes.items(), key=lambda kv: (kv[1], kv[0]))
    if best[1] >= row["w"]:
        out.update(d="agreed", a=best[0])
        out.pop("r", None)
        return out, "agreed"
    if len(labels) >= row["k"]:
        out.update(d="escalated")
        out.pop("r", None)  # the caller escalates from `row`, which still holds it
        return out, "escalated"
    return out, "pending"


def expert_request(row: Row, request_id: str, policy: TierPolicy) -> AnnotationRequest:
    """The expert request refereeing the consensus request `request_id` (its row `row`, whose
    `r` is the consensus request as `AnnotationRequest.to_dict` wrote it): the same request
    with its own request_id, the expert priority and tier. Write it with
    `encode_annotation_request`."""
    consensus = _READ_REQUEST(dict(row["r"]))
    return replace(consensus, request_id=expert_request_id(request_id),
                   priority=policy.expert_priority,
                   tier=RequestTier("expert", 1, policy.request_cost("expert"),
                                    escalated_from=request_id))


def decided_by(row: Row, label_id: str) -> str | None:
    """`agreed` or `escalated` when `label_id` is the label that decided the consensus row
    `row` (the last to join it), else None. Query."""
    if row["n"] != "consensus" or row["d"] is None or not row["l"]:
        return None
    return str(row["d"]) if row["l"][-1][0] == label_id else None


class ConsensusHook:
    """The sink's tier handling, called from three places of app.py (each a no-op for requests
    and labels without a tier). `table` is the faust Table `tiers`; `send(request)` produces an
    expert request and returns once it is delivered."""

    def __init__(self, policy: TierPolicy, table: Any, metrics: LabelSinkMetrics,
                 send: Callable[[bytes, bytes], Awaitable[None]]) -> None:
        self.policy, self.table, self.metrics, self.send = policy, table, metrics, send
        self.names: dict[str, ClassCap] = {}  # model -> its class series (`count`)

    def on_request(self, request: AnnotationRequest, partition: int) -> None:
        """Store the row of a tiered request (a replayed request keeps its row's votes)."""
        row = tier_row(request, partition, self.policy.agreement_quorum)
        if row is not None and request.request_id not in self.table:
            self.table[request.request_id] = row

    async def on_label(self, label: Label
                       ) -> tuple[str, float, str | None, str | None] | None:
        """Join a label to its request's row: (tier, cost of the label, class, decision) for
        the forwarded row, None for a label whose request had no tier. Escalates a disagreeing
        consensus. `decision` is `agreed` or `escalated` for the label that decided its
        consensus request (also when that label is read again: the row says so), else None;
        `count` counts it once, after the labels table's dedupe."""
        row = self.table.get(label.request_id) if label.request_id else None
        if row is None:
            return None
        if row["n"] == "consensus":
            new, outcome = join(row, label.label_id, label.annotator_id, answer_of(label))
            if outcome == "escalated":
                request = expert_request(row, label.request_id or "", self.policy)
                # Delivered before the row says so: a crash in between escalates again, with
                # the same request_id, instead of never (module docstring).
                await self.send(request.asset_id.encode(), encode_annotation_request(request))
                log.info("consensus on %s disagreed: expert request %s", label.request_id,
                         request.request_id[:12])
            if new is not row:
                self.table[label.request_id] = new
            row = new
        return row["n"], row["u"], row["c"], decided_by(row, label.label_id)

    def decides(self, label: Label) -> bool:
        """Whether `label` counts as a label (towards triggers, feedback, estimates): any label
        but a consensus vote. Of a consensus request's labels only the one that made it
        `agreed` counts, standing for the decision, also when it is replayed; the others, and
        all k of an escalated one (its expert's label counts instead), are votes. Call after
        `on_label`. So a consensus request counts as one decided label, not as k."""
        row = self.table.get(label.request_id) if label.request_id else None
        if row is None or row["n"] != "consensus":
            return True
        return row["d"] == "agreed" and bool(row["l"]) and row["l"][-1][0] == label.label_id

    def count(self, model_id: str, row: Row) -> None:
        """Cost of a counted label (after the labels table's dedupe), by tier and class, and the
        consensus decision it made. The class series of a model are capped like its counts
        (agreement.ClassCap: past the cap, `__other__`), so hostile class names cannot grow
        them; the cap is this worker's own (the series' names only, not persisted)."""
        tier = row.get("z")
        if tier is not None:
            cap = self.names.setdefault(model_id, ClassCap())
            name = cap.name(tier[2]) if tier[2] else ""
            self.metrics.tier_cost.labels(model_id, tier[0], name).inc(tier[1])
            self.metrics.tier_labels.labels(tier[0]).inc()
            if tier[0] == "consensus":
                # Both outcomes' series from the request's first vote on, at 0: a series born
                # at 1 hides its first increase from increase() (ConsensusEscalationsHigh).
                for outcome in ("agreed", "escalated"):
                    self.metrics.consensus.labels(model_id, name, outcome)
            if len(tier) > 3 and tier[3] is not None:  # 3 items from a sink before it
                self.metrics.consensus.labels(model_id, name, tier[3]).inc()
