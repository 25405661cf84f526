"""Offline CartPole for every discrete offline-RL algorithm: QR-DQN, C51, BCQ, CRR, IQL.

The same chain as ``benchmarks/offline_cartpole.py`` (whose data preparation and greedy rollouts this
reuses; ``<workdir>/data-seedN`` is prepared when missing, or may link to that benchmark's): 30,000 random CartPole-v0
transitions -> timeline -> normalize -> prepare -> ``train`` with each shipped config -> 100 greedy
episodes of ``model.torchscript`` (seeds disjoint from the data's). Prints one JSON line per run and a
Markdown table; writes ``<workdir>/algorithms_results-<algorithms>.json``.

    .venv/bin/python benchmarks/offline_cartpole_algorithms.py                 # 5 configs x 5 seeds
    .venv/bin/python benchmarks/offline_cartpole_algorithms.py --seeds 0,1 --algorithms qrdqn c51
    .venv/bin/python benchmarks/offline_cartpole_algorithms.py --no-cpe        # skip the CPE models

``--no-cpe`` trains without the CPE reward/value models: they are separate networks built after the
policy's, so the policy (and its returns) is the same; only the time changes.

Bar (issue 10): each shipped config reaches a mean return >= 195 in at least 4 of 5 seeds.
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
from offline_cartpole import greedy_returns, prepare_data  # noqa: E402
from seed_table import print_seed_table, seed_report  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
ALGORITHMS = ("qrdqn", "c51", "bcq", "crr", "iql")


def without_cpe(config):
    """``config`` with eval_parameters.calc_cpe_in_training off."""
    from batchrl.config import EvaluationParameters

    model = config.model.value.model_copy(update={"eval_parameters": EvaluationParameters(calc_cpe_in_training=False)})
    return config.model_copy(update={"model": config.model.model_copy(update={config.model.name: model})})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--transitions", type=int, default=30000)
    parser.add_argument("--episodes", type=int, default=100, help="greedy evaluation episodes per seed")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "offline_cartpole_algorithms"))
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-cpe", action="store_true", help="train without the CPE models (same policy)")
    parser.add_argument("--bar", type=float, default=195.0)
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
    configs = {algo: load_config(ROOT / "configs" / f"cartpole_{algo}_offline.yaml") for algo in args.algorithms}
    if args.no_cpe:
        configs = {algo: without_cpe(config) for algo, config in configs.items()}
    results: dict[str, list[dict]] = {algo: [] for algo in configs}
    first = next(iter(configs.values()))
    for seed in seeds:
        data = prepare_data(workdir, seed, args.transitions, first, args.spark_master)
        for algo, config in configs.items():
            config = config.model_copy(update={"seed": seed})
            output = str(workdir / f"cartpole_{algo}_offline-seed{seed}")
            started = time.perf_counter()
            summary = train(config, data["train"], data["eval"], data["normalization.json"], output,
                            device=args.device)
            train_s = time.perf_counter() - started
            returns = greedy_returns(f"{output}/model.torchscript", config.env_name or "CartPole-v0",
                                     args.episodes, seed=10_000 + seed, max_steps=config.max_steps)
            row = {"seed": seed, "mean_return": float(returns.mean()), "min_return": float(returns.min()),
                   "eval_td_loss": summary.eval_td_loss, "transitions_per_s": summary.transitions_per_s,
                   "train_seconds": round(train_s, 1)}
            results[algo].append(row)
            print(json.dumps({"algorithm": algo, **row}), flush=True)
    report = seed_report(results, args.bar, "train_seconds")
    (workdir / f"algorithms_results-{'-'.join(configs)}.json").write_text(json.dumps(
        {"per_seed": results, "summary": report, "episodes": args.episodes, "bar": args.bar,
         "cpe_models": not args.no_cpe}, indent=2))
    print_seed_table(report, seeds, args.bar, "train_seconds", "train s (median)", label="algorithm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
