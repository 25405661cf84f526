"""Why SDR's and WDR's intervals miss on CartPole with the softmax target (issue 17): the weight mass.

For each CartPole setup of ``cpe_accuracy.py`` (epsilon-greedy logging at 0.1 / 0.2 / 0.3, greedy or softmax
target, 300 episodes per dataset, the same FQE value model and dataset seeds), over ``--datasets`` datasets:
the mean final cumulative importance weight rho_T (1 in expectation under the logging policy), per-decision
importance sampling (PDIS, sum_t gamma^t rho_t r_t: unbiased, no value model), SDR, and the value model's own
estimate V_hat(s_0) averaged over the logged start states. Where the logs miss the rare episodes that carry
the weights' expectation, rho_T averages well below 1, PDIS falls short of the truth, and SDR stays close to
the value model's estimate, whose bias the weights cannot correct. (Run before the fix of
``batchrl.data.gym_logging.policy_rng``, this script showed the opposite with the greedy target: mean rho_T 1.05-1.28
and PDIS 5-17% above the truth, because the first actions of each logged episode were functions of its
initial state.)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cpe_weight_mass.py --json benchmarks/cpe_weight_mass.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import cpe_accuracy as ca  # noqa: E402

from batchrl.evaluation import cpe  # noqa: E402
from batchrl.evaluation.estimators import sequential  # noqa: E402

GAMMA = 0.99


def setup_stats(epsilon: float, target: str, datasets: int, episodes: int) -> dict:
    model_data = ca.cartpole_episodes("logging", 300, seed=77, gamma=GAMMA, epsilon=epsilon)
    model, _ = ca.fqe_model(model_data, lambda o, kind=target: ca.cartpole_probs(o, kind), GAMMA, seed=0)
    out: dict[str, list[float]] = {"mean_final_weight": [], "PDIS": [], "SDR": [], "value_model": []}
    for d in range(datasets):
        data = ca.cartpole_episodes("logging", episodes, seed=5000 + d, gamma=GAMMA, epsilon=epsilon)
        with torch.no_grad():
            q_hat = model(torch.as_tensor(data["obs"], dtype=torch.float32)).double().numpy()
        episodes_ = cpe.episodes_of(ca.sequential_inputs(data, ca.cartpole_probs(data["obs"], target), q_hat))
        rho, disc = episodes_.cumulative_weight(), episodes_.discounts(GAMMA)
        out["mean_final_weight"].append(float(rho[:, -1].mean()))
        out["PDIS"].append(float((disc * rho * episodes_.reward).sum(dim=1).mean()))
        out["SDR"].append(float(sequential.sequential_dr_terms(episodes_, GAMMA).numerator.mean()))
        out["value_model"].append(float(episodes_.v[:, 0].mean()))
    return {name: {"mean": float(np.mean(v)), "std_error": float(np.std(v) / np.sqrt(len(v))),
                   "median": float(np.median(v))} for name, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--json")
    args = parser.parse_args()
    truths = {target: float(ca.cartpole_episodes(target, ca.CARTPOLE_TRUTH_EPISODES, seed=99, gamma=GAMMA,
                                                 rows=False)["returns"].mean()) for target in ("greedy", "softmax")}
    results = {"datasets": args.datasets, "episodes": args.episodes, "gamma": GAMMA, "setups": {}}
    print("| setup | truth | mean final weight (median) | PDIS | SDR | value model V_hat(s_0) |")
    print("|---|---|---|---|---|---|")
    for epsilon in args.epsilons:
        for target in ("greedy", "softmax"):
            stats = setup_stats(epsilon, target, args.datasets, args.episodes)
            results["setups"][f"cartpole-eps{epsilon:g}-{target}"] = {"truth": truths[target], **stats}
            print(f"| cartpole-eps{epsilon:g}-{target} | {truths[target]:.2f} | "
                  f"{stats['mean_final_weight']['mean']:.2f} ({stats['mean_final_weight']['median']:.2f}) | "
                  f"{stats['PDIS']['mean']:.2f} +- {stats['PDIS']['std_error']:.2f} | "
                  f"{stats['SDR']['mean']:.2f} +- {stats['SDR']['std_error']:.2f} | "
                  f"{stats['value_model']['mean']:.2f} |", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
