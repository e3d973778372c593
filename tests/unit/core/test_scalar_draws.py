"""ScalarDraws gives numpy's own scalar draws, bit for bit, and leaves the generator where
numpy's calls would (so the control arm's checkpointed generator is unchanged)."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.scalar_draws import ScalarDraws


def _script(seed: int, n: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 3, 5, 7, 16, 1000, 2**31 + 11, 2**32 - 1, 2**32]
    return [("random", 0) if rng.random() < 0.4 else ("integers", sizes[int(rng.integers(10))])
            for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_draws_and_final_state_equal_numpy(seed: int) -> None:
    script = _script(seed, 3000)
    ref = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 5])))
    mine = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 5])))
    ref.integers(7)  # start with a buffered 32-bit half
    mine.integers(7)
    for chunk in range(3):
        draws = ScalarDraws(mine)
        for kind, n in script[chunk * 1000:(chunk + 1) * 1000]:
            if kind == "random":
                assert draws.random() == ref.random()
            else:
                assert draws.integers(n) == int(ref.integers(n)), n
        draws.close()
        draws.close()
        assert mine.bit_generator.state == ref.bit_generator.state
    assert mine.random() == ref.random() and mine.integers(3) == ref.integers(3)


def test_unused_draws_leave_the_generator_alone() -> None:
    rng = np.random.default_rng(4)
    before = rng.bit_generator.state
    ScalarDraws(rng).close()
    assert rng.bit_generator.state == before


def test_other_bit_generators_are_served_by_numpy() -> None:
    ref, mine = (np.random.Generator(np.random.MT19937(3)) for _ in range(2))
    draws = ScalarDraws(mine)
    assert [draws.random(), draws.integers(5)] == [ref.random(), int(ref.integers(5))]
    draws.close()
    assert mine.bit_generator.state["state"]["pos"] == ref.bit_generator.state["state"]["pos"]
