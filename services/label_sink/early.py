"""Labels that arrive before the request they answer (issue 14, item 2): held, joined when the
request arrives, dead-lettered only once the request cannot come any more.

After a sink outage, or with a fast annotator, a label can be read before its request: the
requests topic is a separate log, read at its own pace. Such a label is held in memory, keyed by
the request id it names. It leaves in one of three ways:

- its request is stored: the label is joined and forwarded as if it had come after it;
- it has waited `grace_s` (wall clock) and the requests partition it would join in has been
  read up to the end that partition had when the label was held (its high watermark, sampled
  on the offset timer after the label arrived): an annotation tool reads the request from that
  log before it sends the label, so a request not found by then is in no partition this worker
  reads (the grace covers a request produced a moment after its label). It is dead-lettered
  with that reason;
- it has waited `max_wait_s` (wall clock), or `limit` labels wait already when it comes:
  dead-lettered with that reason, so memory stays bounded whatever the requests topic does.

Durable without a table: a held label's offset bounds what the sink commits on its partition
(`oldest`), so a restart reads it again and holds it again; labels after it that were already
forwarded are then skipped as replays by the counter (frontier.py: each forwarded label
carries the lowest offset still held, so the held one is counted when it comes).

Pure: no Kafka, no faust, no clock (`now` is an argument).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TP = Hashable  # (topic, partition)


@dataclass
class Held:
    """One label waiting: the record (as the handlers take it), where it is, since when, and
    the end of its requests partition to read before giving up (None: not sampled yet)."""

    request_id: str
    tp: TP  # the label's (topic, partition)
    offset: int
    record: Any
    since: float
    partition: int  # the requests partition its request would be in (the label's number)
    need: int | None = None


class EarlyLabels:
    """Commands: `hold`, `discard`, `forget`; `expired` also samples each new label's `need`.
    Queries: `waiting`, `all`, `oldest`, `__len__`."""

    def __init__(self, limit: int, grace_s: float, max_wait_s: float) -> None:
        if limit < 1 or not 0 <= grace_s <= max_wait_s or max_wait_s <= 0:
            raise ValueError("limit must be >= 1 and 0 <= grace_s <= max_wait_s, max_wait_s > 0")
        self.limit, self.grace_s, self.max_wait_s = limit, grace_s, max_wait_s
        self._by_request: dict[str, list[Held]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def hold(self, held: Held) -> bool:
        """Keep `held`; False (nothing kept) when `limit` labels wait already."""
        if self._count >= self.limit:
            return False
        self._by_request.setdefault(held.request_id, []).append(held)
        self._count += 1
        return True

    def waiting(self, request_id: str) -> list[Held]:
        """The labels waiting for `request_id`, in the order they came (they still wait:
        `discard` each once it is forwarded, so the commit never passes it before)."""
        return list(self._by_request.get(request_id, ()))

    def discard(self, held: Held) -> None:
        """`held` no longer waits (forwarded or dead-lettered)."""
        self._drop(lambda h: h is held)

    def all(self) -> list[Held]:
        return [h for items in self._by_request.values() for h in items]

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions revoked: their labels are read again by their next owner."""
        gone = set(tps)
        self._drop(lambda h: h.tp in gone)

    def oldest(self, tp: TP) -> int | None:
        """The lowest offset of a label of `tp` waiting (the commit must not pass it)."""
        offsets = self.offsets(tp)
        return min(offsets) if offsets else None

    def offsets(self, tp: TP) -> list[int]:
        """The offsets of the labels of `tp` waiting (a forwarded label's floor, frontier.py)."""
        return [h.offset for items in self._by_request.values() for h in items if h.tp == tp]

    def expired(self, ends: Mapping[int, int], frontier: Callable[[int], int | None],
                now: float) -> list[tuple[Held, str]]:
        """The labels whose request cannot come any more, with the reason (they still wait:
        `discard` each once it is dead-lettered).

        `ends[p]`: the high watermark of requests partition p, read now; `frontier(p)`: the
        next offset the sink will process there (None: not known). A label first seen here
        samples its `need` from `ends`; it expires once `frontier` reaches it."""
        out: list[tuple[Held, str]] = []
        for items in self._by_request.values():
            for h in items:
                if now - h.since >= self.max_wait_s:
                    out.append((h, f"its request {h.request_id!r} did not arrive within "
                                   f"{self.max_wait_s:g} s (early_label_max_wait_s)"))
                    continue
                if h.need is None:
                    h.need = ends.get(h.partition)
                    continue  # sampled now: the reads up to it are still to come
                reached = frontier(h.partition)
                if now - h.since >= self.grace_s and reached is not None and reached >= h.need:
                    out.append((h, f"request_id {h.request_id!r} answers no request in partition "
                                   f"{h.partition} of the requests topic, read up to offset "
                                   f"{h.need} (its end after the label arrived)"))
        return out

    def _drop(self, leaving: Callable[[Held], bool]) -> None:
        for request_id in list(self._by_request):
            kept = [h for h in self._by_request[request_id] if not leaving(h)]
            self._count -= len(self._by_request[request_id]) - len(kept)
            if kept:
                self._by_request[request_id] = kept
            else:
                del self._by_request[request_id]
