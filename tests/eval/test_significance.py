"""The paired per-user test behind the report's margins."""

from __future__ import annotations

import numpy as np
import pytest

from peace.eval.significance import paired_test


def test_a_clear_difference_is_significant_and_its_interval_excludes_zero() -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 1, 500)
    a = b + 0.05 + rng.normal(0, 0.02, 500)
    t = paired_test(a, b, seed=0)
    assert t.p_value < 1e-6 and t.low > 0 and t.significant
    assert t.mean == pytest.approx(float((a - b).mean()))
    assert t.users == 500


def test_noise_is_not_significant_and_the_test_is_seeded() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 1, 300), rng.uniform(0, 1, 300)
    t = paired_test(a, b, seed=3)
    assert not t.significant and t.low < 0 < t.high
    assert paired_test(a, b, seed=3) == t
    same = paired_test(a, a)
    assert same.p_value == 1.0 and same.mean == 0.0


def test_unpaired_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="same users"):
        paired_test(np.zeros(3), np.zeros(4))
