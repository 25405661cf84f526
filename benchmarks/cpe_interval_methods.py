"""Which 95% interval holds its coverage on heavy-tailed importance weights? (issue 17)

Two kinds of setup, each scored over DATASETS independent logged datasets (the share whose interval holds
the truth, the mean width and the estimator's bias), five intervals from the same B bootstrap replicates:

- ``--setup bandit``: the bandit of ``cpe_accuracy.py`` (5 actions, softmax logging at temperature TAU,
  2,000 rows, the true propensities, a per-action logistic reward model): IPS, SNIPS and DR;
- ``--setup cartpole``: the CartPole setups of ``cpe_accuracy.py`` (300 episodes logged epsilon-greedy
  around the hand-written policy, the greedy or softmax target, the same FQE value model and truth): SDR
  and WDR.

The intervals:

- ``pct``: percentile bootstrap;
- ``t``: estimate +- 1.96 se, se from the linearized (delta-method) per-unit terms
  f_i = sum_k (num_ik - V_k den_ik) / mean_i(den_ik) (columns nobody weighs contribute 0);
- ``boot-t``: studentized bootstrap, [est - t*_{0.975} se, est - t*_{0.025} se] with t* = (est* - est) / se*;
- ``bca``: bias-corrected and accelerated percentiles (Efron 1987), acceleration from the same f_i;
- ``hull``: the smallest interval containing ``pct`` and ``t`` (what the library reports for WDR).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cpe_interval_methods.py --setup bandit --tau 0.5 --datasets 200
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cpe_interval_methods.py --setup cartpole --epsilon 0.1 --target softmax
"""

import argparse

import cpe_accuracy as ca
import numpy as np
import torch
from scipy import stats

from batchrl.evaluation.estimators import one_step
from batchrl.evaluation.estimators.core import bootstrap_counts

torch.set_num_threads(1)


def dataset(world: dict, tau: float, rows: int, seed: int) -> dict:
    """The IPS, SNIPS and DR terms of one logged dataset (the same draws as cpe_accuracy.bandit_dataset)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (rows, ca.FEATURES))
    mean, logging, target = ca.bandit_policies(world, x, tau)
    action = (rng.random((rows, 1)) > np.cumsum(logging, axis=1)).sum(axis=1).clip(max=ca.ACTIONS - 1)
    reward = (rng.random(rows) < mean[np.arange(rows), action]).astype(np.float64)
    design = np.hstack([np.ones((rows, 1)), x])
    reward_hat = np.zeros((rows, ca.ACTIONS))
    for a in range(ca.ACTIONS):
        rows_a = action == a
        reward_hat[:, a] = 1 / (1 + np.exp(-design @ ca.logistic_fit(design[rows_a], reward[rows_a])))
    t = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
    a_t = torch.as_tensor(action)
    w = one_step.importance_weights(t(target), a_t, t(logging[np.arange(rows), action]))
    return {"IPS": one_step.ips_terms(w, t(reward)), "SNIPS": one_step.snips_terms(w, t(reward)),
            "DR": one_step.doubly_robust_terms(w, t(reward), a_t, t(target), t(reward_hat))}


def influence(terms, counts: torch.Tensor) -> torch.Tensor:
    """Linearized per-unit terms f_i of a ratio-of-sums value on each replicate: [B, n]."""
    num = terms.numerator
    den = torch.ones_like(num) if terms.denominator is None else terms.denominator
    n = counts.sum(1, keepdim=True)
    totals_num, totals_den = counts @ num, counts @ den
    weighed = totals_den != 0  # a column nobody weighs (every cumulative weight 0) contributes nothing
    safe_den = torch.where(weighed, totals_den, torch.ones_like(totals_den))
    value = torch.where(weighed, totals_num / safe_den, torch.zeros_like(totals_num))
    scale = torch.where(weighed, n / safe_den, torch.zeros_like(totals_den))
    return ((num.unsqueeze(0) - value.unsqueeze(1) * den.unsqueeze(0)) * scale.unsqueeze(1)).sum(2)


def std_error(terms, counts: torch.Tensor) -> torch.Tensor:
    f = influence(terms, counts)
    n = counts.sum(1)
    mean = (counts * f).sum(1) / n
    return ((counts * (f - mean.unsqueeze(1)) ** 2).sum(1) / (n - 1) / n).sqrt()


def interval_rows(terms: dict, truth: float, replicates: int, seed: int, results: dict) -> None:
    """Score the four intervals of every statistic in ``terms`` on one dataset into ``results``."""
    n = next(iter(terms.values())).units
    counts = bootstrap_counts(n, replicates, seed)
    ones = torch.ones(1, n, dtype=torch.float64)
    probs = torch.tensor([0.025, 0.975], dtype=torch.float64)
    for name, stat in terms.items():
        est, values = float(stat.value(ones)[0]), stat.value(counts)
        se, ses = float(std_error(stat, ones)[0]), std_error(stat, counts)
        intervals = {"pct": torch.quantile(values, probs).tolist(), "t": [est - 1.96 * se, est + 1.96 * se]}
        tstar = (values - est) / ses
        finite = tstar[torch.isfinite(tstar)]
        if finite.numel():  # none when every replicate's standard error is 0 (all weights vanished)
            low_t, high_t = torch.quantile(finite, probs).tolist()
            intervals["boot-t"] = [est - high_t * se, est - low_t * se]
        else:
            intervals["boot-t"] = [est, est]
        z0 = stats.norm.ppf(float((values < est).double().mean()))
        f = influence(stat, ones)[0].numpy()
        accel = (f ** 3).sum() / (6 * ((f ** 2).sum()) ** 1.5)
        z = stats.norm.ppf([0.025, 0.975])
        levels = np.nan_to_num(stats.norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z))), nan=0.5)
        intervals["bca"] = np.quantile(values.numpy(), levels.clip(0, 1)).tolist()
        intervals["hull"] = [min(intervals["pct"][0], intervals["t"][0]), max(intervals["pct"][1], intervals["t"][1])]
        for kind, (low, high) in intervals.items():
            results.setdefault((name, kind), []).append((low <= truth <= high, high - low, est))


def report(label: str, truth: float, results: dict) -> None:
    for (name, kind), rows_ in sorted(results.items()):
        arr = np.array(rows_)
        print(f"{label} {name:6s} {kind:7s} coverage {arr[:, 0].mean():.2f} width {arr[:, 1].mean():.4g} "
              f"bias {(arr[:, 2].mean() - truth) / abs(truth):+.2%}", flush=True)


def run_bandit(args) -> None:
    world = ca.bandit_world()
    truth = ca.bandit_truth(world, args.tau)
    results: dict = {}
    for d in range(args.datasets):
        interval_rows(dataset(world, args.tau, 2000, 1000 * d + 1), truth, args.bootstrap, d, results)
    report(f"tau {args.tau:g}", truth, results)


def run_cartpole(args) -> None:
    """WDR (and SDR) on the CartPole setups of cpe_accuracy.py: the same logs, value model and truth."""
    from batchrl.evaluation import cpe
    from batchrl.evaluation.estimators import sequential

    gamma = 0.99
    truth = float(ca.cartpole_episodes(args.target, ca.CARTPOLE_TRUTH_EPISODES, seed=99, gamma=gamma,
                                       rows=False)["returns"].mean())
    model_data = ca.cartpole_episodes("logging", 300, seed=77, gamma=gamma, epsilon=args.epsilon)
    model, _ = ca.fqe_model(model_data, lambda o: ca.cartpole_probs(o, args.target), gamma, seed=0)
    results: dict = {}
    for d in range(args.datasets):
        data = ca.cartpole_episodes("logging", 300, seed=5000 + d, gamma=gamma, epsilon=args.epsilon)
        with torch.no_grad():
            q_hat = model(torch.as_tensor(data["obs"], dtype=torch.float32)).double().numpy()
        episodes = cpe.episodes_of(ca.sequential_inputs(data, ca.cartpole_probs(data["obs"], args.target), q_hat))
        terms = {"SDR": sequential.sequential_dr_terms(episodes, gamma),
                 "WDR": sequential.weighted_dr_terms(episodes, gamma)}
        interval_rows(terms, truth, args.bootstrap, d, results)
    report(f"cartpole eps {args.epsilon:g} {args.target}", truth, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", choices=("bandit", "cartpole"), default="bandit")
    parser.add_argument("--tau", type=float, default=0.5, help="bandit: the logging temperature")
    parser.add_argument("--epsilon", type=float, default=0.1, help="cartpole: the logging epsilon")
    parser.add_argument("--target", choices=("greedy", "softmax"), default="greedy", help="cartpole: the target")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--datasets", type=int, default=100)
    args = parser.parse_args()
    {"bandit": run_bandit, "cartpole": run_cartpole}[args.setup](args)


if __name__ == "__main__":
    main()
