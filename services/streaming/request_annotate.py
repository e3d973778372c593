"""The optional `annotate` object of an annotation request (issue 16): the instances to
annotate, the budget units the request spent and the frames around a suspected switch.
Declared in services.contracts.annotation_request (`ANNOTATE`, `INSTANCE`); this module keeps
the names other code imports."""

from __future__ import annotations

from typing import Any

from services.contracts.annotation_request import ANNOTATE, ANNOTATE_FIELDS, INSTANCE_FIELDS

__all__ = ["ANNOTATE_FIELDS", "INSTANCE_FIELDS", "read_annotate"]

_READ = ANNOTATE.reader(False)


def read_annotate(raw: Any, parent: str) -> dict[str, Any] | None:
    """The checked `annotate` object under `parent` (None when absent or null), as a plain dict
    of JSON values; raises InvalidEvent."""
    return _READ(raw, parent, "annotate")  # type: ignore[no-any-return]
