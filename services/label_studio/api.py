"""A small client for the Label Studio HTTP API: only the calls the bridge makes.

Shapes measured on Label Studio 1.23.2 (shared/research/label-studio-findings.md): `GET /api/tasks`
answers an object with `tasks` and `total`, pages past the end are a 404, filters and ordering
go in a `query` JSON parameter (data-manager syntax), and task ids are reused on SQLite after a
deletion, so tasks are found by the request id in their data, never by id.

Errors: `Unavailable` when Label Studio cannot answer now (connection refused or reset, timeout,
5xx, 429): the caller retries later. `Refused` for any other 4xx: a configuration problem (bad
token, missing project) or a bug, not something a retry fixes.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from services.streaming.settings import Secret

# Request ids are looked up in chunks whose filters keep the URL under this many characters
# (servers commonly refuse request lines past 8 KiB).
_MAX_QUERY_CHARS = 6000
PAGE_SIZE = 100
_TRANSIENT = frozenset({429, 500, 502, 503, 504})


class Unavailable(RuntimeError):
    """Label Studio cannot answer now; retry later."""


class Refused(RuntimeError):
    """Label Studio refused the call (4xx other than 429): `status` and its answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail[:500]}")
        self.status = status


Observer = Callable[[str, float, bool], None]


class LabelStudioClient:
    """`Authorization: Token <token>`. `observe(operation, seconds, ok)` is told of every call
    (metrics). Thread-safe: each call opens its own connection."""

    def __init__(self, url: str, token: Secret, timeout_s: float,
                 observe: Observer | None = None) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s
        self._observe = observe or (lambda *_: None)

    def call(self, operation: str, method: str, path: str, body: Any = None,
             params: dict[str, Any] | None = None) -> Any:
        """One API call; the parsed JSON answer (None for an empty one)."""
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Token {self._token.reveal()}",
            "Content-Type": "application/json", "Accept": "application/json"})
        started = time.perf_counter()
        ok = False
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                payload = response.read()
            ok = True
        except urllib.error.HTTPError as exc:
            ok = exc.code not in _TRANSIENT  # it answered: up, if not pleased
            detail = exc.read().decode(errors="replace")
            if exc.code in _TRANSIENT:
                raise Unavailable(f"{operation}: HTTP {exc.code}") from None
            raise Refused(exc.code, f"{operation}: {detail}") from None
        except OSError as exc:  # URLError, timeouts, refused and reset connections
            reason = getattr(exc, "reason", exc)
            raise Unavailable(f"{operation}: {reason}") from None
        finally:
            self._observe(operation, time.perf_counter() - started, ok)
        try:
            return json.loads(payload) if payload else None
        except ValueError:  # e.g. a proxy's HTML error page: not Label Studio answering
            raise Unavailable(f"{operation}: the answer is not JSON") from None

    # -- projects and webhooks -----------------------------------------------------------------

    def health(self) -> bool:
        try:
            answer = self.call("health", "GET", "/health")
        except (Unavailable, Refused):
            return False
        return isinstance(answer, dict) and answer.get("status") == "UP"

    def project(self, project_id: int) -> dict[str, Any]:
        return dict(self.call("get_project", "GET", f"/api/projects/{project_id}"))

    def update_project(self, project_id: int, changes: dict[str, Any]) -> None:
        self.call("update_project", "PATCH", f"/api/projects/{project_id}", changes)

    def webhooks(self, project_id: int) -> list[dict[str, Any]]:
        return list(self.call("list_webhooks", "GET", "/api/webhooks",
                              params={"project": project_id}))

    def save_webhook(self, webhook_id: int | None, spec: dict[str, Any]) -> None:
        if webhook_id is None:
            self.call("create_webhook", "POST", "/api/webhooks", spec)
        else:
            self.call("update_webhook", "PATCH", f"/api/webhooks/{webhook_id}", spec)

    # -- tasks ---------------------------------------------------------------------------------

    def find_tasks(self, project_id: int, request_ids: Iterable[str]) -> dict[str, int]:
        """request id -> task id of the project's tasks whose `data.request_id` is one of
        `request_ids` (one query per chunk of ids)."""
        found: dict[str, int] = {}
        for chunk in _chunks(list(dict.fromkeys(request_ids))):
            query = {"filters": {"conjunction": "or", "items": [
                {"filter": "filter:tasks:data.request_id", "operator": "equal",
                 "type": "String", "value": rid} for rid in chunk]}}
            for task in self._pages("find_tasks", project_id, query, "task_only"):
                rid = (task.get("data") or {}).get("request_id")
                if rid in chunk:
                    found[rid] = int(task["id"])
        return found

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        answer = self.call("import_tasks", "POST", f"/api/projects/{project_id}/import", tasks,
                           params={"return_task_ids": "true"})
        return [int(i) for i in answer.get("task_ids", [])]

    def annotated_tasks(self, project_id: int, updated_after: str | None
                        ) -> Iterator[dict[str, Any]]:
        """Tasks with at least one annotation (annotations included), optionally only those
        updated after the ISO-8601 time `updated_after`."""
        items: list[dict[str, Any]] = [{"filter": "filter:tasks:total_annotations",
                                        "operator": "greater", "type": "Number", "value": 0}]
        if updated_after is not None:
            items.append({"filter": "filter:tasks:updated_at", "operator": "greater",
                          "type": "Datetime", "value": updated_after})
        query = {"filters": {"conjunction": "and", "items": items}}
        yield from self._pages("annotated_tasks", project_id, query, "all")

    def expired_tasks(self, project_id: int, before: float) -> Iterator[dict[str, Any]]:
        """Unannotated tasks whose `data.event_timestamp` is before `before` (epoch s)."""
        query = {"filters": {"conjunction": "and", "items": [
            {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number",
             "value": 0},
            {"filter": "filter:tasks:data.event_timestamp", "operator": "less", "type": "Number",
             "value": before}]}}
        yield from self._pages("expired_tasks", project_id, query, "task_only")

    def task(self, task_id: int) -> dict[str, Any]:
        return dict(self.call("get_task", "GET", f"/api/tasks/{task_id}"))

    def update_task_meta(self, task_id: int, meta: dict[str, Any]) -> None:
        self.call("update_task", "PATCH", f"/api/tasks/{task_id}", {"meta": meta})

    def delete_task(self, task_id: int) -> None:
        try:
            self.call("delete_task", "DELETE", f"/api/tasks/{task_id}")
        except Refused as exc:
            if exc.status != 404:  # deleted already: what we wanted
                raise

    def _pages(self, operation: str, project_id: int, query: dict[str, Any],
               fields: str) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            try:
                answer = self.call(operation, "GET", "/api/tasks", params={
                    "project": project_id, "fields": fields, "page": page,
                    "page_size": PAGE_SIZE, "query": json.dumps(query)})
            except Refused as exc:
                if exc.status == 404 and page > 1:  # past the last page
                    return
                raise
            tasks = answer.get("tasks", []) if isinstance(answer, dict) else []
            yield from tasks
            if len(tasks) < PAGE_SIZE or page * PAGE_SIZE >= int(answer.get("total", 0)):
                return
            page += 1


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for rid in ids:
        cost = len(urllib.parse.quote(rid)) + 120  # the filter item around the id, encoded
        if chunk and size + cost > _MAX_QUERY_CHARS:
            yield chunk
            chunk, size = [], 0
        chunk.append(rid)
        size += cost
    if chunk:
        yield chunk
