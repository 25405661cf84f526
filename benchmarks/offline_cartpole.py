"""Offline CartPole quality benchmark: the whole chain from random data to a greedy policy.

Per seed: ``generate`` 30,000 random CartPole-v0 transitions -> ``timeline`` -> ``normalize`` (the
config's preprocessing_options) -> ``prepare`` (the config's actions and 90/10 split) -> ``train`` with
each config -> greedy rollouts of ``model.torchscript`` in CartPole-v0 (100 episodes, seeds disjoint
from the data's). Reports the mean return per seed and config, and training transitions/s.

    .venv/bin/python benchmarks/offline_cartpole.py                      # DQN default and CQL, 5 seeds
    .venv/bin/python benchmarks/offline_cartpole.py --seeds 0 --configs configs/cartpole_dqn_offline.yaml
    .venv/bin/python benchmarks/offline_cartpole.py --throughput     # training transitions/s only

Bar (issue 5): the shipped default reaches a mean >= 180 in at least 4 of 5 seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from seed_table import print_seed_table, seed_report  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = [str(ROOT / "configs" / "cartpole_dqn_offline.yaml"),
                   str(ROOT / "configs" / "cartpole_cql_offline.yaml")]


def greedy_returns(model_uri: str, env_id: str, episodes: int, seed: int, max_steps: int | None = None) -> np.ndarray:
    """Undiscounted return of each of ``episodes`` greedy episodes of the exported model (discrete actions:
    the argmax; continuous ones: the actor's action, in the environment's units)."""
    import gymnasium as gym

    from batchrl.serving.export import load_policy

    policy = load_policy(model_uri)
    native = gym.spec(env_id).vector_entry_point is not None  # CartPole: gymnasium's vectorized env
    envs = gym.make_vec(env_id, num_envs=episodes, vectorization_mode="vector_entry_point" if native else "sync")
    continuous = isinstance(envs.single_action_space, gym.spaces.Box)
    obs, _ = envs.reset(seed=seed)
    returns = np.zeros(episodes)
    done = np.zeros(episodes, dtype=bool)
    steps = 0
    while not done.all() and (max_steps is None or steps < max_steps):
        states = np.asarray(obs, dtype=np.float32)
        actions = policy.outputs(states).numpy() if continuous else policy.greedy_actions(states)
        obs, reward, terminated, truncated, _ = envs.step(actions)
        returns += reward * ~done
        done |= terminated | truncated
        steps += 1
    envs.close()
    return returns


def prepare_data(workdir: pathlib.Path, seed: int, transitions: int, config, spark_master: str) -> dict[str, str]:
    """Run generate -> timeline -> normalize -> prepare for one seed (reused when already there)."""
    from batchrl import storage
    from batchrl.data.gym_logging import GenerateOptions, generate
    from batchrl.data.normalize import NormalizeOptions, normalize
    from batchrl.data.prepare import PrepareOptions, prepare
    from batchrl.data.timeline import TimelineOptions, timeline

    d = workdir / f"data-seed{seed}"
    paths = {name: str(d / name) for name in ("logged", "timeline", "normalization.json", "train", "eval")}
    if storage.exists(paths["train"]) and storage.exists(paths["eval"]):
        return paths
    model = config.model.value
    generate(paths["logged"], GenerateOptions(env=config.env_name or "CartPole-v0", transitions=transitions,
                                              seed=seed))
    timeline(paths["logged"], paths["timeline"],
             TimelineOptions(start_ds="2019-01-01", end_ds="2019-01-01", add_terminal_state_row=True),
             spark_master)
    preprocessing = model.preprocessing_options.model_dump(exclude_none=True)
    normalize(paths["timeline"], paths["normalization.json"], NormalizeOptions(**{"seed": seed, **preprocessing}),
              spark_master)
    spec = config.input_table_spec
    prepare(paths["timeline"], paths["normalization.json"], paths["train"], paths["eval"],
            PrepareOptions(actions=model.trainer_param.actions, table_sample=spec.table_sample or 90,
                           eval_table_sample=spec.eval_table_sample or 10, split_seed=seed), spark_master)
    return paths


def throughput(workdir: pathlib.Path, config, data: dict[str, str], device: str, epochs: int = 3) -> None:
    """Training transitions/s of ``config`` with and without the CPE models, 1 and 2 torch threads."""
    import torch

    from batchrl.training.train import train

    print("| CPE models in training | torch threads | training transitions/s |")
    print("|---|---|---|")
    for cpe in (False, True):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = config.model.value.model_copy(update={"eval_parameters": {"calc_cpe_in_training": cpe}})
            model = type(model).model_validate(model.model_dump())
            variant = config.model_copy(update={"num_epochs": epochs,
                                                "model": type(config.model)(**{config.model.name: model})})
            summary = train(variant, data["train"], data["eval"], data["normalization.json"],
                            str(workdir / f"throughput-cpe{int(cpe)}-threads{threads}"), device=device)
            print(f"| {'yes' if cpe else 'no'} | {threads} | {summary.transitions_per_s:,.0f} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--transitions", type=int, default=30000)
    parser.add_argument("--episodes", type=int, default=100, help="greedy evaluation episodes per seed")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "offline_cartpole"))
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--bar", type=float, default=180.0)
    parser.add_argument("--throughput", action="store_true",
                        help="only measure training transitions/s (first config, first seed's data)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    import torch

    from batchrl.config import load_config
    from batchrl.training.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = {pathlib.Path(c).stem: load_config(c) for c in args.configs}
    results: dict[str, list[dict]] = {name: [] for name in configs}
    first = next(iter(configs.values()))
    if args.throughput:
        throughput(workdir, first, prepare_data(workdir, seeds[0], args.transitions, first, args.spark_master),
                   args.device)
        return 0
    for seed in seeds:
        started = time.perf_counter()
        data = prepare_data(workdir, seed, args.transitions, first, args.spark_master)
        data_s = time.perf_counter() - started
        for name, config in configs.items():
            config = config.model_copy(update={"seed": seed})
            output = str(workdir / f"{name}-seed{seed}")
            summary = train(config, data["train"], data["eval"], data["normalization.json"], output,
                            device=args.device)
            returns = greedy_returns(f"{output}/model.torchscript", config.env_name or "CartPole-v0",
                                     args.episodes, seed=10_000 + seed, max_steps=config.max_steps)
            row = {"seed": seed, "mean_return": float(returns.mean()), "min_return": float(returns.min()),
                   "eval_td_loss": summary.eval_td_loss, "transitions_per_s": summary.transitions_per_s,
                   "data_seconds": round(data_s, 1)}
            results[name].append(row)
            print(json.dumps({"config": name, **row}), flush=True)
    report = seed_report(results, args.bar, "transitions_per_s")
    (workdir / f"results-{'-'.join(configs)}.json").write_text(json.dumps({"per_seed": results, "summary": report,
                                                      "episodes": args.episodes, "bar": args.bar}, indent=2))
    print_seed_table(report, seeds, args.bar, "transitions_per_s", "training transitions/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
