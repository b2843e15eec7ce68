"""The paper-scale Bayesian logistic regression (section 4.1): syco's fit_posterior against a bare
numpyro NUTS script, side by side, on the same data.

Data: --rows pairs x --features features with {-1, 0, +1} values drawn at random, a few planted
nonzero coefficients (the paper's sizes of effect: up to ~6 points of preference probability),
labels drawn from the model. Both sample the same posterior (Laplace(0, --prior-scale) prior, no
intercept), 4 chains x --draws after --warmup, and each fit runs in a process of its own so that its
time includes jax's compilation (jax caches compiled code in-process). The bare script is the
textbook model as a user would first write it, `alpha ~ Laplace(0, b)`, `Bernoulli(logits=X @
alpha)`, MCMC(NUTS, num_chains=4) with numpyro's default chain_method ("parallel", which numpyro
turns to "sequential" when jax has one CPU device, as it does unless told otherwise; printed);
`--bare-devices` gives it the CPU devices too (the informed baseline). Runs alternate syco, bare,
bare, syco, ... and the medians are compared; R-hat and bulk ESS are computed the same way for both
(syco.analysis.regression.r_hat / bulk_ess), and the medians of the two posteriors are compared.

    python bench/bayes_logistic.py                    # 15,000 x 23, 4 x 1,500 draws, 2 rounds
    python bench/bayes_logistic.py --bare-devices --rounds 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from worker import report, run_worker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PLANTED = [0.25, -0.2, 0.15, 0.1, -0.05]  # sigmoid(0.25) = 0.562: the paper's largest effects, ~6 points


def data(args: argparse.Namespace):
    import numpy as np

    rng = np.random.default_rng(args.seed)
    X = rng.integers(-1, 2, size=(args.rows, args.features)).astype(np.float64)
    alpha = np.zeros(args.features)
    alpha[: len(PLANTED)] = PLANTED[: args.features]
    y = (rng.random(args.rows) < 1.0 / (1.0 + np.exp(-(X @ alpha)))).astype(np.int64)
    return X, y


def run_syco(args: argparse.Namespace) -> dict:
    from syco.analysis.regression import configure_jax, fit_posterior

    configure_jax(args.chains)  # what an entry point does first thing
    X, y = data(args)
    start = time.perf_counter()
    post = fit_posterior(X, y, args.prior_scale, chains=args.chains, draws=args.draws, warmup=args.warmup,
                         seed=args.seed)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "alpha": post.alpha.tolist(), "divergences": post.divergences,
            "chain_method": post.settings["chain_method"]}


def run_bare(args: argparse.Namespace) -> dict:
    if args.bare_devices:
        import numpyro

        numpyro.set_host_device_count(args.chains)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    X, y = data(args)
    F = X.shape[1]
    b = args.prior_scale

    def model(X, y):
        alpha = numpyro.sample("alpha", dist.Laplace(0.0, b).expand([F]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=X @ alpha), obs=y)

    start = time.perf_counter()
    mcmc = MCMC(NUTS(model), num_warmup=args.warmup, num_samples=args.draws, num_chains=args.chains,
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(args.seed), jnp.asarray(X), jnp.asarray(y))
    alpha = np.asarray(mcmc.get_samples(group_by_chain=True)["alpha"], dtype=np.float64)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "alpha": alpha.tolist(),
            "divergences": int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum()),
            "chain_method": mcmc.chain_method}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["syco", "bare"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rows", type=int, default=15_000)
    ap.add_argument("--features", type=int, default=23)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=1500)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--prior-scale", type=float, default=0.01, help="the paper's Laplace scale")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bare-devices", action="store_true", help="give the bare script the CPU devices too")
    args = ap.parse_args()
    if args.worker:
        r = (run_syco if args.worker == "syco" else run_bare)(args)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        r["cpu_seconds"] = ru.ru_utime + ru.ru_stime  # the whole process: imports and data too
        report(r)
        return

    import numpy as np

    from syco.analysis.regression import bulk_ess, r_hat

    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                   if k not in ("worker", "rounds", "bare_devices")] + (["--bare-devices"] * args.bare_devices)
    load = [os.getloadavg()[0]]
    results: dict[str, list[dict]] = {"syco": [], "bare": []}
    medians: dict[str, np.ndarray] = {}
    for rnd in range(args.rounds):
        for who in (("syco", "bare") if rnd % 2 == 0 else ("bare", "syco")):
            r = run_worker(__file__, who, passthrough)
            alpha = np.asarray(r.pop("alpha"))
            r.update(max_r_hat=float(r_hat(alpha).max()), min_ess=float(bulk_ess(alpha).min()))
            r["ess_per_s"] = r["min_ess"] / r["seconds"]
            medians[who] = np.median(alpha.reshape(-1, alpha.shape[-1]), axis=0)
            sds = alpha.reshape(-1, alpha.shape[-1]).std(axis=0)
            results[who].append(r)
            load.append(os.getloadavg()[0])
            print(f"round {rnd + 1} {who:4s}: {r['seconds']:6.1f} s (process CPU {r['cpu_seconds']:5.1f} s)  "
                  f"max R-hat {r['max_r_hat']:.4f}  min bulk ESS {r['min_ess']:6.0f}  ESS/s {r['ess_per_s']:6.0f}  "
                  f"divergences {r['divergences']}  chain_method {r['chain_method']}", flush=True)

    med = {w: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "cpu_seconds", "max_r_hat", "min_ess",
                                                                 "ess_per_s")} for w, rs in results.items()}
    print(f"\n{args.rows} pairs x {args.features} features, Laplace(0, {args.prior_scale}), {args.chains} chains x "
          f"{args.draws} draws after {args.warmup} warm-up, {args.rounds} rounds, compilation included; "
          f"{os.cpu_count()} CPUs, 1-min load average {min(load):.2f}-{max(load):.2f} (the benchmark's own included)")
    print(f"{'':6s}{'seconds':>9s}{'CPU s':>8s}{'max R-hat':>11s}{'min ESS':>9s}{'ESS/s':>8s}  chain_method")
    for w in ("syco", "bare"):
        m = med[w]
        print(f"{w:6s}{m['seconds']:9.1f}{m['cpu_seconds']:8.1f}{m['max_r_hat']:11.4f}{m['min_ess']:9.0f}"
              f"{m['ess_per_s']:8.0f}  {results[w][0]['chain_method']}")
    print(f"ratio bare/syco: seconds {med['bare']['seconds'] / med['syco']['seconds']:.2f}x   "
          f"ESS/s syco/bare {med['syco']['ess_per_s'] / med['bare']['ess_per_s']:.2f}x")
    print(f"same posterior: largest |median(syco) - median(bare)| over features "
          f"{np.abs(medians['syco'] - medians['bare']).max():.4f} (posterior sd {sds.min():.4f}-{sds.max():.4f})")


if __name__ == "__main__":
    main()
