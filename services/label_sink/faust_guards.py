"""Narrow guards around faust-streaming 0.15 / aiokafka 0.14, each for one measured defect.

Installed once per process by the label sink (`install`), before its faust App is built. Each
guard replaces one faust method with a wrapper that calls the original; nothing else in faust is
touched. They stay when faust is upgraded until a test shows the defect gone (docs/label-sink.md).

1. **A topic faust creates is visible before the group is joined** (`_wait_until_visible`).
   faust creates `<app>-labels-by-model` and its changelog topics right before it subscribes.
   On Apache Kafka (KRaft) CreateTopics returns once the controller has committed the topic; the
   broker's metadata cache learns it a few milliseconds later. A join inside that window makes
   the group leader's assignor ignore the topic ("Ignoring missing topic"), so nobody consumes it
   until aiokafka's next metadata refresh (5 minutes): measured on a freshly started broker, the
   first sink of a new app id counted nothing for over 60 s. The wrapper waits until a metadata
   request lists the topic.

2. **Commits follow the sink's own record of what it processed** (`commit_offsets`). faust
   derives the offset to commit from the offsets its streams acknowledged, filling "gaps" it saw
   in fetched offsets. After a rebalance it can drop buffered records while its read position has
   already passed them (see `services/label_sink/sequence.py`); the acks then start past a hole,
   and faust either never commits that partition again (its commit stays stuck at the hole) or
   commits past records nobody processed. With this guard the offset committed for a partition
   the sink guards is exactly the next offset the sink must see there (`OffsetGuard.frontier`),
   so a commit never passes an unprocessed record and never lags behind a processed one.

3. **No commit after a refused record** (`refuse_commits_if`). faust flushes the producer, then
   commits, and a record the broker refused during the flush is only logged. The wrapper around
   faust's commit asks the sink's delivery guard first (services/label_sink/delivery.py) and
   commits nothing once a record was refused.

4. **A static member that stops leaves the group** (`leave_group_on_stop`). aiokafka never sends
   LeaveGroup for a member with a `group.instance.id` (KIP-345: a static member that restarts
   takes its partitions back without a rebalance). A worker that stops for good (scale-in, a
   Recreate deploy whose new pod has another name) then held its partitions until its session
   expired: 13 s measured with the 10-s session. With this guard a worker that stops (SIGTERM,
   or after a crash it caught) leaves the group by its member id, as a dynamic member does, and
   the others take its partitions at the next heartbeat; one killed (SIGKILL, OOM) leaves
   nothing, and its restart with the same instance id takes its partitions back at once.

5. **A refused permission is reported, not a crash** (`report_denials_to`). When the broker
   refuses a fetch (READ on a topic, or the group) or a commit for want of an ACL, aiokafka
   raises an authorization error; faust's fetcher and committer crashed the whole worker on it
   (exit 1, and a crash loop under Kubernetes). The wrappers hand the error to the sink instead,
   which stops its worker and holds until the permission is back (worker.py, issue 20); the
   fetch returns no records meanwhile, and the commit commits nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import aiokafka.errors
from aiokafka.consumer import group_coordinator
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)

# How long a freshly created topic may take to appear in the broker's metadata. Measured: a few
# ms on a one-node KRaft broker; a loaded multi-broker cluster may take seconds. A broker that
# restarts meanwhile answers nothing (the look-up reports "not visible") until it serves again:
# 44-59 s in the chaos soak on a loaded 2-core machine, hence 120 s. Past it start-up fails
# loudly rather than joining a group that would ignore the topic.
TOPIC_VISIBLE_TIMEOUT_S = 120.0
# Pause between two metadata requests while waiting for a topic (cheap: one request each).
_METADATA_POLL_S = 0.05

_FLAG = "_active_stream_guarded"

# The sink's commit source: the topics it guards, and for a (topic, partition) of theirs the
# offset to commit (None: commit nothing). None until the sink installs one.
CommitSource = tuple[frozenset[str], Callable[[tuple[str, int]], int | None]]
_commit_source: list[CommitSource | None] = [None]
# Whether the broker's metadata lists a topic (a blocking call). Our own client, not faust's:
# a metadata request on faust's aiokafka client while it creates another topic was measured to
# stall that creation until aiokafka's request timeout.
_topic_visible: list[Callable[[str], bool] | None] = [None]
# Whether a produced record was refused (then nothing is committed any more).
_refused: list[Callable[[], bool] | None] = [None]
# Whether a static member leaves the group when it stops (guard 4).
_leave_on_stop: list[bool] = [False]
# Who hears of an authorization error (guard 5): called with one line naming the permission, from
# faust's consumer thread. None: faust's own behaviour (the worker crashes).
_on_denied: list[Callable[[str], None] | None] = [None]
# After a refused fetch, wait this long before the next: faust would ask again at once, in a
# loop, while the worker stops.
_DENIED_FETCH_PAUSE_S = 1.0
DENIED = (aiokafka.errors.TopicAuthorizationFailedError,
          aiokafka.errors.GroupAuthorizationFailedError,
          aiokafka.errors.ClusterAuthorizationFailedError)


def denial(exc: BaseException, operation: str) -> str | None:
    """One line naming the permission an authorization error says is missing (`operation` on
    the topic(s) it names, or READ on the group), or None when `exc` is not one."""
    if not isinstance(exc, DENIED):
        return None
    what = exc.args[0] if exc.args else "?"
    names = ", ".join(sorted(what)) if isinstance(what, set | frozenset | list) else str(what)
    if isinstance(exc, aiokafka.errors.GroupAuthorizationFailedError):
        return f"not authorized to READ group {names}"
    if isinstance(exc, aiokafka.errors.ClusterAuthorizationFailedError):
        return f"not authorized on the cluster ({exc!r})"
    to = " to" if operation == "WRITE" else ""
    return f"not authorized to {operation}{to} topic {names}"


async def wait_until_visible(visible: Callable[[str], bool], topic: str, timeout_s: float) -> None:
    """Wait until `visible(topic)` (a blocking metadata look-up, run in a thread) is true; raise
    TimeoutError past `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await asyncio.to_thread(visible, topic):
        if loop.time() > deadline:
            raise TimeoutError(f"topic {topic} created but not in the broker's metadata after "
                               f"{timeout_s:.0f}s")
        await asyncio.sleep(_METADATA_POLL_S)


def _wrap_create_topic(original: Callable[..., Any]) -> Callable[..., Any]:
    async def create_topic(self: Any, owner: Any, client: Any, topic: str, *args: Any,
                           **kwargs: Any) -> None:
        await original(self, owner, client, topic, *args, **kwargs)
        visible = _topic_visible[0]
        if visible is not None and not owner.should_stop:
            await wait_until_visible(visible, topic, TOPIC_VISIBLE_TIMEOUT_S)

    return create_topic


def _wrap_committable(original: Callable[..., Any]) -> Callable[..., Any]:
    def committable(self: Any, tps: Iterable[Any]) -> dict[Any, int]:
        source = _commit_source[0]
        if source is None:
            return dict(original(self, tps))
        guarded, frontier = source
        tps = list(tps)
        rest = [tp for tp in tps if tp.topic not in guarded]
        out = dict(original(self, rest)) if rest else {}
        for tp in tps:
            if tp.topic not in guarded:
                continue
            # faust's own bookkeeping for a guarded partition is not used: drop what it holds,
            # or its lists of acked offsets and gaps would grow forever.
            offset = frontier((tp.topic, tp.partition))
            _forget_below(self, tp, offset)
            committed = self._committed_offset[tp]
            if offset is not None and (committed is None or offset > committed):
                out[tp] = offset
        return out

    return committable


def _forget_below(consumer: Any, tp: Any, offset: int | None) -> None:
    acked = consumer._acked.get(tp)
    if acked:
        keep = [o for o in acked if offset is not None and o >= offset]
        dropped = set(acked) - set(keep)
        acked[:] = keep
        consumer._acked_index[tp].difference_update(dropped)
    gap = consumer._gap.get(tp)
    if gap:
        if offset is None:
            gap.clear()
        else:
            gap.chop(0, offset)


def _wrap_commit(original: Callable[..., Any]) -> Callable[..., Any]:
    async def commit(self: Any, offsets: Any) -> bool:
        # faust awaited the producer's flush just before: let the delivery callbacks of the
        # records it flushed run, so a refusal among them is seen now, not after the commit.
        await asyncio.sleep(0)
        refused = _refused[0]
        if refused is not None and refused():
            log.error("offsets not committed: a record the sink produced was refused")
            return False
        return bool(await original(self, offsets))

    return commit


def _wrap_leave_group(original: Callable[..., Any]) -> Callable[..., Any]:
    async def leave_group(self: Any) -> None:
        instance = self._group_instance_id
        # Only when the consumer closes (`_closing` is set first): an idle static member
        # (aiokafka's max.poll.interval check) keeps aiokafka's behaviour.
        if not _leave_on_stop[0] or instance is None or not self._closing.done():
            await original(self)
            return
        # aiokafka sends LeaveGroup only for a dynamic member: look like one for this call. The
        # broker accepts a leave by member id from a static member (LeaveGroup v1).
        self._group_instance_id = None
        try:
            await original(self)
        finally:
            self._group_instance_id = instance

    return leave_group


def _wrap_fetch(original: Callable[..., Any]) -> Callable[..., Any]:
    async def fetch_records(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, *args, **kwargs)
        except DENIED as exc:
            report = _on_denied[0]
            if report is None:
                raise
            report(denial(exc, "READ") or repr(exc))
            await asyncio.sleep(_DENIED_FETCH_PAUSE_S)
            return {}

    return fetch_records


def _wrap_crash(original: Callable[..., Any]) -> Callable[..., Any]:
    async def crash(self: Any, reason: BaseException) -> None:
        # faust's consumer thread crashes on an exception from a commit: an authorization
        # error is reported instead (the commit already returned False: nothing committed).
        report = _on_denied[0]
        line = denial(reason, "READ")
        if report is None or line is None:
            await original(self, reason)
            return
        report(line)

    return crash


def report_denials_to(report: Callable[[str], None] | None) -> None:
    """Hand authorization errors of fetches and commits to `report` (process-wide; None:
    faust's own behaviour)."""
    _on_denied[0] = report


def leave_group_on_stop(leave: bool) -> None:
    """Whether a static member leaves its group when its consumer stops (process-wide)."""
    _leave_on_stop[0] = leave


def refuse_commits_if(refused: Callable[[], bool] | None) -> None:
    """Commit nothing while `refused()` is true (process-wide; None: always commit)."""
    _refused[0] = refused


def set_commit_source(source: CommitSource | None) -> None:
    """For the topics `source` names, commit what it says and nothing else (process-wide;
    None: faust's own offsets everywhere)."""
    _commit_source[0] = source


def install(topic_visible: Callable[[str], bool]) -> None:
    """Install every guard. Idempotent; process-wide. `topic_visible(name)` says whether the
    broker's metadata lists a topic (blocking; called in a worker thread)."""
    _topic_visible[0] = topic_visible
    # A flag per patched method, set in the class's own __dict__: a subclass's flag read through
    # inheritance must not make us skip patching it.
    for cls, name, wrap in ((faust_aiokafka.Transport, "_really_create_topic", _wrap_create_topic),
                            (faust_consumer.ThreadDelegateConsumer, "_commit", _wrap_commit),
                            (faust_consumer.Consumer, "_filter_committable_offsets",
                             _wrap_committable),
                            (group_coordinator.GroupCoordinator, "_maybe_leave_group",
                             _wrap_leave_group),
                            (faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records",
                             _wrap_fetch),
                            (faust_aiokafka.AIOKafkaConsumerThread, "crash", _wrap_crash)):
        flag = f"{_FLAG}_{name}"
        if not cls.__dict__.get(flag, False):
            setattr(cls, name, wrap(getattr(cls, name)))
            setattr(cls, flag, True)
