"""What the bridge does over Label Studio's API between batches: mark tasks with the labels
produced for them, catch annotations whose webhook was lost, and remove expired tasks.

- **Marks.** Each task's `meta.active_stream_labels` maps annotation id -> the label_id produced
  for its current version. A pass skips what is marked, so a restarted bridge does not produce
  every label of the project again. (A crash between producing a label and marking it produces
  that label again: the same label_id, which the label sink counts once.)
- **Reconciliation.** Tasks with annotations, updated since the previous pass (Label Studio's own
  `updated_at`, less a margin, so the bridge's clock does not matter); the first pass after a
  start looks at every annotated task.
- **Expiry.** Unannotated tasks whose request's event time is older than the request TTL are
  deleted: the label sink would no longer join their labels.
"""

from __future__ import annotations

import logging
import queue
import time
from datetime import UTC, datetime, timedelta

from services.label_studio.api import LabelStudioClient, Refused
from services.label_studio.labels import BadAnnotation, Skip, label_id, to_label
from services.label_studio.metrics import BridgeMetrics
from services.label_studio.settings import BridgeSettings
from services.label_studio.webhook import WebhookHandler
from services.label_studio.writer import LabelWriter

log = logging.getLogger(__name__)

MARKS = "active_stream_labels"
# A task updated while a pass reads the pages may carry an updated_at a little older than the
# newest one the pass saw: the next pass looks back this far behind it.
_LOOK_BACK = timedelta(seconds=60)


class Reconciler:
    """Its methods raise `Unavailable` (Label Studio down: try again later) and
    `DeliveryFailed` (the broker: the same); nothing is marked that was not produced."""

    def __init__(self, settings: BridgeSettings, client: LabelStudioClient, labels: LabelWriter,
                 webhooks: WebhookHandler, metrics: BridgeMetrics) -> None:
        self.settings, self.client, self.labels = settings, client, labels
        self.webhooks, self.metrics = webhooks, metrics
        self.pending: queue.SimpleQueue[tuple[int, int, str]] = queue.SimpleQueue()
        self._since: str | None = None

    def mark_later(self, task_id: int, annotation_id: int, label: str) -> None:
        """For the webhook threads: the mark is written by `apply_marks` on the main thread (a
        write from inside the webhook call could wait on Label Studio's own database lock)."""
        self.pending.put((task_id, annotation_id, label))

    def apply_marks(self) -> None:
        while True:
            try:
                task_id, annotation_id, label = self.pending.get_nowait()
            except queue.Empty:
                return
            try:
                task = self.client.task(task_id)
                meta = dict(task.get("meta") or {})
                marks = dict(meta.get(MARKS) or {})
                marks[str(annotation_id)] = label
                self.client.update_task_meta(task_id, {**meta, MARKS: marks})
            except Refused as exc:
                if exc.status != 404:  # a deleted task needs no mark
                    raise
            except Exception:
                self.pending.put((task_id, annotation_id, label))  # again next time
                raise

    def reconcile(self) -> int:
        """One pass; returns the labels it produced."""
        s = self.settings
        produced, newest = 0, self._since
        for task in self.client.annotated_tasks(s.project_id, self._since):
            updated = task.get("updated_at")
            if isinstance(updated, str) and (newest is None or updated > newest):
                newest = updated
            produced += self._task(task)
        if newest is not None:
            self._since = _minus(newest, _LOOK_BACK)
        self.metrics.reconciles.inc()
        return produced

    def _task(self, task: dict) -> int:
        meta = dict(task.get("meta") or {})
        marks = dict(meta.get(MARKS) or {})
        produced, changed = 0, False
        for annotation in task.get("annotations") or ():
            ann_id, updated = annotation.get("id"), annotation.get("updated_at")
            if type(ann_id) is not int or not isinstance(updated, str):
                continue
            lid = label_id(self.settings.project_id, ann_id, updated)
            if marks.get(str(ann_id)) == lid:
                continue
            try:
                value = to_label(self.settings.project_id, annotation, task,
                                 self.settings.empty_class)
            except Skip:
                continue
            except BadAnnotation as exc:
                # Dead-lettered once, then marked so later passes leave it.
                self.webhooks.dead_letter_annotation(annotation, task, exc)
            else:
                if self.labels.write(lid, str(task["data"]["asset_id"]), value):
                    produced += 1
                    self.metrics.labels.labels("reconcile").inc()
            marks[str(ann_id)] = lid
            changed = True
        if changed:
            self.client.update_task_meta(int(task["id"]), {**meta, MARKS: marks})
        if produced:
            log.info("reconciliation produced %d label(s) of task %s", produced, task.get("id"))
        return produced

    def expire(self) -> int:
        """Delete the expired unannotated tasks; returns how many."""
        cutoff = time.time() - self.settings.request_ttl_s
        expired = [int(t["id"]) for t in self.client.expired_tasks(self.settings.project_id,
                                                                   cutoff)]
        for task_id in expired:
            self.client.delete_task(task_id)
            self.metrics.expired.inc()
        if expired:
            log.info("removed %d expired task(s)", len(expired))
        return len(expired)


def _minus(iso: str, delta: timedelta) -> str:
    """`iso` minus `delta`, written as Label Studio's filters take it: UTC with a `Z` (an
    explicit `+00:00` makes its task query fail with HTTP 500, measured on 1.23.2)."""
    try:
        moment = datetime.fromisoformat(iso) - delta
    except ValueError:
        return iso
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
