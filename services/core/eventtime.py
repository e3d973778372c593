"""Event time that one record cannot break: the partition's watermark, and the skew bound that
keeps an event stamped far ahead of the stream out of the selector.

The selector's clocks (budget refills, reservoir windows, dedupe expiry, stats buckets) run on
the partition's *watermark*, never on an event's own time, and the watermark moves only when two
consecutive events agree: after event i it is max(W, min(t_{i-1}, t_i)). One event stamped in
year 2283 therefore moves nothing; its successor, stamped today, pulls the pair's minimum back.
Late events never move it either (max). Before the first event it is -inf; the first event has
no pair and sets it (which is why the first event is judged by its record timestamp, below).

An event is refused before it reaches the selector (the scorer dead-letters it as
`timestamp_out_of_range`) when it is more than `max_skew_s` ahead of every reference known for
it: the watermark in force before it, and its record's Kafka timestamp (CreateTime, set by the
producer's client when it sends, or LogAppendTime). Both, because either alone refuses good
events: the watermark after a partition sat idle for longer than the skew, the record timestamp
in pipelines that stamp records with an older source time. An event ahead of both cannot be
right about "now"; accepted, it would carry its time into the stats and, if selected, into its
request's `event_timestamp` (the label sink prunes requests by it). A partition's first event
has only its record timestamp to go by (no record timestamp either: accepted). Events behind the
watermark are accepted: backfills and replays are legitimate, and a late event moves no clock.

Deterministic: a function of the events' times in stream order, the record timestamps stored with
them and the state (`last_time`, `watermark`), never the wall clock; independent of batching.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EventTimePolicy:
    """`max_skew_s`: how far (seconds of event time) an event may be ahead of its partition's
    watermark and of its record's timestamp before it is refused; None turns the check off (the
    watermark stays robust all the same)."""

    max_skew_s: float | None = 3600.0

    def __post_init__(self) -> None:
        if self.max_skew_s is not None and not self.max_skew_s > 0:
            raise ValueError("max_skew_s must be > 0 (or None: no check)")


def watermarks(times: np.ndarray, last_time: float | None, watermark: float) -> np.ndarray:
    """The watermark after each of `times` (event seconds, stream order), given the time of the
    event before them (`last_time`, None if none) and the watermark before them. Pure."""
    if times.shape[0] == 0:
        return times.astype(np.float64)
    prev = np.empty_like(times, dtype=np.float64)
    prev[0] = times[0] if last_time is None else last_time
    prev[1:] = times[:-1]
    return np.maximum.accumulate(np.maximum(np.minimum(prev, times), watermark))


def too_far_ahead(policy: EventTimePolicy, times: np.ndarray, last_time: float | None,
                  watermark: float, stamp: Callable[[int], float] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(refused, reference) per event of `times` (stream order): refused when it is more than
    max_skew_s ahead of every reference known for it -- the watermark in force before it (none
    before the first event), its record timestamp `stamp(i)` (NaN or no `stamp`: not known) --
    the refused events themselves not counting; `reference` is the one the reason names (NaN
    for events not refused). Pure; `stamp` is asked only about events ahead of the watermark (or
    without one), so the usual batch costs one vectorised pass."""
    n = times.shape[0]
    refused = np.zeros(n, dtype=bool)
    reference = np.full(n, np.nan)
    skew = policy.max_skew_s
    if skew is None or n == 0:
        return refused, reference
    keep, start = np.arange(n), 0  # events before `start` (of `keep`) are settled
    while keep.shape[0]:
        t = times[keep].astype(np.float64)
        before = np.empty(t.shape[0])
        before[0] = watermark
        before[1:] = watermarks(t, last_time, watermark)[:-1]
        known = np.isfinite(before)
        ahead = ~known | (t > before + skew)  # no watermark yet: the record timestamp decides
        ahead[:start] = False
        if not ahead.any():
            break
        j = int(np.argmax(ahead))
        own = math.nan if stamp is None else stamp(int(keep[j]))
        if t[j] <= own + skew or (not known[j] and math.isnan(own)):  # within, or no reference
            start = j + 1
            continue
        refused[keep[j]] = True
        reference[keep[j]] = before[j] if known[j] else own
        keep, start = np.delete(keep, j), j
    return refused, reference
