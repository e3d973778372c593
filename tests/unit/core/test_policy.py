"""`with_overrides`: nested policy overrides, used by the scorer's ACTIVE_STREAM_SCORER_POLICY and
the benchmark's --policy-json."""

from __future__ import annotations

import pytest

from services.core import SelectorPolicy, with_overrides


def test_nested_overrides_replace_only_what_they_name() -> None:
    base = SelectorPolicy()
    p = with_overrides(base, {"mode": "threshold", "budget": {"share": 0.1},
                              "reservoir": {"window_assets": 20}})
    assert p.mode == "threshold" and p.budget.share == 0.1 and p.reservoir.window_assets == 20
    assert p.budget.labels_per_hour == base.budget.labels_per_hour
    assert p.reservoir.per_class == base.reservoir.per_class
    assert base.mode == "reservoir" and base.budget.share == 0.02  # the base is untouched
    assert with_overrides(base, {}) == base


@pytest.mark.parametrize(("overrides", "message"), [
    ({"nope": 1}, "policy has no field 'nope'"),
    ({"budget": {"nope": 1}}, "policy.budget has no field 'nope'"),
    ({"budget": {"share": 2.0}}, "policy.budget: share must be in [0, 1]"),
    ({"budget": 0.1}, "policy.budget must be an object of settings"),
    ({"mode": "sometimes"}, "policy: bad mode 'sometimes'"),
])
def test_bad_overrides_name_the_path(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        with_overrides(SelectorPolicy(), overrides)
    assert message in str(err.value)
