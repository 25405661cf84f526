"""Same seed, same numbers: short deterministic training runs of every algorithm, recorded bitwise.

A refactor of the trainers must not change what they compute. Run this on the code before the change
with ``--write`` and on the code after it with ``--check``: every recorded float (per-epoch train and eval
terms, CPE estimates, the exported policy's outputs on fixed states, online returns) is compared as its
exact bit pattern (``float.hex``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/training_parity.py --write runs/parity-before.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/training_parity.py --check runs/parity-before.json

``benchmarks/training_parity-2f914cb.json`` holds the numbers of commit 2f914cb (before the algorithm
registry of issue 18) on the development machine (x86_64, torch 2.13.0 CPU); other CPUs or torch
versions may round differently, so record a fresh reference there before a refactor.

Runs (one torch thread, CPU): ``batchrl train`` for 2 epochs on a 600-transition random CartPole-v0 table
(every discrete algorithm; DQN with the CPE models) and on a 1,200-transition random Pendulum-v1 table
(SAC, SAC with a value network, TD3, TD3+BC); ``batchrl gym-train`` for a few episodes (DQN, CRR on
CartPole-v0; SAC, TD3 on Pendulum-v1).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import pathlib
import sys
import tempfile
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
NET = {"FullyConnected": {"sizes": [16], "activations": ["relu"]}}
CNET = {"FullyConnected": {"sizes": [16, 16], "activations": ["relu", "relu"]}}
DISCRETE_TRAINER = {"actions": [0, 1], "minibatch_size": 128, "rl": {"gamma": 0.9, "target_update_rate": 0.1},
                    "optimizer": {"Adam": {"lr": 0.01, "lr_schedulers": [{"StepLR": {"step_size": 1,
                                                                                     "gamma": 0.5}}]}}}
DISCRETE = {
    "DiscreteDQN": {"trainer_param": {**DISCRETE_TRAINER, "double_q_learning": True, "minibatches_per_step": 2},
                    "net_builder": NET, "cpe_net_builder": NET, "eval_parameters": {"calc_cpe_in_training": True}},
    "DiscreteCQL": {"trainer_param": {**DISCRETE_TRAINER, "alpha": 0.5, "rl": {"gamma": 0.9, "q_network_loss": "huber",
                                                                           "reward_boost": {"1": 0.5}}},
                    "net_builder": {"Dueling": {"sizes": [16], "activations": ["relu"]}}},
    "DiscreteQRDQN": {"trainer_param": {**DISCRETE_TRAINER, "num_atoms": 5}, "net_builder": NET},
    "DiscreteC51DQN": {"trainer_param": {**DISCRETE_TRAINER, "num_atoms": 11, "qmin": -5, "qmax": 15},
                       "net_builder": NET},
    "DiscreteBCQ": {"trainer_param": {**DISCRETE_TRAINER, "drop_threshold": 0.3}, "net_builder": NET,
                    "imitator_net_builder": NET},
    "DiscreteCRR": {"trainer_param": {**DISCRETE_TRAINER, "beta": 1.0, "actor_optimizer": {"Adam": {"lr": 0.01}}},
                    "actor_net_builder": NET, "critic_net_builder": NET},
    "DiscreteIQL": {"trainer_param": {**DISCRETE_TRAINER, "expectile": 0.8}, "actor_net_builder": NET,
                    "critic_net_builder": NET, "value_net_builder": NET},
}
CONTINUOUS_TRAINER = {"minibatch_size": 128, "rl": {"gamma": 0.9, "target_update_rate": 0.05},
                      "q_network_optimizer": {"Adam": {"lr": 0.003, "lr_schedulers": [
                          {"StepLR": {"step_size": 1, "gamma": 0.5}}]}},
                      "actor_network_optimizer": {"Adam": {"lr": 0.003}}}
CONTINUOUS = {
    "SAC": {"trainer_param": {**CONTINUOUS_TRAINER, "entropy_temperature": 0.1,
                              "alpha_optimizer": {"Adam": {"lr": 0.001}}},
            "actor_net_builder": {"GaussianFullyConnected": {"sizes": [16, 16], "activations": ["relu", "relu"]}},
            "critic_net_builder": CNET},
    "SAC+V": {"trainer_param": {**CONTINUOUS_TRAINER, "entropy_temperature": 0.1},
              "actor_net_builder": {"GaussianFullyConnected": {"sizes": [16], "activations": ["relu"]}},
              "critic_net_builder": CNET, "value_net_builder": NET},
    "TD3": {"trainer_param": {**CONTINUOUS_TRAINER, "delayed_policy_update": 2},
            "actor_net_builder": CNET, "critic_net_builder": CNET},
    "TD3+BC": {"trainer_param": {**CONTINUOUS_TRAINER, "bc_alpha": 2.5}, "actor_net_builder": CNET,
               "critic_net_builder": CNET},
}


#: Wall-clock measurements, which differ between any two runs.
TIMINGS = ("seconds", "transitions_per_s")


def exact(value: Any) -> Any:
    """Every float as its bit pattern (float.hex), wall-clock timings left out; containers recursively."""
    if isinstance(value, float):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): exact(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list | tuple):
        return [exact(v) for v in value]
    return value


def pendulum_tables(directory: pathlib.Path, transitions: int, seed: int) -> dict[str, str]:
    """Random-policy Pendulum-v1 transitions as prepared continuous-action tables (90/10 by episode)."""
    import gymnasium as gym
    import pyarrow as pa

    from batchrl import storage
    from batchrl.data.schema import CONTINUOUS_TRAINING_COLUMNS
    from batchrl.preprocessing.normalization import NormalizationParameters, to_json_dict, write_normalization

    env, rng = gym.make("Pendulum-v1", max_episode_steps=100), np.random.default_rng(seed)
    rows: list[dict] = []
    episode = 0
    while len(rows) < transitions:
        obs, _ = env.reset(seed=seed + episode)
        done, t = False, 0
        while not done:
            action = rng.uniform(-2.0, 2.0, 1).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            done = bool(terminated or truncated)
            rows.append({"reward": float(reward), "state_features": obs.tolist(), "state_features_presence": [True] * 3,
                         "next_state_features": next_obs.tolist(), "next_state_features_presence": [True] * 3,
                         "action": action.tolist(), "action_presence": [True], "next_action": [0.0],
                         "next_action_presence": [True], "possible_actions_mask": [],
                         "possible_next_actions_mask": [], "not_terminal": not terminated,
                         "action_probability": 0.25, "mdp_id": str(episode), "sequence_number": t, "step": 1,
                         "time_diff": 1, "metrics": [float(reward)], "metrics_presence": [True]})
            obs, t = next_obs, t + 1
        episode += 1
    env.close()
    schema = pa.schema(list(CONTINUOUS_TRAINING_COLUMNS.items()))
    states = np.asarray([r["state_features"] for r in rows])
    norm = {i: NormalizationParameters(feature_type="CONTINUOUS", mean=float(states[:, i].mean()),
                                       stddev=float(states[:, i].std())) for i in range(3)}
    action_norm = {0: NormalizationParameters(feature_type="CONTINUOUS_ACTION", min_value=-2.0, max_value=2.0)}
    meta = {"feature_ids": [0, 1, 2], "action_kind": "continuous", "action_names": ["0"], "metric_names": ["reward"],
            "action_feature_ids": [0], "action_normalization": to_json_dict(action_norm)}
    paths = {name: str(directory / name) for name in ("train", "eval", "norm.json")}
    for name, keep in (("train", lambda e: e % 10 != 0), ("eval", lambda e: e % 10 == 0)):
        part = [r for r in rows if keep(int(r["mdp_id"]))]
        storage.write_table(pa.Table.from_pylist(part, schema=schema), paths[name], metadata=meta)
    write_normalization(paths["norm.json"], norm)
    return paths


def offline_run(name: str, block: dict, data: dict[str, str], output: str, states: np.ndarray) -> dict:
    from batchrl.config import parse_config
    from batchrl.serving.export import load_policy
    from batchrl.training.train import train

    algorithm = name.split("+")[0]  # SAC+V: SAC with a value network; TD3+BC: TD3 with bc_alpha
    config = parse_config({"model": {algorithm: block}, "num_epochs": 2, "seed": 7, "device": "cpu"})
    summary = train(config, data["train"], data["eval"], data["norm.json"], output)
    written = json.loads(pathlib.Path(output, "training_summary.json").read_text())
    outputs = load_policy(f"{output}/model.torchscript").outputs(states)
    return {"per_epoch": written["per_epoch"], "final_losses": summary.final_losses,
            "eval_td_loss": summary.eval_td_loss, "global_step": written["global_step"],
            "outputs": outputs.double().numpy().tolist()}


def online_run(name: str, block: dict, env: str, output: str, states: np.ndarray) -> dict:
    from batchrl.serving.export import load_policy
    from batchrl.training.gym_config import parse_gym_config
    from batchrl.training.online import gym_train

    block = copy.deepcopy(block)
    block.pop("cpe_net_builder", None)
    block.pop("eval_parameters", None)
    config = parse_gym_config({"env": env, "model": {name: block}, "replay_memory_size": 2000,
                               "train_after_ts": 200, "train_every_ts": 1, "num_train_episodes": 3,
                               "num_eval_episodes": 2, "minibatch_size": 32, "seed": 5, "device": "cpu",
                               "max_steps": 60, "keep_best": {"every_episodes": 2, "episodes": 1}})
    summary = gym_train(config, output)
    outputs = load_policy(f"{output}/model.torchscript").outputs(states)
    return {key: summary[key] for key in ("env_steps", "updates", "final_losses", "train_returns_last_10", "eval",
                                          "keep_best")} | {"outputs": outputs.double().numpy().tolist()}


def record() -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from tests.support.training import cartpole_dataset

    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    states4 = np.random.default_rng(0).uniform(-1, 1, (16, 4)).astype(np.float32)
    states3 = np.random.default_rng(1).uniform(-1, 1, (16, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        base = pathlib.Path(tmp)
        (base / "cartpole").mkdir()
        (base / "pendulum").mkdir()
        cartpole = cartpole_dataset(base / "cartpole", transitions=600, seed=1)
        pendulum = pendulum_tables(base / "pendulum", transitions=1200, seed=2)
        for name, block in DISCRETE.items():
            results[f"train/{name}"] = offline_run(name, block, cartpole, str(base / name), states4)
            print(name, flush=True)
        for name, block in CONTINUOUS.items():
            results[f"train/{name}"] = offline_run(name, block, pendulum, str(base / name), states3)
            print(name, flush=True)
        for name in ("DiscreteDQN", "DiscreteCRR"):
            results[f"gym/{name}"] = online_run(name, DISCRETE[name], "CartPole-v0", str(base / f"gym-{name}"), states4)
            print("gym", name, flush=True)
        for name in ("SAC", "TD3"):
            block = copy.deepcopy(CONTINUOUS[name])
            results[f"gym/{name}"] = online_run(name, block, "Pendulum-v1", str(base / f"gym-{name}"), states3)
            print("gym", name, flush=True)
    return exact(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", help="record the numbers of the current code to this JSON file")
    group.add_argument("--check", help="compare the current code's numbers with this JSON file, bit for bit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    numbers = record()
    if args.write:
        pathlib.Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.write).write_text(json.dumps(numbers, indent=1, sort_keys=True))
        print(f"wrote {len(numbers)} runs to {args.write}")
        return 0
    reference = json.loads(json.dumps(exact(json.loads(pathlib.Path(args.check).read_text()))))
    differ = [run for run in sorted(set(reference) | set(numbers)) if reference.get(run) != numbers.get(run)]
    for run in differ:
        print(f"DIFFERS: {run}")
    print(f"{len(reference) - len(differ)} of {len(reference)} runs identical bit for bit")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
