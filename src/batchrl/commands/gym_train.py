"""`batchrl gym-train`: online training against a gymnasium simulator (exit 1 below the passing bar)."""

from __future__ import annotations

import argparse

from batchrl.commands._common import print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("gym-train", help="train online in a gymnasium env and evaluate the exported policy",
                       description="Prefill a replay buffer with a random policy, train the configured model "
                       "online (epsilon-greedy/softmax exploration; SAC/TD3 their own), export model.torchscript "
                       "and evaluate it greedily. Exits 1 when the mean return is below passing_score_bar.")
    p.add_argument("config", help="gym config YAML (configs/gym/*.yaml)")
    p.add_argument("--output", required=True, help="model directory to write (path, file:// or s3://)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the config's)")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--num-train-episodes", type=int, help="override the config's num_train_episodes")
    p.add_argument("--num-eval-episodes", type=int, help="override the config's num_eval_episodes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from batchrl.training.gym_config import load_gym_config, parse_gym_config
    from batchrl.training.online import gym_train

    config = load_gym_config(args.config)
    overrides = {"seed": args.seed, "num_train_episodes": args.num_train_episodes,
                 "num_eval_episodes": args.num_eval_episodes}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        config = parse_gym_config({**config.model_dump(exclude_unset=True), **overrides}, where=args.config)
    summary = gym_train(config, args.output, device=args.device)
    print_json(summary)
    return 1 if summary["passed"] is False else 0
