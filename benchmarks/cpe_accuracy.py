"""CPE accuracy against ground truth: relative error and 95%-interval coverage of every estimator.

Setups (each: ``--datasets`` independent logged datasets, default 50; truth by on-policy simulation):

- ``bandit-tau{T}``: 5-action contextual bandit, contexts x ~ N(0, I_5), Bernoulli rewards with mean
  sigmoid(W x + c); logging policy softmax(V x / T) for T in --temperatures (0.5, 1, 3); target policy
  softmax((W x + c) / 0.5). 2,000 logged rows per dataset. Reward model: per-action logistic regression
  on (1, x) from the logged rows. Logging-policy model:
  :func:`batchrl.evaluation.logging_policy.fit_logging_policy` on the logged rows alone (Switch uses it).
  Truth: the target's mean reward over 10^6 simulated contexts (its expected reward, exactly, per context).
  ``Switch(true mu)`` is Switch given the true logging distribution, for reference.
- ``cartpole-eps{E}-greedy`` / ``cartpole-eps{E}-softmax``: CartPole-v0 logged by epsilon-greedy (epsilon E in
  --cartpole-epsilons, default 0.1, 0.2 and 0.3) around the hand-written policy Q(s) = (-pole angle, +pole angle)
  (about 42 steps greedily, so returns vary from episode to episode); the target is that policy greedy,
  or softmax(Q / 0.05). gamma 0.99; episodes rarely reach the 200-step limit, so stationary value models
  are valid. --cartpole-episodes episodes per dataset (default 300). Value model: FQE
  fitted once per setup on 300 independent logged episodes (as the pipeline's CPE models are trained
  on the train table, not the eval table). Truth: 50,000 on-policy episodes (its standard error 0.03-0.06,
  about 0.15% of the value; with the 2,000 used before, 0.8% for the softmax target, as large as the
  intervals being checked, and 0.4% off).
- ``chain``: a random 8-state, 3-action MDP ending with probability 0.1 per step, Gaussian reward noise
  (sd 0.5), logging softmax(L[s]), target softmax(L[s] + N(0, 0.5^2) noise per (s, a)) (both
  stochastic; about a third of the episodes' weight is effective), gamma 0.95, 200
  episodes per dataset; value model FQE (one-hot states) on 1,000 independent episodes; FQE is also
  estimated per dataset. Truth: the exact value (a linear solve), checked by 20,000 on-policy episodes.

For every estimator: mean estimate, bias (mean signed relative error), mean absolute relative error,
RMS relative error, 95%-interval coverage (share of datasets whose interval holds the truth, with
its binomial standard error), the share of datasets the diagnostics flag, and the median effective
sample size.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cpe_accuracy.py [--datasets 50] [--setups bandit,cartpole,chain] \
        [--bootstrap 200] [--output benchmarks/cpe_accuracy.json]
    .venv/bin/python benchmarks/cpe_accuracy.py --markdown RESULTS.json...    # the README table
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from batchrl.data.gym_logging import policy_rng

ACTIONS = 5
FEATURES = 5


# ---------------------------------------------------------------- bandit


def bandit_world(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"W": rng.normal(0, 1, (FEATURES, ACTIONS)), "c": rng.normal(0, 0.5, ACTIONS),
            "V": rng.normal(0, 0.5, (FEATURES, ACTIONS))}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def bandit_policies(world: dict, x: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected rewards, logging and target probabilities [n, A]."""
    logits = x @ world["W"] + world["c"]
    mean = 1.0 / (1.0 + np.exp(-logits))
    return mean, _softmax(x @ world["V"] / temperature), _softmax(logits / 0.5)


def bandit_truth(world: dict, temperature: float) -> float:
    x = np.random.default_rng(10**6).normal(0, 1, (10**6, FEATURES))
    mean, _, target = bandit_policies(world, x, temperature)
    return float((mean * target).sum(axis=1).mean())


def logistic_fit(design: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 25) -> np.ndarray:
    """Ridge-penalized logistic regression by Newton's method (IRLS)."""
    coef = np.zeros(design.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-design @ coef))
        grad = design.T @ (p - y) + l2 * coef
        hess = (design * (p * (1 - p))[:, None]).T @ design + l2 * np.eye(design.shape[1])
        coef -= np.linalg.solve(hess, grad)
    return coef


def bandit_dataset(world: dict, temperature: float, rows: int, seed: int):
    from batchrl.evaluation.cpe import CPEInputs
    from batchrl.evaluation.logging_policy import fit_logging_policy

    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (rows, FEATURES))
    mean, logging, target = bandit_policies(world, x, temperature)
    action = (rng.random((rows, 1)) > np.cumsum(logging, axis=1)).sum(axis=1).clip(max=ACTIONS - 1)
    reward = (rng.random(rows) < mean[np.arange(rows), action]).astype(np.float64)
    propensity = logging[np.arange(rows), action]
    design = np.hstack([np.ones((rows, 1)), x])
    reward_hat = np.zeros((rows, ACTIONS))
    for a in range(ACTIONS):  # per-action logistic regression on (1, x)
        rows_a = action == a
        reward_hat[:, a] = 1.0 / (1.0 + np.exp(-design @ logistic_fit(design[rows_a], reward[rows_a])))
    t = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
    fit = fit_logging_policy(t(x), torch.as_tensor(action), t(propensity), ACTIONS)
    inputs = CPEInputs(reward=t(reward), action=torch.as_tensor(action), logged_propensity=t(propensity),
                       target_probs=t(target), reward_hat=t(reward_hat), q_hat=None,
                       episode=torch.arange(rows), not_terminal=torch.zeros(rows, dtype=torch.bool),
                       logging_probs=fit.probs)
    return inputs, fit.calibration, t(logging)


# ---------------------------------------------------------------- CartPole

CARTPOLE_TRUTH_EPISODES = 50_000


def cartpole_q(obs: np.ndarray) -> np.ndarray:
    return np.stack([-obs[:, 2], obs[:, 2]], axis=1)


def cartpole_probs(obs: np.ndarray, kind: str, epsilon: float = 0.3) -> np.ndarray:
    """Action probabilities [n, 2] of the 'greedy', 'softmax' (target) or 'logging' (epsilon-greedy) policy."""
    q = cartpole_q(obs)
    greedy = np.eye(2)[q.argmax(axis=1)]
    if kind == "greedy":
        return greedy
    if kind == "softmax":
        return _softmax(q / 0.05)
    return (1 - epsilon) * greedy + epsilon / 2


def cartpole_episodes(kind: str, episodes: int, seed: int, gamma: float, epsilon: float = 0.3,
                      rows: bool = True) -> dict[str, np.ndarray]:
    """Episodes of policy ``kind`` in CartPole-v0 (rows in episode order, unless ``rows`` is False) with their
    discounted returns."""
    import gymnasium as gym

    envs = gym.make_vec("CartPole-v0", num_envs=episodes, vectorization_mode="vector_entry_point")
    rng = policy_rng(seed)  # not the environment's stream (batchrl.data.gym_logging.policy_rng)
    obs, _ = envs.reset(seed=seed)
    alive = np.ones(episodes, dtype=bool)
    steps = np.zeros(episodes, dtype=int)
    returns = np.zeros(episodes)
    log: list[tuple] = []
    while alive.any():
        probs = cartpole_probs(obs, kind, epsilon)
        actions = (rng.random(episodes)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1).clip(max=1)
        next_obs, reward, terminated, truncated, _ = envs.step(actions)
        for i in np.flatnonzero(alive) if rows else ():
            log.append((i, steps[i], obs[i].copy(), actions[i], probs[i, actions[i]], reward[i],
                        bool(terminated[i]), bool(truncated[i]), next_obs[i].copy()))
        returns[alive] += gamma ** steps[alive] * reward[alive]
        steps[alive] += 1
        alive &= ~(terminated | truncated)
        obs = next_obs
    envs.close()
    if not rows:
        return {"returns": returns}
    log.sort(key=lambda row: (row[0], row[1]))
    cols = list(zip(*log, strict=True))
    return {"episode": np.array(cols[0]), "obs": np.stack(cols[2]), "action": np.array(cols[3]),
            "propensity": np.array(cols[4]), "reward": np.array(cols[5], dtype=np.float64),
            "terminated": np.array(cols[6]), "truncated": np.array(cols[7]), "next_obs": np.stack(cols[8]),
            "returns": returns}


def fqe_model(data: dict, target_probs: Callable[[np.ndarray], np.ndarray], gamma: float, seed: int):
    """FQE of the target policy on logged transitions ``data``; the model and its diagnostics."""
    from batchrl.evaluation.estimators.fqe import FQEConfig, FQEInputs, fit_fqe

    t = lambda v: torch.as_tensor(np.asarray(v), dtype=torch.float32)  # noqa: E731
    cut = data["truncated"] & ~data["terminated"]
    inputs = FQEInputs(state=t(data["obs"]), action=torch.as_tensor(data["action"]), reward=t(data["reward"]),
                       next_state=t(data["next_obs"]), not_terminal=torch.as_tensor(~data["terminated"]),
                       next_target_probs=t(target_probs(data["next_obs"])), fit_mask=torch.as_tensor(~cut))
    return fit_fqe(inputs, gamma, FQEConfig(seed=seed))


def sequential_inputs(data: dict, target: np.ndarray, q_hat: np.ndarray | None):
    from batchrl.evaluation.cpe import CPEInputs

    t = lambda v: torch.as_tensor(np.asarray(v), dtype=torch.float64)  # noqa: E731
    episode = torch.as_tensor(data["episode"])
    last = torch.ones_like(episode, dtype=torch.bool)
    last[:-1] = episode[1:] != episode[:-1]
    return CPEInputs(reward=t(data["reward"]), action=torch.as_tensor(data["action"]),
                     logged_propensity=t(data["propensity"]), target_probs=t(target),
                     reward_hat=None, q_hat=None if q_hat is None else t(q_hat), episode=episode,
                     not_terminal=~last)


# ---------------------------------------------------------------- random MDP ("chain")

STATES, MDP_ACTIONS, END = 8, 3, 0.1


def mdp_world(seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (STATES, MDP_ACTIONS))
    return {"P": rng.dirichlet(np.full(STATES, 0.5), size=(STATES, MDP_ACTIONS)),
            "R": rng.uniform(0, 1, (STATES, MDP_ACTIONS)),
            "logging": _softmax(logits),
            "target": _softmax(logits + rng.normal(0, 0.5, (STATES, MDP_ACTIONS))),
            "start": rng.dirichlet(np.ones(STATES))}


def mdp_truth(world: dict, gamma: float) -> float:
    """V = solve(I - gamma (1 - END) P_pi, R_pi), averaged over the start distribution."""
    pi = world["target"]
    r_pi = (pi * world["R"]).sum(axis=1)
    p_pi = np.einsum("sa,sat->st", pi, world["P"])
    v = np.linalg.solve(np.eye(STATES) - gamma * (1 - END) * p_pi, r_pi)
    return float(world["start"] @ v)


def mdp_episodes(world: dict, policy: str, episodes: int, seed: int, gamma: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = world[policy]
    rows: list[tuple] = []
    returns = np.zeros(episodes)
    for e in range(episodes):
        s, t, done = rng.choice(STATES, p=world["start"]), 0, False
        while not done:
            a = rng.choice(MDP_ACTIONS, p=probs[s])
            r = world["R"][s, a] + rng.normal(0, 0.5)
            nxt = rng.choice(STATES, p=world["P"][s, a])
            done = rng.random() < END
            rows.append((e, t, s, a, probs[s, a], r, done, nxt))
            returns[e] += gamma ** t * r
            s, t = nxt, t + 1
    cols = list(zip(*rows, strict=True))
    eye = np.eye(STATES)
    return {"episode": np.array(cols[0]), "state": np.array(cols[2]), "obs": eye[np.array(cols[2])],
            "action": np.array(cols[3]), "propensity": np.array(cols[4]), "reward": np.array(cols[5]),
            "terminated": np.array(cols[6]), "truncated": np.zeros(len(rows), dtype=bool),
            "next_obs": eye[np.array(cols[7])], "returns": returns}


# ---------------------------------------------------------------- scoring


def summarize(runs: list[dict], truth: float) -> dict[str, dict]:
    """Per estimator: bias, errors, coverage and diagnostics over the datasets."""
    table: dict[str, dict] = {}
    for name in runs[0]:
        values = [r[name] for r in runs if name in r]
        est = np.array([v["raw"] for v in values])
        rel = (est - truth) / abs(truth)
        covered = np.array([v["ci_low"] <= truth <= v["ci_high"] for v in values])
        n = len(values)
        trusted = np.array([v["diagnostics"]["trusted"] for v in values])
        table[name] = {
            "datasets": n, "mean_estimate": float(est.mean()), "bias": float(rel.mean()),
            "mean_abs_relative_error": float(np.abs(rel).mean()), "rms_relative_error": float(np.sqrt((rel ** 2).mean())),
            "coverage": float(covered.mean()), "coverage_se": float(math.sqrt(covered.mean() * (1 - covered.mean()) / n)),
            "flagged_share": float(np.mean([not v["diagnostics"]["trusted"] for v in values])),
            "median_effective_sample_size": float(np.median([v["diagnostics"]["effective_sample_size"] for v in values])),
            "trusted_datasets": int(trusted.sum()),
            **({"coverage_of_bootstrap_interval": float(np.mean(
                [v["diagnostics"]["bootstrap_ci_low"] <= truth <= v["diagnostics"]["bootstrap_ci_high"]
                 for v in values]))} if "bootstrap_ci_low" in values[0]["diagnostics"] else {}),
            "coverage_when_trusted": float(covered[trusted].mean()) if trusted.any() else float("nan"),
            "mean_abs_relative_error_when_trusted": float(np.abs(rel[trusted]).mean()) if trusted.any() else float("nan"),
        }
    return table


def print_table(setup: str, truth: float, table: dict[str, dict]) -> None:
    print(f"\n{setup}: truth {truth:.5g}")
    print(f"{'estimator':9s} {'mean est':>9s} {'bias':>8s} {'mean|rel|':>9s} {'rms rel':>8s} {'coverage':>12s} "
          f"{'flagged':>7s} {'med ESS':>8s}")
    for name, r in table.items():
        print(f"{name:9s} {r['mean_estimate']:9.4g} {r['bias']:+8.1%} {r['mean_abs_relative_error']:9.1%} "
              f"{r['rms_relative_error']:8.1%} {r['coverage']:6.0%} +-{r['coverage_se']:.0%} "
              f"{r['flagged_share']:7.0%} {r['median_effective_sample_size']:8.1f}", flush=True)


def run_bandit(args, results: dict) -> None:
    from batchrl.evaluation.cpe import counterfactual_estimates

    world = bandit_world()
    for temperature in args.temperatures:
        setup = f"bandit-tau{temperature:g}"
        truth = bandit_truth(world, temperature)
        runs, calibrations = [], []
        started = time.perf_counter()
        for d in range(args.datasets):
            inputs, calib, true_mu = bandit_dataset(world, temperature, args.bandit_rows, seed=1000 * d + 1)
            calibrations.append(calib)
            run = counterfactual_estimates(inputs, 1.0, seed=d, bootstrap=args.bootstrap)["estimates"]
            inputs.logging_probs = true_mu  # for reference: Switch with the true logging distribution
            run["Switch(true mu)"] = counterfactual_estimates(inputs, 1.0, seed=d, bootstrap=args.bootstrap)[
                "estimates"]["Switch"]
            runs.append(run)
        table = summarize(runs, truth)
        print_table(setup, truth, table)
        results[setup] = {"truth": truth, "estimators": table, "seconds": time.perf_counter() - started,
                          "logging_model_propensity_mean_abs_error": float(np.mean(
                              [c["propensity_mean_abs_error"] for c in calibrations])),
                          "logging_model_expected_calibration_error": float(np.mean(
                              [c["expected_calibration_error"] for c in calibrations]))}
        save(args, results)


def run_cartpole(args, results: dict) -> None:
    from batchrl.evaluation.cpe import counterfactual_estimates

    gamma = 0.99
    for epsilon in args.cartpole_epsilons:
        for target in ("greedy", "softmax"):
            setup = f"cartpole-eps{epsilon:g}-{target}"
            started = time.perf_counter()
            truth_runs = cartpole_episodes(target, CARTPOLE_TRUTH_EPISODES, seed=99, gamma=gamma, rows=False)["returns"]
            truth = float(truth_runs.mean())
            model_data = cartpole_episodes("logging", 300, seed=77, gamma=gamma, epsilon=epsilon)
            model, fit = fqe_model(model_data, lambda o, kind=target: cartpole_probs(o, kind), gamma, seed=0)
            print(f"{setup}: FQE value model {fit.as_dict()}", flush=True)
            runs = []
            for d in range(args.datasets):
                data = cartpole_episodes("logging", args.cartpole_episodes, seed=5000 + d, gamma=gamma, epsilon=epsilon)
                with torch.no_grad():
                    q_hat = model(torch.as_tensor(data["obs"], dtype=torch.float32)).double().numpy()
                inputs = sequential_inputs(data, cartpole_probs(data["obs"], target), q_hat)
                out = counterfactual_estimates(inputs, gamma, seed=d, bootstrap=args.seq_bootstrap)["estimates"]
                runs.append({k: v for k, v in out.items() if k in ("IPS", "SNIPS", "SDR", "WDR", "MAGIC")})
            table = summarize([{k: v for k, v in r.items() if k in ("SDR", "WDR", "MAGIC")} for r in runs], truth)
            print_table(setup, truth, table)
            results[setup] = {"truth": truth, "truth_se": float(truth_runs.std() / np.sqrt(len(truth_runs))),
                              "gamma": gamma, "epsilon": epsilon, "estimators": table, "value_model": fit.as_dict(),
                              "seconds": time.perf_counter() - started}
            save(args, results)


def run_chain(args, results: dict) -> None:
    from batchrl.evaluation.cpe import counterfactual_estimates, estimate_fqe
    from batchrl.evaluation.estimators.fqe import FQEConfig, FQEInputs

    gamma = 0.95
    world = mdp_world()
    truth = mdp_truth(world, gamma)
    simulated = mdp_episodes(world, "target", args.chain_truth_episodes, seed=4242, gamma=gamma)["returns"]
    print(f"chain: exact value {truth:.5f}; on-policy simulation {simulated.mean():.5f} +- "
          f"{simulated.std() / np.sqrt(len(simulated)):.5f}", flush=True)
    target_of = lambda obs: world["target"][obs.argmax(axis=1)]  # noqa: E731
    started = time.perf_counter()
    model, fit = fqe_model(mdp_episodes(world, "logging", 1000, seed=31, gamma=gamma), target_of, gamma, seed=0)
    print(f"chain: FQE value model {fit.as_dict()}", flush=True)
    runs = []
    for d in range(args.datasets):
        data = mdp_episodes(world, "logging", args.chain_episodes, seed=7000 + d, gamma=gamma)
        with torch.no_grad():
            q_hat = model(torch.as_tensor(data["obs"], dtype=torch.float32)).double().numpy()
        inputs = sequential_inputs(data, target_of(data["obs"]), q_hat)
        run = {}
        if not args.fqe_only:
            out = counterfactual_estimates(inputs, gamma, seed=d, bootstrap=args.seq_bootstrap)["estimates"]
            run = {k: v for k, v in out.items() if k in ("SDR", "WDR", "MAGIC")}
        if d < args.fqe_datasets:
            t = lambda v: torch.as_tensor(np.asarray(v), dtype=torch.float32)  # noqa: E731
            fqe_in = FQEInputs(state=t(data["obs"]), action=torch.as_tensor(data["action"]), reward=t(data["reward"]),
                               next_state=t(data["next_obs"]), not_terminal=torch.as_tensor(~data["terminated"]),
                               next_target_probs=t(target_of(data["next_obs"])))
            run["FQE"], _ = estimate_fqe(inputs, fqe_in, gamma, seed=d, bootstrap=args.seq_bootstrap,
                                         config=FQEConfig(seed=d))
        runs.append(run)
        if (d + 1) % 10 == 0 or d + 1 == args.datasets:  # partial results land as they come
            table = summarize([r for r in runs if r], truth)
            results["chain"] = {"truth": truth, "simulated": float(simulated.mean()),
                                "simulated_se": float(simulated.std() / np.sqrt(len(simulated))), "gamma": gamma,
                                "estimators": table, "value_model": fit.as_dict(),
                                "seconds": time.perf_counter() - started}
            save(args, results)
            print(f"chain: {d + 1} datasets", flush=True)
    print_table("chain", truth, results["chain"]["estimators"])


def markdown(paths: list[str]) -> str:
    """One markdown table of every setup and estimator in the result files ``paths`` (for the README)."""
    lines = ["| setup | truth | estimator | datasets | mean estimate | bias | mean abs. rel. error | RMS rel. error "
             "| 95% CI coverage | flagged | coverage when not flagged | median ESS |", "|" + "---|" * 12]
    for path in paths:
        data = json.load(open(path))
        runs = [data] if "results" in data else list(data.values())  # one run, or runs keyed by name
        for setup, result in ((k, v) for run in runs for k, v in run["results"].items()):
            for name, r in result["estimators"].items():
                lines.append(f"| {setup} | {result['truth']:.4g} | {name} | {r['datasets']} | {r['mean_estimate']:.4g} "
                             f"| {r['bias']:+.1%} | {r['mean_abs_relative_error']:.1%} | {r['rms_relative_error']:.1%} "
                             f"| {r['coverage']:.0%} +- {r['coverage_se']:.0%} | {r['flagged_share']:.0%} "
                             f"| {_when_trusted(r)} | {r['median_effective_sample_size']:.0f} |")
    return "\n".join(lines)


def _when_trusted(r: dict) -> str:
    """Coverage over the datasets the diagnostics did not flag, with how many there were."""
    trusted = r.get("trusted_datasets", 0)
    return "-" if not trusted else f"{r['coverage_when_trusted']:.0%} of {trusted}"


def save(args, results: dict) -> None:
    with open(args.output, "w") as fh:
        json.dump({"settings": {k: v for k, v in vars(args).items() if k != "output"}, "results": results}, fh,
                  indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, default=50)
    parser.add_argument("--setups", default="bandit,chain,cartpole")
    parser.add_argument("--temperatures", type=lambda s: [float(v) for v in s.split(",")], default=[0.5, 1.0, 3.0])
    parser.add_argument("--bandit-rows", type=int, default=2000)
    parser.add_argument("--cartpole-episodes", type=int, default=300)
    parser.add_argument("--cartpole-epsilons", type=lambda s: [float(v) for v in s.split(",")], default=[0.1, 0.2, 0.3],
                        help="the logging policy's epsilon, one CartPole setup pair per value")
    parser.add_argument("--chain-episodes", type=int, default=200)
    parser.add_argument("--chain-truth-episodes", type=int, default=20000)
    parser.add_argument("--fqe-datasets", type=int, default=50, help="chain datasets that also fit FQE")
    parser.add_argument("--fqe-only", action="store_true", help="chain: FQE alone (the other estimators skipped)")
    parser.add_argument("--bootstrap", type=int, default=200, help="replicates for one-step intervals")
    parser.add_argument("--seq-bootstrap", type=int, default=200, help="replicates for sequential intervals")
    parser.add_argument("--output", default="benchmarks/cpe_accuracy.json")
    parser.add_argument("--markdown", nargs="+", metavar="JSON", help="print the README table of result files")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(args.markdown))
        return
    torch.set_num_threads(1)
    results: dict = {}
    runners = {"bandit": run_bandit, "cartpole": run_cartpole, "chain": run_chain}
    for setup in args.setups.split(","):
        runners[setup](args, results)


if __name__ == "__main__":
    main()
