"""The ablations `--ablate` runs beside the default policy: each changes one part of it.

Names say what changes; values are `SelectorPolicy` overrides (as --policy-json takes them) on
top of the run's own policy. docs/label-efficiency.md reports what each part costs and gains.
"""

from __future__ import annotations

from typing import Any

ABLATIONS: dict[str, dict[str, Any]] = {}
