"""Offline Pendulum: continuous-action batch RL from uniformly random data (issue 10).

Per seed: 40,000 random Pendulum-v1 transitions (``generate --policy random``, 200-step episodes) ->
timeline -> normalize (states) -> normalize (actions, CONTINUOUS_ACTION) -> prepare (90/10 split) ->
``train`` with each config -> 30 greedy episodes of the exported actor (seeds disjoint from the
data's). Prints one JSON line per run and a Markdown table; writes ``<workdir>/results-<configs>.json``.

    .venv/bin/python benchmarks/offline_pendulum.py                          # shipped configs, 3 seeds
    .venv/bin/python benchmarks/offline_pendulum.py --seeds 0 --configs configs/reagent/sac_pendulum_offline.yaml

Bars: ReAgent's >= -1000 mean over 30 episodes (sac_pendulum_offline.yaml); ours >= -400.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from seed_table import print_seed_table, seed_report  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ("configs/pendulum_sac_offline.yaml", "configs/pendulum_td3_offline.yaml",
           "configs/pendulum_td3bc_offline.yaml")
ENV = "Pendulum-v1"


def prepare_data(workdir: pathlib.Path, seed: int, transitions: int, spark_master: str) -> dict[str, str]:
    """generate -> timeline -> normalize (states, actions) -> prepare for one seed (reused when there)."""
    from batchrl import storage
    from batchrl.data.gym_logging import GenerateOptions, generate
    from batchrl.data.normalize import NormalizeOptions, normalize
    from batchrl.data.prepare import PrepareOptions, prepare
    from batchrl.data.timeline import TimelineOptions, timeline

    d = workdir / f"data-seed{seed}"
    paths = {name: str(d / name) for name in ("logged", "timeline", "normalization.json",
                                              "action_normalization.json", "train", "eval")}
    if storage.exists(paths["train"]) and storage.exists(paths["eval"]):
        return paths
    generate(paths["logged"], GenerateOptions(env=ENV, transitions=transitions, seed=seed))
    timeline(paths["logged"], paths["timeline"],
             TimelineOptions(start_ds="2019-01-01", end_ds="2019-01-01", add_terminal_state_row=True), spark_master)
    normalize(paths["timeline"], paths["normalization.json"], NormalizeOptions(seed=seed, skip_box_cox=True),
              spark_master)
    normalize(paths["timeline"], paths["action_normalization.json"],
              NormalizeOptions(seed=seed, column="action", feature_type="CONTINUOUS_ACTION"), spark_master)
    prepare(paths["timeline"], paths["normalization.json"], paths["train"], paths["eval"],
            PrepareOptions(split_seed=seed), spark_master, action_normalization=paths["action_normalization.json"])
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--transitions", type=int, default=40000)
    parser.add_argument("--episodes", type=int, default=30, help="greedy evaluation episodes per run")
    parser.add_argument("--epochs", type=int, default=None, help="override num_epochs (quick checks)")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "offline_pendulum"))
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bar", type=float, default=-400.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    import torch

    from batchrl.config import load_config
    from batchrl.evaluation.rollouts import greedy_rollouts
    from batchrl.serving.export import load_policy
    from batchrl.training.train import train

    torch.set_num_threads(1)
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    names = [pathlib.Path(c).stem for c in args.configs]
    configs = {name: load_config(ROOT / c) for name, c in zip(names, args.configs, strict=True)}
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for seed in args.seeds:
        data = prepare_data(workdir, seed, args.transitions, args.spark_master)
        for name, config in configs.items():
            config = config.model_copy(update={"seed": seed, **({"num_epochs": args.epochs} if args.epochs else {})})
            output = str(workdir / f"{name}-seed{seed}")
            started = time.perf_counter()
            summary = train(config, data["train"], data["eval"], data["normalization.json"], output,
                            device=args.device)
            train_s = time.perf_counter() - started
            rollouts = greedy_rollouts(load_policy(f"{output}/model.torchscript"), ENV, args.episodes,
                                       seed=10_000 + seed)
            row = {"seed": seed, "mean_return": float(rollouts.returns.mean()),
                   "std_return": float(rollouts.returns.std()), "min_return": float(rollouts.returns.min()),
                   "epochs": summary.epochs, "eval_td_loss": summary.eval_td_loss,
                   "transitions_per_s": summary.transitions_per_s, "train_seconds": round(train_s, 1)}
            results[name].append(row)
            print(json.dumps({"config": name, **row}), flush=True)
    report = seed_report(results, args.bar, "train_seconds")
    (workdir / f"results-{'-'.join(names)}.json").write_text(json.dumps(
        {"per_seed": results, "summary": report, "episodes": args.episodes, "bar": args.bar,
         "transitions": args.transitions}, indent=2))
    print_seed_table(report, args.seeds, args.bar, "train_seconds", "train s (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
