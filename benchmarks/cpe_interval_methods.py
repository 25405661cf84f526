"""Which 95% interval holds its coverage on heavy-tailed importance weights? (issue 17)

On the bandit of ``cpe_accuracy.py`` (5 actions, softmax logging at temperature TAU, 2,000 rows, the true
propensities, a per-action logistic reward model), for IPS, SNIPS and DR: the share of DATASETS
datasets whose interval holds the truth, and the mean width, for four intervals from the same B
bootstrap replicates:

- ``pct``: percentile bootstrap;
- ``t``: estimate +- 1.96 se, se from the linearized (delta-method) per-row terms
  f_i = sum_k (num_ik - V_k den_ik) / mean_i(den_ik);
- ``boot-t``: studentized bootstrap, [est - t*_{0.975} se, est - t*_{0.025} se] with t* = (est* - est) / se*;
- ``bca``: bias-corrected and accelerated percentiles (Efron 1987), acceleration from the same f_i.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cpe_interval_methods.py TAU [B] [DATASETS]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cpe_interval_methods.py 0.5 200 200   # README numbers
"""

import sys

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
    value = totals_num / totals_den
    return ((num.unsqueeze(0) - value.unsqueeze(1) * den.unsqueeze(0)) / (totals_den / n).unsqueeze(1)).sum(2)


def std_error(terms, counts: torch.Tensor) -> torch.Tensor:
    f = influence(terms, counts)
    n = counts.sum(1)
    mean = (counts * f).sum(1) / n
    return ((counts * (f - mean.unsqueeze(1)) ** 2).sum(1) / (n - 1) / n).sqrt()


def main() -> None:
    tau = float(sys.argv[1])
    replicates = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    datasets = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    world = ca.bandit_world()
    truth = ca.bandit_truth(world, tau)
    rows = 2000
    probs = torch.tensor([0.025, 0.975], dtype=torch.float64)
    results: dict[tuple[str, str], list[tuple[bool, float]]] = {}
    for d in range(datasets):
        terms = dataset(world, tau, rows, 1000 * d + 1)
        counts = bootstrap_counts(rows, replicates, d)
        ones = torch.ones(1, rows, dtype=torch.float64)
        for name, stat in terms.items():
            est, values = float(stat.value(ones)[0]), stat.value(counts)
            se, ses = float(std_error(stat, ones)[0]), std_error(stat, counts)
            intervals = {"pct": torch.quantile(values, probs).tolist(), "t": [est - 1.96 * se, est + 1.96 * se]}
            tstar = (values - est) / ses
            low_t, high_t = torch.quantile(tstar[torch.isfinite(tstar)], probs).tolist()
            intervals["boot-t"] = [est - high_t * se, est - low_t * se]
            z0 = stats.norm.ppf(float((values < est).double().mean()))
            f = influence(stat, ones)[0].numpy()
            accel = (f ** 3).sum() / (6 * ((f ** 2).sum()) ** 1.5)
            z = stats.norm.ppf([0.025, 0.975])
            intervals["bca"] = np.quantile(values.numpy(), stats.norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))).tolist()
            for kind, (low, high) in intervals.items():
                results.setdefault((name, kind), []).append((low <= truth <= high, high - low))
    for (name, kind), rows_ in sorted(results.items()):
        arr = np.array(rows_)
        print(f"tau {tau:g} {name:6s} {kind:7s} coverage {arr[:, 0].mean():.2f} width {arr[:, 1].mean():.4f}")


if __name__ == "__main__":
    main()
