"""CPE against ground truth on CartPole (issue 6).

1. Train a DQN offline with the stage functions (generate 30,000 random transitions -> timeline ->
   normalize -> prepare -> train, ReAgent's offline CartPole config), unless --model gives a model dir.
2. Truth: the trained greedy policy's mean discounted return (gamma 0.99) over 200 on-policy rollouts.
3. Log episodes with an epsilon-greedy policy (epsilon 0.3) around the trained model.
4. Estimate the greedy policy's discounted value from those logs with sequential DR, weighted DR,
   MAGIC (value model: FQE, and the trained Q-network) and FQE, and report each relative error.
5. The evaluate stage as users run it: CPE of the training's target policy (softmax(Q/0.35)) on the
   prepared eval table (random-policy logs), against that policy's value from 200 sampled rollouts.

    .venv/bin/python benchmarks/cpe_ground_truth.py [--model DIR] [--log-episodes 200] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

GAMMA = 0.99
CONFIG = "configs/reagent/discrete_dqn_cartpole_offline.yaml"


def train_model(workdir: str, epochs: int | None) -> str:
    """The offline pipeline's stage functions on 30,000 random CartPole transitions."""
    from batchrl.config import load_config
    from batchrl.data.gym_logging import GenerateOptions, generate
    from batchrl.data.normalize import NormalizeOptions, normalize
    from batchrl.data.prepare import PrepareOptions, prepare
    from batchrl.data.timeline import make_options, timeline
    from batchrl.training.train import train

    config = load_config(CONFIG)
    if epochs:
        config = config.model_copy(update={"num_epochs": epochs})
    trainer = config.model.value.trainer_param
    d = workdir.rstrip("/")
    generate(f"{d}/logged", GenerateOptions(env=config.env_name, transitions=config.num_train_transitions,
                                            seed=config.seed))
    timeline(f"{d}/logged", f"{d}/timeline", make_options(
        {"startDs": "2019-01-01", "endDs": "2019-01-01", "addTerminalStateRow": True}, where="benchmark"),
        "local[2]")
    normalize(f"{d}/timeline", f"{d}/normalization.json",
              NormalizeOptions(num_samples=config.model.value.preprocessing_options.num_samples, seed=config.seed),
              "local[2]")
    prepare(f"{d}/timeline", f"{d}/normalization.json", f"{d}/train", f"{d}/eval",
            PrepareOptions(actions=list(trainer.actions), table_sample=90, eval_table_sample=10,
                           gamma=trainer.rl.gamma), "local[2]")
    train(config, f"{d}/train", f"{d}/eval", f"{d}/normalization.json", f"{d}/model", device="cpu")
    return f"{d}/model"


def logged_inputs(policy, episodes, start: int):
    """CPE inputs (target = the greedy policy) and FQE transitions from logged episodes."""
    from batchrl.evaluation.cpe import CPEInputs, target_policy_probs
    from batchrl.evaluation.estimators.fqe import FQEInputs

    obs = torch.as_tensor(np.concatenate([ep.obs for ep in episodes]), dtype=torch.float32)
    action = torch.as_tensor(np.concatenate([ep.actions for ep in episodes]) - start, dtype=torch.long)
    lengths = [len(ep) for ep in episodes]
    episode = torch.repeat_interleave(torch.arange(len(episodes)), torch.tensor(lengths))
    last = torch.zeros(len(obs), dtype=torch.bool)
    last[torch.cumsum(torch.tensor(lengths), 0) - 1] = True
    terminated = torch.tensor([ep.end_reason == "terminated" for ep in episodes])
    not_terminal = ~(last & terminated[episode])
    q = policy.outputs(obs)
    greedy = target_policy_probs(q, None, 0.0)
    inputs = CPEInputs(
        reward=torch.as_tensor(np.concatenate([ep.rewards for ep in episodes]), dtype=torch.float64),
        action=action, logged_propensity=torch.as_tensor(np.concatenate([ep.probs for ep in episodes])),
        target_probs=greedy, reward_hat=None, q_hat=None, episode=episode, not_terminal=not_terminal)
    # FQE transitions: next state = the next row of the episode; a time-limit cut has no next state
    next_obs = torch.zeros_like(obs)
    next_obs[:-1] = obs[1:]
    next_obs[last] = 0.0
    keep = ~(last & ~terminated[episode])
    next_probs = target_policy_probs(policy.outputs(next_obs), None, 0.0)
    fqe = FQEInputs(state=obs, action=action, reward=inputs.reward, next_state=next_obs,
                    not_terminal=not_terminal, next_target_probs=next_probs, fit_mask=keep)
    return inputs, fqe, q


def softmax_truth(policy, temperature: float, episodes: int, seed: int) -> float:
    """Mean discounted return of actions sampled from softmax(Q/temperature) in CartPole-v0."""
    import gymnasium as gym

    from batchrl.data.gym_logging import policy_rng
    from batchrl.evaluation.cpe import target_policy_probs

    envs = gym.make_vec("CartPole-v0", num_envs=episodes, vectorization_mode="vector_entry_point")
    rng = policy_rng(seed)  # not the environment's stream
    obs, _ = envs.reset(seed=seed)
    total, steps, alive = np.zeros(episodes), np.zeros(episodes), np.ones(episodes, dtype=bool)
    while alive.any():
        probs = target_policy_probs(policy.outputs(obs), None, temperature).numpy()
        actions = (rng.random(episodes)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
        obs, reward, terminated, truncated, _ = envs.step(actions)
        total[alive] += GAMMA ** steps[alive] * reward[alive]
        steps[alive] += 1
        alive &= ~(terminated | truncated)
    envs.close()
    return float(total.mean())


def stage_on_eval_table(model: str, eval_table: str, workdir: str, bootstrap: int) -> dict:
    """`batchrl evaluate` on the prepared eval table; relative errors against sampled rollouts."""
    from batchrl.evaluation.evaluate import EvaluateOptions, evaluate
    from batchrl.serving.export import load_policy

    started = time.perf_counter()
    summary = evaluate(model, eval_table, f"{workdir}/evaluation", EvaluateOptions(bootstrap=bootstrap))
    seconds = time.perf_counter() - started
    metrics = json.load(open(summary.metrics))
    temperature = metrics["temperature"]
    truth = softmax_truth(load_policy(f"{model}/model.torchscript"), temperature, 200, seed=5)
    logging_values = metrics["cpe"]["logging_policy"]
    print(f"\nevaluate stage on {eval_table}: {logging_values['rows']} rows, {logging_values['episodes']} "
          f"episodes; target softmax(Q/{temperature}); value model {metrics['cpe']['value_model']}; "
          f"{seconds:.0f} s")
    print(f"truth (200 sampled rollouts of the target policy): {truth:.3f}")
    rows = {}
    for name in ("SDR", "WDR", "MAGIC", "FQE"):
        e = summary.cpe.get(name)
        if e:
            rows[name] = {**e, "relative_error": (e["raw"] - truth) / truth}
            print(f"{name:6s} {e['raw']:9.3f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}] {rows[name]['relative_error']:+.1%}")
    return {"truth": truth, "temperature": temperature, "seconds": seconds, "results": rows,
            "logging": logging_values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: train one under --workdir)")
    parser.add_argument("--workdir", default="/tmp/batchrl-cpe-benchmark")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the config's 20)")
    parser.add_argument("--log-episodes", type=int, default=200)
    parser.add_argument("--truth-episodes", type=int, default=200)
    parser.add_argument("--epsilon", type=float, default=0.3)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--fqe-iterations", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--eval-table", help="prepared eval table for part 5 (default: WORKDIR/eval if present)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from batchrl.data.gym_logging import GenerateOptions, run_episodes
    from batchrl.evaluation.cpe import estimate_all, estimate_fqe, logging_policy_values
    from batchrl.evaluation.estimators.fqe import FQEConfig
    from batchrl.evaluation.report import format_cpe_table
    from batchrl.evaluation.rollouts import greedy_rollouts
    from batchrl.serving.export import load_policy

    timings = {}
    started = time.perf_counter()
    model = args.model or train_model(args.workdir, args.epochs)
    timings["train_s"] = time.perf_counter() - started
    policy = load_policy(f"{model}/model.torchscript")

    truth_runs = greedy_rollouts(policy, "CartPole-v0", args.truth_episodes, seed=10_000, gamma=GAMMA)
    truth = float(truth_runs.discounted_returns.mean())
    truth_se = float(truth_runs.discounted_returns.std(ddof=1) / np.sqrt(args.truth_episodes))
    print(f"greedy policy: mean return {truth_runs.returns.mean():.1f}, mean discounted return (truth) "
          f"{truth:.3f} +- {truth_se:.3f} (s.e., {args.truth_episodes} episodes)")
    # What a stationary value model (FQE, the Q-network) estimates: the value without the 200-step limit
    # (1000 steps: gamma^1000 < 5e-5).
    unlimited = greedy_rollouts(policy, "CartPole-v0", args.truth_episodes, seed=10_000, gamma=GAMMA,
                                max_steps=1000)
    truth_unlimited = float(unlimited.discounted_returns.mean())
    print(f"  without the time limit (1000 steps): mean discounted return {truth_unlimited:.3f}")

    episodes, _ = run_episodes(GenerateOptions(env="CartPole-v0", episodes=args.log_episodes,
                                               policy="epsilon-greedy", model=f"{model}/model.torchscript",
                                               epsilon=args.epsilon, seed=7))
    inputs, fqe_inputs, q_network = logged_inputs(policy, episodes, start=0)
    baseline = logging_policy_values(inputs, GAMMA)
    print(f"logs: {len(episodes)} epsilon-greedy episodes ({baseline['rows']} steps), mean discounted "
          f"logged return {baseline['mean_discounted_logged_return']:.3f}")

    t = time.perf_counter()
    fqe, fitted = estimate_fqe(inputs, fqe_inputs, GAMMA, seed=0, bootstrap=args.bootstrap,
                               config=FQEConfig(iterations=args.fqe_iterations, seed=0))
    timings["fqe_s"] = time.perf_counter() - t
    results = {"FQE": {"value model": "-", **fqe}}
    states = torch.as_tensor(np.concatenate([ep.obs for ep in episodes]), dtype=torch.float32)
    with torch.no_grad():
        value_models = {"FQE": fitted(states).double(), "Q-network": q_network.double()}
    for label, q_hat in value_models.items():
        inputs.q_hat = q_hat
        t = time.perf_counter()
        estimates = estimate_all(inputs, GAMMA, seed=0, bootstrap=args.bootstrap)
        timings[f"sequential_{label}_s"] = time.perf_counter() - t
        for name in ("SDR", "WDR", "MAGIC"):
            results[f"{name} ({label})"] = {"value model": label, **estimates[name]}
        for name in ("IPS", "SNIPS"):  # one-step, for reference (they estimate the mean reward per step)
            results.setdefault(name, {"value model": "-", **estimates[name]})

    rows = []
    for name, r in results.items():
        if name in ("IPS", "SNIPS"):
            continue
        rel = (r["raw"] - truth) / truth
        rel_unlimited = (r["raw"] - truth_unlimited) / truth_unlimited
        rows.append((name, r["raw"], r["ci_low"], r["ci_high"], rel, rel_unlimited))
        r["relative_error"] = rel
        r["relative_error_without_time_limit"] = rel_unlimited
    print(f"\n{'estimator (value model)':26s} {'estimate':>9s} {'95% CI':>20s} {'truth':>8s} {'rel. error':>10s}"
          f" {'vs no-limit value':>17s}")
    for name, raw, low, high, rel, rel_u in rows:
        print(f"{name:26s} {raw:9.3f} {f'[{low:.2f}, {high:.2f}]':>20s} {truth:8.3f} {rel:+10.1%} {rel_u:+17.1%}")
    print("\n" + format_cpe_table({k: v for k, v in results.items()}))
    print("\ntimings (s):", {k: round(v, 1) for k, v in timings.items()})
    eval_table = args.eval_table or (f"{args.workdir}/eval" if os.path.exists(f"{args.workdir}/eval") else None)
    stage = stage_on_eval_table(model, eval_table, args.workdir, args.bootstrap) if eval_table else None
    os.makedirs(args.workdir, exist_ok=True)
    with open(f"{args.workdir}/cpe_ground_truth.json", "w") as fh:
        json.dump({"stage_on_eval_table": stage, "truth": truth, "truth_se": truth_se, "truth_without_time_limit": truth_unlimited, "greedy_mean_return": float(truth_runs.returns.mean()),
                   "logging": baseline, "results": results, "timings": timings}, fh, indent=2)


if __name__ == "__main__":
    main()
