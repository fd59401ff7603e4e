"""The paired per-user test behind the report's margins."""

from __future__ import annotations

import numpy as np
import pytest

from peace.eval import significance
from peace.eval.significance import BOOTSTRAP_SAMPLES, domain_mean_test, paired_test


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


@pytest.mark.parametrize(
    "n, block_elements", [(1, None), (7, None), (300, None), (300, 64), (300, 1000)]
)
def test_the_interval_is_that_of_one_resample_at_a_time(
    n: int, block_elements: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resamples drawn in blocks (of one resample, of three, of all) are the draws of one
    resample at a time: a report's intervals do not depend on how the bootstrap is computed."""
    if block_elements:
        monkeypatch.setattr(significance, "BLOCK_ELEMENTS", block_elements)
    rng = np.random.default_rng(n)
    a, b = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    draw = np.random.default_rng(5)
    diff = a - b
    means = [diff[draw.integers(0, n, n)].mean() for _ in range(BOOTSTRAP_SAMPLES)]
    low, high = np.quantile(means, [0.025, 0.975])
    t = paired_test(a, b, seed=5)
    assert (t.low, t.high) == (float(low), float(high))
    assert t.low < t.high or n == 1


def test_unpaired_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="same users"):
        paired_test(np.zeros(3), np.zeros(4))


def test_the_mean_over_domains_weighs_each_domain_alike_and_tests_it() -> None:
    rng = np.random.default_rng(2)
    # a large domain where a is behind by 0.02 and a small one where it is ahead by 0.2:
    # pooled over users a is behind, over domains it is ahead
    big_b = rng.uniform(0, 1, 2000)
    big_a = big_b - 0.02 + rng.normal(0, 0.01, 2000)
    small_b = rng.uniform(0, 1, 100)
    small_a = small_b + 0.2 + rng.normal(0, 0.01, 100)
    t = domain_mean_test([(big_a, big_b), (small_a, small_b)], seed=0)
    pooled = np.concatenate([big_a - big_b, small_a - small_b]).mean()
    assert pooled < 0 < t.mean
    assert t.mean == pytest.approx(((big_a - big_b).mean() + (small_a - small_b).mean()) / 2)
    assert t.significant and t.low > 0 and t.users == 2100
    assert domain_mean_test([(big_a, big_b), (small_a, small_b)], seed=0) == t


def test_the_mean_over_domains_of_noise_is_not_significant() -> None:
    rng = np.random.default_rng(1)
    pairs = [(rng.uniform(0, 1, n), rng.uniform(0, 1, n)) for n in (300, 500)]
    t = domain_mean_test(pairs, seed=1)
    assert not t.significant and t.p_value > 0.05 and t.low < t.mean < t.high
    # under the null hypothesis about one draw in twenty is called significant
    draws = [[(rng.uniform(0, 1, n), rng.uniform(0, 1, n)) for n in (40, 60)] for _ in range(60)]
    rate = np.mean([domain_mean_test(d, seed=k).p_value < 0.05 for k, d in enumerate(draws)])
    assert rate <= 0.15
    same = domain_mean_test([(a, a) for a, _ in pairs])
    assert same.mean == 0.0 and same.p_value == 1.0
    with pytest.raises(ValueError, match="same users"):
        domain_mean_test([(np.zeros(3), np.zeros(4))])


def test_the_report_says_when_the_two_tests_disagree() -> None:
    from peace.eval.report.wins import verdict_text
    from peace.eval.significance import PairedTest

    # many small gains and a few large losses: the ranks favour a, the mean does not
    diff = np.r_[np.full(400, 0.01), np.full(20, -0.2)]
    t = paired_test(diff, np.zeros_like(diff), seed=0)
    assert t.p_value < 0.05 and t.low < 0 < t.high and not t.significant
    text = verdict_text(t)
    assert text.startswith("not significant, the tests disagree: the Wilcoxon test finds")
    assert f"p = {t.p_value:.2g}" in text and "420 users" in text
    other = verdict_text(PairedTest(-0.01, 0.32, -0.02, -0.002, 861))
    assert "the interval of the mean excludes 0 but the Wilcoxon test finds no difference" in other
    assert verdict_text(PairedTest(0.0, 0.4, -0.01, 0.01, 10)).startswith(
        "not significant: p = 0.4"
    )
    assert verdict_text(PairedTest(0.05, 1e-4, 0.02, 0.08, 10)).startswith("significant: p = ")
