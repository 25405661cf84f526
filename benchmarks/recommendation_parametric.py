"""Offline Parametric DQN in the recommendation simulator vs the logging, myopic and random policies (issue 19).

Per seed: ``batchrl run configs/recommendation_parametric_dqn_offline.yaml`` with ``seed`` replaced (20,000
steps logged by the softmax over the simulator's hand-made item score -> timeline -> normalize (states,
items) -> prepare -> ParametricDQN -> evaluate): the mean return of the exported greedy policy and of the
``logging``, ``myopic`` and ``random`` baselines over the same evaluation episodes (metrics.json
``gym.baselines``), and the CPE estimates (DR, SDR, WDR, MAGIC) of the softmax(Q/temperature) target policy
beside its simulated discounted return (``gym.target_policy``). Prints one JSON line per seed and Markdown
tables; writes ``--out``.

    .venv/bin/python benchmarks/recommendation_parametric.py --workdir /tmp/rec-bench          # seeds 0-4
    .venv/bin/python benchmarks/recommendation_parametric.py --seeds 0 --config configs/...yaml

Bar: the learned policy beats both the logging and the myopic policy on >= 4 of 5 seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "recommendation_parametric_dqn_offline.yaml"
POLICIES = ("model", "logging", "myopic", "random")


def run_seed(config_path: pathlib.Path, seed: int, workdir: pathlib.Path) -> dict:
    from batchrl.config import load_config
    from batchrl.workflow import RunOptions, run_workflow

    config = load_config(config_path).model_copy(update={"seed": seed})
    started = time.perf_counter()
    results = run_workflow(config, RunOptions(workdir=str(workdir / f"seed{seed}"), device="cpu"))
    metrics = json.loads((workdir / f"seed{seed}" / "evaluation" / "metrics.json").read_text())
    gym = metrics["gym"]
    row = {"seed": seed, "model": gym["mean_return"], "model_ci": [gym["ci_low"], gym["ci_high"]],
           "model_length": gym["mean_length"], "episodes": gym["episodes"],
           **{name: gym["baselines"][name]["mean_return"] for name in ("logging", "myopic", "random")},
           "logged_mean_return": results["generate"]["mean_episode_return"],
           # CPE of the softmax(Q/temperature) target policy vs its simulated discounted return
           "target_policy_discounted_return": gym["target_policy"]["mean_discounted_return"],
           **{f"cpe_{name}": metrics["cpe"]["estimates"][name]["raw"] for name in ("DR", "SDR", "WDR", "MAGIC")
              if name in metrics["cpe"]["estimates"]},
           "seconds": round(time.perf_counter() - started, 1)}
    row["beats_logging_and_myopic"] = row["model"] > max(row["logging"], row["myopic"])
    if "cpe_SDR" in row:
        row["sdr_relative_error"] = row["cpe_SDR"] / row["target_policy_discounted_return"] - 1
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=pathlib.Path, default=CONFIG)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("/tmp/batchrl-recommendation-bench"))
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "recommendation_parametric.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(args.config, seed, args.workdir))
        print(json.dumps(rows[-1]), flush=True)
        args.out.write_text(json.dumps({"config": str(args.config.relative_to(ROOT)) if args.config.is_relative_to(ROOT)
                                        else str(args.config), "rows": rows}, indent=1) + "\n")
    wins = sum(r["beats_logging_and_myopic"] for r in rows)
    print("\n| seed | " + " | ".join(POLICIES) + " | model > logging and myopic |")
    print("|---|" + "---|" * (len(POLICIES) + 1))
    for r in rows:
        print(f"| {r['seed']} | " + " | ".join(f"{r[p]:.2f}" for p in POLICIES) +
              f" | {'yes' if r['beats_logging_and_myopic'] else 'no'} |")
    print(f"\nmodel beats logging and myopic on {wins}/{len(rows)} seeds")
    print("\n| seed | target policy's simulated discounted return | SDR | WDR | SDR error |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['target_policy_discounted_return']:.3f} | {r.get('cpe_SDR', float('nan')):.3f} | "
              f"{r.get('cpe_WDR', float('nan')):.3f} | {100 * r.get('sdr_relative_error', float('nan')):+.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
