"""Class-balanced flushes (`ReservoirPolicy.balance`, off by default): while the picks of a
model's predicted class are too few to say much about it, a window's flush grants that class's
entries before the others.

The per-class statistics the default leans on (the class sub-budgets, feedback's agreement
rates) are thin at the start of a stream, and a powered draw of a window follows wherever the
model is most unsure, which may be a few classes. Under `balance = k`, each (model, predicted
class) counts the picks made for it (any arm: exploration, the weighted draw, the control arm);
at a flush, the entries of classes with fewer than k picks go first, one per class in turn (in
the draw's order within a class), each class up to its shortfall; the rest follow in the draw's
order. Once every class has k picks the flush is the default's.

Counts change only where a pick is granted, at its position in the stream, so decisions stay
invariant to batch boundaries; they live in the model's book (registry.ModelBook.picked) and its
snapshot. Pure: no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from services.core.selection import Selected
from services.core.state import SelectorMemory

ClassOf = Callable[[Any], tuple[str, str | None]]
"""(model id, predicted class or None) of a reservoir payload."""


def count(state: SelectorMemory, picks: Iterable[Selected]) -> None:
    """Count granted picks toward their model's predicted class, under a balanced flush only
    (else nothing is counted and snapshots keep their form). Command."""
    if not state.policy.reservoir.balance:
        return
    for sel in picks:
        book = state.books.get(sel.model_id)
        cls = None if book is None or sel.class_name is None else book.index.get(sel.class_name)
        if book is not None and cls is not None:
            book.picked[cls] += 1


def order(state: SelectorMemory, entries: Sequence[tuple[float, Any]], class_of: ClassOf
          ) -> list[tuple[float, Any]]:
    """`entries` (a drained window, in the draw's order) reordered for a balanced flush: the
    entries of classes short of `balance` picks first, round-robin over those classes (round r
    takes each short class's r-th entry, in the given order), at most its shortfall per
    class; then every other entry in the given order. The identity when
    balance is 0 or no class is short. Query."""
    k = state.policy.reservoir.balance
    if not k:
        return list(entries)
    short: list[tuple[int, int]] = []  # (round, position in entries) of the entries put first
    rest: list[int] = []
    taken: dict[tuple[str, str], int] = {}
    for i, (_, payload) in enumerate(entries):
        model_id, name = class_of(payload)
        book = state.books.get(model_id)
        cls = None if book is None or name is None else book.index.get(name)
        if book is None or name is None or cls is None:
            rest.append(i)
            continue
        r = taken.get((model_id, name), 0)
        if r < k - int(book.picked[cls]):
            short.append((r, i))
            taken[(model_id, name)] = r + 1
        else:
            rest.append(i)
    short.sort()
    return [entries[i] for _, i in short] + [entries[i] for i in rest]
