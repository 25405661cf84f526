"""One d3rlpy 2.8.1 run of the offline matrix (benchmarks/offline_matrix.py), in d3rlpy's own venv.

Reads a logged table (Parquet, the batchrl schema) with pyarrow (the matrix passes the episodes of batchrl's
training split, ``--episodes-file``, so both libraries train on the same rows), builds d3rlpy's ``MDPDataset`` from it
(observations from ``state_features`` in feature-id order, actions, rewards; ``end_reason`` terminated ->
terminal, truncated or a cut last episode -> timeout), trains the asked algorithm with the given hidden
sizes, batch size, learning rate, discount and number of gradient steps, and evaluates the greedy policy
in gymnasium over ``--episodes`` episodes seeded ``--eval-seed``, ``--eval-seed + 1``, ... Prints one JSON
object: ``mean_return``, ``returns``, ``gradient_steps``, ``train_seconds``.

Never imported by batchrl: it runs under ``benchmarks/.d3rlpy-venv/bin/python`` (d3rlpy pins gymnasium 1.0).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import numpy as np
import pyarrow.parquet as pq


def load_logged(path: str, discrete: bool, episodes: set[str] | None = None):
    """(observations, actions, rewards, terminals, timeouts) in episode order; only ``episodes`` (mdp ids)
    when given."""
    files = sorted(glob.glob(os.path.join(path, "*.parquet")))
    table = pq.ParquetDataset(files).read(columns=["mdp_id", "sequence_number", "state_features", "action",
                                                   "reward", "end_reason"]).to_pylist()
    if episodes is not None:
        table = [row for row in table if row["mdp_id"] in episodes]
    table.sort(key=lambda r: (r["mdp_id"], r["sequence_number"]))
    obs, actions, rewards, terminals, timeouts = [], [], [], [], []
    for i, row in enumerate(table):
        features = dict(row["state_features"])
        obs.append([features[k] for k in sorted(features)])
        if discrete:
            actions.append(int(row["action"]))
        else:
            action = dict(row["action"])
            actions.append([action[k] for k in sorted(action)])
        rewards.append(row["reward"])
        last = i + 1 == len(table) or table[i + 1]["mdp_id"] != row["mdp_id"]
        terminals.append(1.0 if last and row["end_reason"] == "terminated" else 0.0)
        timeouts.append(1.0 if last and row["end_reason"] != "terminated" else 0.0)
    return (np.asarray(obs, np.float32), np.asarray(actions, np.int64 if discrete else np.float32),
            np.asarray(rewards, np.float32), np.asarray(terminals, np.float32), np.asarray(timeouts, np.float32))


def build(algorithm: str, args: argparse.Namespace):
    import d3rlpy

    encoder = d3rlpy.models.encoders.VectorEncoderFactory(hidden_units=args.hidden)
    critic_encoder = d3rlpy.models.encoders.VectorEncoderFactory(hidden_units=args.hidden,
                                                                 use_layer_norm=args.critic_layer_norm)
    common = {"batch_size": args.batch_size, "gamma": args.gamma}
    if args.standardize_observations:  # per-feature (x - mean) / std fitted on the logged table, like batchrl's
        common["observation_scaler"] = d3rlpy.preprocessing.StandardObservationScaler()
    discrete = {"learning_rate": args.lr, "encoder_factory": encoder, "target_update_interval": args.target_update_interval}
    continuous = {"actor_learning_rate": args.actor_lr if args.actor_lr is not None else args.lr, "critic_learning_rate": args.lr, "actor_encoder_factory": encoder,
                  "critic_encoder_factory": critic_encoder, "tau": args.tau}
    configs = {
        "DoubleDQN": lambda: d3rlpy.algos.DoubleDQNConfig(**common, **discrete),
        "DiscreteCQL": lambda: d3rlpy.algos.DiscreteCQLConfig(**common, **discrete),
        "DiscreteBCQ": lambda: d3rlpy.algos.DiscreteBCQConfig(**common, **discrete),
        "SAC": lambda: d3rlpy.algos.SACConfig(**common, **continuous),
        "TD3": lambda: d3rlpy.algos.TD3Config(**common, **continuous),
        "TD3PlusBC": lambda: d3rlpy.algos.TD3PlusBCConfig(**common, **continuous),
        "CQL": lambda: d3rlpy.algos.CQLConfig(**common, **continuous),
        # IQL's V(s) has its own encoder, d3rlpy's default 256x256 unless given: the same hidden sizes as ours
        "IQL": lambda: d3rlpy.algos.IQLConfig(**common, **continuous, value_encoder_factory=encoder),
    }
    return configs[algorithm]().create(device="cpu:0")


def greedy_returns(algo, env_id: str, episodes: int, seed: int) -> list[float]:
    import gymnasium as gym

    returns = []
    with gym.make(env_id) as env:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                action = algo.predict(np.asarray(obs, np.float32)[None])[0]
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logged", required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--algorithm", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--hidden", type=int, nargs="+", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True, help="the learning rate (continuous: the critic's)")
    parser.add_argument("--actor-lr", type=float, help="continuous: the actor's learning rate (default: --lr)")
    parser.add_argument("--gamma", type=float, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--target-update-interval", type=int, default=100, help="discrete: hard target copies")
    parser.add_argument("--tau", type=float, default=0.005, help="continuous: soft target rate")
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--standardize-observations", action="store_true",
                        help="d3rlpy's StandardObservationScaler (off in the matrix: d3rlpy's default)")
    parser.add_argument("--critic-layer-norm", action="store_true",
                        help="continuous: layer norm in the critics' hidden layers (not the actor's or IQL's V(s))")
    parser.add_argument("--eval-seed", type=int, default=10_000)
    parser.add_argument("--episodes-file", help="JSON list of the mdp ids to train on (the matrix passes batchrl's "
                                                "training split); default: every logged episode")
    args = parser.parse_args()

    import d3rlpy
    import torch

    torch.set_num_threads(1)
    d3rlpy.seed(args.seed)
    discrete = args.algorithm in ("DoubleDQN", "DiscreteCQL", "DiscreteBCQ")
    episodes = None
    if args.episodes_file:
        with open(args.episodes_file) as fh:
            episodes = set(json.load(fh))
    obs, actions, rewards, terminals, timeouts = load_logged(args.logged, discrete, episodes)
    dataset = d3rlpy.dataset.MDPDataset(
        obs, actions, rewards, terminals, timeouts=timeouts,
        action_space=d3rlpy.constants.ActionSpace.DISCRETE if discrete else d3rlpy.constants.ActionSpace.CONTINUOUS)
    algo = build(args.algorithm, args)
    started = time.perf_counter()
    algo.fit(dataset, n_steps=args.steps, n_steps_per_epoch=args.steps, show_progress=False, save_interval=10 ** 9,
             logger_adapter=d3rlpy.logging.NoopAdapterFactory())
    train_seconds = time.perf_counter() - started
    returns = greedy_returns(algo, args.env, args.episodes, args.eval_seed)
    print(json.dumps({"mean_return": float(np.mean(returns)), "returns": returns, "gradient_steps": args.steps,
                      "train_seconds": round(train_seconds, 1)}))


if __name__ == "__main__":
    main()
