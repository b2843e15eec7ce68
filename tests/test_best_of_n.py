"""The best-of-n estimator against brute-force enumeration of every n-subset (ties included)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from syco.core.best_of_n import (
    best_of_n_weights,
    expected_best_of_n,
    expected_best_of_n_batched,
    kl_best_of_n,
    rank_weights,
)
from syco.core.bootstrap import bootstrap_intervals


def brute_force(scores: np.ndarray, values: np.ndarray, n: int) -> float:
    """Mean over all n-subsets of the best sample's value; tied maxima equally likely."""
    total, count = 0.0, 0
    for subset in itertools.combinations(range(len(scores)), n):
        top = max(scores[j] for j in subset)
        winners = [j for j in subset if scores[j] == top]
        total += float(np.mean([values[j] for j in winners]))
        count += 1
    return total / count


@pytest.mark.parametrize("seed", range(40))
def test_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 11))
    # few distinct scores so that ties are common
    scores = rng.integers(0, max(2, k // 2 + 1), size=k).astype(float) if seed % 2 else rng.normal(size=k)
    values = rng.normal(size=k) if seed % 3 else rng.integers(0, 2, size=k).astype(float)
    for n in range(1, k + 1):
        assert expected_best_of_n(scores, values, n) == pytest.approx(brute_force(scores, values, n), abs=1e-12)


def test_small_exact_cases():
    scores, values = np.array([0.1, 0.3, 0.2]), np.array([10.0, 30.0, 20.0])
    assert expected_best_of_n(scores, values, 1) == pytest.approx(20.0)  # the pool mean
    # pairs {10,30},{10,20},{30,20}: best values 30, 20, 30
    assert expected_best_of_n(scores, values, 2) == pytest.approx(80 / 3)
    assert expected_best_of_n(scores, values, 3) == pytest.approx(30.0)  # always the top sample
    # all tied: any n gives the pool mean
    assert expected_best_of_n(np.zeros(4), np.array([1.0, 0, 0, 0]), 3) == pytest.approx(0.25)


def test_rank_weights_sum_to_one_and_match_binomials():
    for k in (1, 5, 16, 1024):
        for n in {1, min(2, k), k // 2 or 1, k}:
            w = rank_weights(k, n)
            assert w.sum() == pytest.approx(1.0, abs=1e-9)
            assert np.all(w[: n - 1] == 0)
    w = rank_weights(6, 3)
    assert w == pytest.approx([math.comb(i - 1, 2) / math.comb(6, 3) for i in range(1, 7)])


def test_batched_equals_per_prompt():
    rng = np.random.default_rng(1)
    scores, values = rng.normal(size=(5, 8)), rng.integers(0, 2, size=(5, 8)).astype(float)
    scores[2, :4] = scores[2, 4]  # a tie group in one row
    got = expected_best_of_n_batched(scores, values, 4)
    assert got == pytest.approx([expected_best_of_n(s, v, 4) for s, v in zip(scores, values)])
    assert best_of_n_weights(scores, 4).sum(axis=1) == pytest.approx(np.ones(5))


def test_bad_inputs():
    with pytest.raises(ValueError, match="1 <= n <= K"):
        expected_best_of_n(np.zeros(3), np.zeros(3), 4)
    with pytest.raises(ValueError, match="NaN or infinity"):
        expected_best_of_n(np.array([0.0, np.nan]), np.zeros(2), 1)
    with pytest.raises(ValueError, match="both be \\[K\\]"):
        expected_best_of_n(np.zeros(3), np.zeros(2), 1)
    with pytest.raises(ValueError, match="values contain NaN"):
        expected_best_of_n_batched(np.zeros((1, 2)), np.array([[0.0, np.nan]]), 1)
    with pytest.raises(ValueError, match="n must be >= 1"):
        kl_best_of_n(0)


def test_kl_best_of_n():
    assert kl_best_of_n(1) == 0.0
    assert kl_best_of_n(2) == pytest.approx(math.log(2) - 0.5)
    assert kl_best_of_n(64) == pytest.approx(math.log(64) - 63 / 64)


def _mean_interval(x: np.ndarray, seed: int = 0) -> list[float]:
    return bootstrap_intervals(lambda idx: {"mean": x[idx].mean()}, len(x), rounds=2000, seed=seed)["mean"]


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_prompts():
    rng = np.random.default_rng(0)
    small, large = rng.integers(0, 2, size=20).astype(float), rng.integers(0, 2, size=2000).astype(float)
    lo, hi = _mean_interval(small, seed=1)
    assert lo <= small.mean() <= hi
    lo2, hi2 = _mean_interval(large, seed=1)
    assert hi2 - lo2 < (hi - lo) / 3
    assert _mean_interval(np.full(7, 0.5)) == [0.5, 0.5]


def test_bootstrap_is_paired_and_skips_undefined_draws():
    """Every statistic of a round reads the same draw: a constant shift has a zero-width interval,
    while each side alone varies; None values leave that draw out; the draws are the seed's."""
    rng = np.random.default_rng(3)
    a = rng.uniform(size=30)
    b = a - 0.25

    def stats(idx: np.ndarray) -> dict[str, float | None]:
        return {"a": a[idx].mean(), "b": b[idx].mean(), "diff": a[idx].mean() - b[idx].mean(),
                "sometimes": None if idx[0] % 2 else 1.0, "never": None}

    ci = bootstrap_intervals(stats, len(a), rounds=300, seed=4)
    assert ci["diff"] == pytest.approx([0.25, 0.25]) and ci["a"][1] - ci["a"][0] > 0.1
    assert ci["sometimes"] == [1.0, 1.0] and "never" not in ci
    # the draws: rounds x n indices from one seeded stream
    expected = a[np.random.default_rng(4).integers(0, len(a), size=(300, len(a)))].mean(axis=1)
    assert ci["a"] == [float(x) for x in np.quantile(expected, [0.025, 0.975])]
    with pytest.raises(ValueError, match="n >= 1"):
        bootstrap_intervals(stats, 0, rounds=10)
