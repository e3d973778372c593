"""Labels that arrive before their request (services/label_sink/early.py): pure, explicit `now`."""

from __future__ import annotations

import pytest

from services.label_sink.early import EarlyLabels, Held

LABELS = "al.labels.v1"


def held(request_id: str, offset: int, since: float = 0.0, partition: int = 0) -> Held:
    return Held(request_id, (LABELS, partition), offset, f"record-{offset}", since, partition)


def test_labels_wait_by_request_in_order_and_bound_the_commit() -> None:
    early = EarlyLabels(limit=10, grace_s=5, max_wait_s=60)
    assert early.hold(held("r1", 7)) and early.hold(held("r2", 3)) and early.hold(held("r1", 9))
    assert [h.offset for h in early.waiting("r1")] == [7, 9]
    assert early.oldest((LABELS, 0)) == 3 and early.oldest((LABELS, 1)) is None
    # a forwarded label's floor (frontier.py) is below every label of its partition held
    assert sorted(early.offsets((LABELS, 0))) == [3, 7, 9] and early.offsets((LABELS, 1)) == []
    for h in early.waiting("r2"):
        early.discard(h)
    assert early.oldest((LABELS, 0)) == 7 and len(early) == 2
    assert early.waiting("r2") == []


def test_past_the_limit_a_label_is_refused() -> None:
    early = EarlyLabels(limit=2, grace_s=0, max_wait_s=60)
    assert early.hold(held("a", 1)) and early.hold(held("b", 2))
    assert not early.hold(held("c", 3))
    assert len(early) == 2


def test_a_label_expires_once_its_requests_partition_is_read_past_its_end_and_the_grace() -> None:
    early = EarlyLabels(limit=10, grace_s=5, max_wait_s=60)
    early.hold(held("r", 4, since=100.0))
    ends, read = {0: 50}, {0: 10}
    # The first look samples the end to reach; nothing expires yet.
    assert early.expired(ends, read.get, now=101.0) == []
    assert early.waiting("r")[0].need == 50
    read[0] = 49
    assert early.expired({0: 80}, read.get, now=110.0) == []  # not read that far yet
    read[0] = 50
    assert early.expired({0: 80}, read.get, now=104.0) == []  # within the grace
    (gone, why), = early.expired({0: 80}, read.get, now=105.0)
    assert gone.offset == 4 and "answers no request in partition 0" in why
    assert len(early) == 1  # still waiting until discarded (after its dead letter is queued)
    early.discard(gone)
    assert len(early) == 0


def test_a_label_expires_after_the_longest_wait_whatever_the_requests_topic_does() -> None:
    early = EarlyLabels(limit=10, grace_s=5, max_wait_s=60)
    early.hold(held("r", 4, since=100.0))
    assert early.expired({}, lambda p: None, now=159.0) == []
    (gone, why), = early.expired({}, lambda p: None, now=160.0)
    assert "did not arrive within 60 s" in why


def test_revoked_partitions_forget_their_labels() -> None:
    early = EarlyLabels(limit=10, grace_s=5, max_wait_s=60)
    early.hold(held("r", 4, partition=0))
    early.hold(held("r", 5, partition=1))
    early.forget([(LABELS, 0)])
    assert [h.offset for h in early.waiting("r")] == [5] and len(early) == 1


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        EarlyLabels(limit=0, grace_s=1, max_wait_s=2)
    with pytest.raises(ValueError):
        EarlyLabels(limit=1, grace_s=3, max_wait_s=2)
