"""Best-of-n from one pool of K samples, exactly (no resampling).

Sort a prompt's K samples by preference-model score, ascending. The best of a uniformly random
n-subset is the sample of rank i (1-based) with probability C(i-1, n-1) / C(K, n): the subset must
contain it and n-1 of the i-1 samples below it. The expectation of any per-sample statistic under
best-of-n is then a weighted mean of the pool. Samples with equal scores are ordered uniformly at
random, so by linearity each of them gets the mean weight of the ranks the tie group spans.
"""

from __future__ import annotations

import math

import numpy as np


def kl_best_of_n(n: int) -> float:
    """Nominal KL(best-of-n || policy) = log(n) - (n - 1) / n (Gao et al. 2022; an upper bound)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def rank_weights(k: int, n: int) -> np.ndarray:
    """P(rank i is the best of a random n-subset of k), for ranks 1..k ascending; sums to 1."""
    if not 1 <= n <= k:
        raise ValueError(f"need 1 <= n <= K, got n={n}, K={k}")
    i = np.arange(1, k + 1, dtype=np.float64)
    # log C(i-1, n-1) - log C(k, n) through lgamma: exact enough in float64 for any pool size
    lg = np.vectorize(math.lgamma)
    with np.errstate(invalid="ignore"):
        log_w = (lg(i) - lg(np.maximum(i - n + 1, 1.0)) - math.lgamma(n)
                 - (math.lgamma(k + 1) - math.lgamma(n + 1) - math.lgamma(k - n + 1)))
    return np.where(i >= n, np.exp(log_w), 0.0)


def best_of_n_weights(scores: np.ndarray, n: int) -> np.ndarray:
    """Per-sample probability of being selected by best-of-n, in the pool's own order, ties shared.

    `scores`: [K] or [B, K]; returns the same shape, each row summing to 1.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim not in (1, 2) or scores.shape[-1] == 0:
        raise ValueError(f"scores must be [K] or [B, K] with K >= 1, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    rows = scores.reshape(-1, scores.shape[-1])
    by_rank = rank_weights(rows.shape[1], n)
    out = np.empty_like(rows)
    for b, row in enumerate(rows):
        order = np.argsort(row, kind="stable")
        sorted_scores = row[order]
        w = by_rank.copy()
        # spread the weight of a tie group evenly over its members
        starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        ends = np.r_[starts[1:], len(row)]
        for s, e in zip(starts, ends):
            if e - s > 1:
                w[s:e] = w[s:e].mean()
        out[b, order] = w
    return out.reshape(scores.shape)


def expected_best_of_n_batched(scores: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per-prompt E[value of the best-of-n sample]; `scores`, `values`: [B, K]; returns [B].

    NaN values (e.g. a sample the judge could not grade) are not allowed: drop those samples first.
    """
    scores, values = np.asarray(scores), np.asarray(values, dtype=np.float64)
    if scores.ndim != 2 or values.shape != scores.shape:
        raise ValueError(f"scores and values must both be [B, K], got {scores.shape} and {values.shape}")
    if np.isnan(values).any():
        raise ValueError("values contain NaN: drop ungraded samples before the estimate")
    return np.array([w @ v for w, v in zip(best_of_n_weights(scores, n), values)], dtype=np.float64)


def expected_best_of_n(scores: np.ndarray, values: np.ndarray, n: int) -> float:
    """E[value of the best-of-n sample] for one prompt; `scores`, `values`: [K]."""
    scores, values = np.asarray(scores), np.asarray(values, dtype=np.float64)
    if scores.ndim != 1 or values.shape != scores.shape:
        raise ValueError(f"scores and values must both be [K], got {scores.shape} and {values.shape}")
    return float(expected_best_of_n_batched(scores[None], values[None], n)[0])
