"""syco.analysis.regression: the Bayesian logistic regression of section 4.1. Planted coefficients are
recovered, the posterior agrees with an independent maximum-likelihood fit (statsmodels) under a
weak prior, the prior grid picks a scale by holdout log-likelihood (and its MAP agrees with
statsmodels' L1 fit), the reporting transform is exact on known draws, bad input names the bad entry,
and an unconverged fit says so, naming features. Small draw counts keep it fast (~30 s)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.special import expit

from syco.analysis.regression import (
    DEFAULT_GRID,
    Posterior,
    choose_prior_scale,
    configure_jax,
    fit_posterior,
    holdout_accuracy,
    map_estimate,
    predict_proba,
    summarize,
)

# before jax's first computation in this process (if another test got there first, chains run sequentially)
configure_jax(4)

TRUE = np.array([1.5, -0.8, 0.0, 0.0, 0.0])
NAMES = ["planted_pos", "planted_neg", "noise_a", "noise_b", "noise_c"]


def simulate(n: int, alpha: np.ndarray, seed: int, continuous: bool = False, intercept: float = 0.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(alpha))) if continuous else rng.integers(-1, 2, size=(n, len(alpha))).astype(float)
    y = (rng.random(n) < expit(X @ alpha + intercept)).astype(np.int64)
    return X, y


@pytest.fixture(scope="module")
def planted():
    X, y = simulate(2000, TRUE, seed=1)
    return X, y, fit_posterior(X, y, prior_scale=1.0, draws=500, warmup=300, seed=0)


def test_planted_coefficients_recovered(planted):
    X, y, post = planted
    assert post.alpha.shape == (4, 500, 5) and post.r_hat.shape == (5,) and post.ess.shape == (5,)
    lo, hi = np.quantile(post.alpha.reshape(-1, 5), [0.025, 0.975], axis=0)
    assert np.all((lo < TRUE) & (TRUE < hi)), (lo, hi)
    assert lo[0] > 0 and hi[1] < 0  # the planted ones exclude 0
    assert post.r_hat.max() < 1.01 and post.ess.min() > 400 and post.divergences == 0
    assert summarize(post, NAMES)["warnings"] == []
    # ternary features over 5 columns: the 2,000 signed rows collapse to at most 2 * 3^5, same likelihood
    assert post.settings["unique_signed_rows"] < 2 * 3**5 and post.settings["pairs"] == 2000
    assert post.seconds > 0
    acc = holdout_accuracy(post, *simulate(2000, TRUE, seed=2)[:2])
    assert 0.65 < acc < 0.85  # the Bayes rate of this design is ~0.74


@pytest.mark.parametrize("continuous", [False, True], ids=["ternary", "continuous"])
def test_weak_prior_matches_maximum_likelihood(continuous, planted):
    sm = pytest.importorskip("statsmodels.api")
    X, y = (planted[0], planted[1]) if not continuous else simulate(2000, TRUE, seed=3, continuous=True)
    post = fit_posterior(X, y, prior_scale=10.0, draws=500, warmup=300, seed=1)
    mle = sm.Logit(y, X).fit(disp=0).params  # no intercept column: the same model, by maximum likelihood
    mean = post.alpha.reshape(-1, X.shape[1]).mean(axis=0)
    assert np.abs(mean - mle).max() < 0.05, (mean, mle)


def test_prior_grid_chooses_by_holdout_loglik():
    alpha = np.zeros(20)
    alpha[:3] = [0.8, -0.6, 0.5]
    Xt, yt = simulate(1500, alpha, seed=4)
    Xh, yh = simulate(1500, alpha, seed=5)
    choice = choose_prior_scale(Xt, yt, Xh, yh)
    assert choice.scale in DEFAULT_GRID and np.isfinite(choice.scale)
    assert sorted(choice.table) == sorted(DEFAULT_GRID) and all(np.isfinite(v) for v in choice.table.values())
    assert choice.table[choice.scale] == max(choice.table.values())
    assert choice.table[0.003] < choice.table[choice.scale] - 1e-3  # a very strong prior fits the holdout worse
    assert "MAP" in choice.criterion
    assert np.all(choice.map_alpha[0.003] == 0)  # 1/b outweighs every gradient at 0: all shrunk to 0
    # the MAP is the L1-penalized fit: statsmodels' (its own solver) agrees to its tolerance
    sm = pytest.importorskip("statsmodels.api")
    for b in (0.01, 0.1, 1.0):
        ref = sm.Logit(yt, Xt).fit_regularized(method="l1", alpha=1.0 / b, disp=0, acc=1e-10, trim_mode="off")
        assert np.abs(map_estimate(Xt, yt, b) - ref.params).max() < 1e-3, b


def test_prior_grid_ties_go_to_the_larger_scale():
    # features that never vary say nothing: every b gives alpha = 0 and the same holdout fit
    X, y = np.zeros((50, 2)), np.arange(50) % 2
    choice = choose_prior_scale(X, y, X, y, grid=(0.1, 1.0, 3.0))
    assert choice.scale == 3.0 and len(set(choice.table.values())) == 1


def test_summary_transform_on_known_draws():
    # one chain of 401 draws: every reported quantile falls on a draw (400 * q is an integer)
    a = np.linspace(-2.0, 2.0, 401)
    b = np.linspace(0.0, 1.0, 401)[::-1]  # a + b = 0.5 + 0.75 a draw by draw: increasing in a, quantiles known
    rng = np.random.default_rng(0)
    order = rng.permutation(401)
    post = Posterior.from_draws(np.stack([a[order], b[order]], axis=-1)[None])
    s = summarize(post, ["a", "b"], combine={"a_plus_b": ["a", "b"]})
    ca = s["coefficients"]["a"]
    assert ca["alpha"]["median"] == pytest.approx(0.0, abs=1e-12)
    assert ca["alpha"]["q2.5"] == pytest.approx(-1.9) and ca["alpha"]["q97.5"] == pytest.approx(1.9)
    assert ca["alpha"]["q25"] == pytest.approx(-1.0) and ca["alpha"]["q75"] == pytest.approx(1.0)
    for k, v in ca["alpha"].items():
        if k in ("mean", "sd"):
            continue
        assert ca["p"][k] == pytest.approx(expit(v))  # sigmoid quantiles are sigmoid of alpha quantiles
        assert ca["p"][k] == pytest.approx(np.quantile(expit(a), {"q2.5": 0.025, "q25": 0.25, "median": 0.5,
                                                                    "q75": 0.75, "q97.5": 0.975}[k]))
    c = s["coefficients"]["a_plus_b"]
    assert c["kind"] == "combined" and c["of"] == ["a", "b"]
    assert c["alpha"]["median"] == pytest.approx(0.5)
    assert c["alpha"]["q97.5"] == pytest.approx(0.5 + 0.75 * 1.9) and c["alpha"]["q2.5"] == pytest.approx(0.5 - 0.75 * 1.9)
    assert c["p"]["median"] == pytest.approx(expit(0.5))  # sigmoid of the per-draw sum, not a sum of sigmoids
    assert c["p"]["q97.5"] == pytest.approx(expit(0.5 + 0.75 * 1.9))
    with pytest.raises(ValueError, match="unknown feature"):
        summarize(post, ["a", "b"], combine={"x": ["a", "zzz"]})
    with pytest.raises(ValueError, match="2 distinct feature names"):
        summarize(post, ["a"])
    # predict_proba averages sigmoid over draws (the posterior predictive), not sigmoid of the mean
    p = predict_proba(post, np.array([[1.0, 0.0], [0.0, 0.0]]))
    assert p[0] == pytest.approx(expit(a).mean()) and p[1] == 0.5


def test_bad_input_is_named():
    X, y = simulate(20, TRUE, seed=6)
    Xn = X.copy()
    Xn[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"X\[7, 2\] is nan \(row 7, column 2"):
        fit_posterior(Xn, y, 1.0)
    Xn[7, 2], Xn[3, 4] = 0.0, np.inf
    with pytest.raises(ValueError, match=r"row 3, column 4"):
        fit_posterior(Xn, y, 1.0)
    y_bad = y.copy()
    y_bad[5] = 2
    with pytest.raises(ValueError, match=r"y\[5\] is 2: labels must be 0 or 1"):
        fit_posterior(X, y_bad, 1.0)
    with pytest.raises(ValueError, match=r"y\[0\] is 'A'"):
        fit_posterior(X, ["A"] * 20, 1.0)
    with pytest.raises(ValueError, match="one 0/1 label per row"):
        fit_posterior(X, y[:-1], 1.0)
    with pytest.raises(ValueError, match="at least one pair"):
        fit_posterior(np.zeros((0, 5)), np.zeros(0), 1.0)
    with pytest.raises(ValueError, match="2-D"):
        fit_posterior(X[:, 0], y, 1.0)
    with pytest.raises(ValueError, match="prior_scale"):
        fit_posterior(X, y, 0.0)
    with pytest.raises(ValueError, match=r"y_holdout\[1\]"):
        choose_prior_scale(X, y, X[:3], [0, 5, 1])
    with pytest.raises(ValueError, match="features"):
        choose_prior_scale(X, y, X[:, :2], y)


def test_unconverged_fit_warns_naming_features(caplog):
    X, y = simulate(300, TRUE, seed=7)
    with caplog.at_level(logging.WARNING, logger="syco.analysis.regression"):
        post = fit_posterior(X, y, prior_scale=1.0, draws=10, warmup=5, seed=3)
        s = summarize(post, NAMES)
    assert s["warnings"] and any(w.startswith(tuple(NAMES)) for w in s["warnings"])
    assert any("R-hat" in w or "ESS" in w for w in s["warnings"])
    assert any("planted_pos" in r.getMessage() or "noise" in r.getMessage() for r in caplog.records)


def test_zero_column_warns_and_intercept(caplog):
    X, y = simulate(1000, np.array([1.0, 0.0]), seed=8, intercept=0.7)
    X[:, 1] = 0.0
    with caplog.at_level(logging.WARNING, logger="syco.analysis.regression"):
        post = fit_posterior(X, y, prior_scale=1.0, draws=400, warmup=300, intercept=True)
    assert any("[1]" in r.getMessage() and "0 on every pair" in r.getMessage() for r in caplog.records)
    assert post.intercept is not None and post.intercept.shape == (4, 400)
    lo, hi = np.quantile(post.intercept, [0.025, 0.975])
    assert lo < 0.7 < hi
    # the all-zero column's posterior is its Laplace(0, 1) prior: median ~0, IQR = 2 ln 2
    q25, q75 = np.quantile(post.alpha[..., 1], [0.25, 0.75])
    assert abs((q75 - q25) - 2 * np.log(2)) < 0.25
    assert "intercept" in summarize(post, ["x", "zero"])


def test_configure_jax_after_first_computation_warns(planted, caplog):
    import jax

    have = jax.local_device_count()
    with caplog.at_level(logging.WARNING, logger="syco.analysis.regression"):
        assert configure_jax(have + 1) is False  # too late: jax has run (the planted fit)
    assert "after jax's first computation" in caplog.text
    assert configure_jax(have) is True
