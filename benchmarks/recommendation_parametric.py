"""Offline Parametric DQN in the recommendation simulator vs the logging, myopic and random policies, and the CPE
of its softmax policy against the simulator's truth (issue 19).

Per seed: ``batchrl run configs/recommendation_parametric_dqn_offline.yaml`` with ``seed`` replaced (logged by
the softmax over the simulator's hand-made item score -> timeline -> normalize (states, items) -> prepare ->
ParametricDQN -> evaluate): the mean return of the exported greedy policy and of the ``logging``, ``myopic``
and ``random`` baselines over the same evaluation episodes (metrics.json ``gym.baselines``), and the CPE
estimates of the target policy softmax(Q/temperature) beside their simulated truths:

- one-step DR vs the target policy's expected immediate reward on the eval table's states, from the
  simulator's expected rewards (metrics.json ``cpe.simulated_one_step_value``);
- SDR, WDR, MAGIC vs the target policy's mean discounted return over the evaluation episodes
  (``gym.target_policy``; its standard error is printed beside it).

Prints one JSON line per seed and Markdown tables; writes ``--out``.

    .venv/bin/python benchmarks/recommendation_parametric.py --workdir /tmp/rec-bench          # seeds 0-4
    .venv/bin/python benchmarks/recommendation_parametric.py --seeds 0 --config configs/...yaml

Bars: the learned policy beats both the logging and the myopic policy on >= 4 of 5 seeds; DR and SDR within
10% of their simulated truths.
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
ESTIMATORS = ("DR", "SDR", "WDR", "MAGIC")  # DR first: its truth is the one-step value


def cpe_columns(metrics: dict) -> dict:
    """The target policy's truths, the CPE estimates, their relative errors and the diagnostics."""
    target, cpe = metrics["gym"]["target_policy"], metrics["cpe"]
    row = {"target_temperature": target["temperature"], "target_mean_return": target["mean_return"],
           "target_policy_discounted_return": target["mean_discounted_return"],
           "target_policy_discounted_std_error": target["discounted_return_std_error"],
           "one_step_truth": cpe["simulated_one_step_value"],
           "eval_rows": cpe["logging_policy"]["rows"], "eval_episodes": cpe["logging_policy"]["episodes"],
           **{f"cpe_{name}": cpe["estimates"][name]["raw"] for name in ESTIMATORS},
           # per step, (mean w)^2 / mean w^2 of w = pi/mu over the logged rows: 1 / share estimates
           # E_mu[(pi/mu)^2] = 1 + chi^2(pi || mu), which a sequential weight multiplies per step
           "per_step_effective_share": cpe["estimates"]["DR"]["diagnostics"]["effective_sample_share"],
           "effective_episodes": cpe["estimates"]["SDR"]["diagnostics"]["effective_sample_size"],
           "sequential_flags": cpe["estimates"]["SDR"]["diagnostics"]["flags"],
           "recommended": cpe["recommended"].get("estimator")}
    row["DR_relative_error"] = row["cpe_DR"] / row["one_step_truth"] - 1
    for name in ESTIMATORS[1:]:
        row[f"{name}_relative_error"] = row[f"cpe_{name}"] / row["target_policy_discounted_return"] - 1
    row["dr_and_sdr_within_10pct"] = all(abs(row[f"{name}_relative_error"]) <= 0.1 for name in ("DR", "SDR"))
    return row


def run_seed(config_path: pathlib.Path, seed: int, workdir: pathlib.Path, temperatures: list[float]) -> dict:
    from batchrl.config import load_config
    from batchrl.evaluation.evaluate import evaluate
    from batchrl.stages import stage_options
    from batchrl.workflow import RunOptions, run_workflow

    config = load_config(config_path).model_copy(update={"seed": seed})
    started = time.perf_counter()
    run = workdir / f"seed{seed}"
    results = run_workflow(config, RunOptions(workdir=str(run), device="cpu"))
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    gym = metrics["gym"]
    row = {"seed": seed, "model": gym["mean_return"], "model_ci": [gym["ci_low"], gym["ci_high"]],
           "model_length": gym["mean_length"], "episodes": gym["episodes"],
           **{name: gym["baselines"][name]["mean_return"] for name in ("logging", "myopic", "random")},
           "logged_mean_return": results["generate"]["mean_episode_return"],
           # CPE of the softmax(Q/temperature) target policy vs its simulated truths
           **cpe_columns(metrics), "seconds": round(time.perf_counter() - started, 1)}
    row["beats_logging_and_myopic"] = row["model"] > max(row["logging"], row["myopic"])
    # the same model and eval table, CPE of softmax(Q/T) at other temperatures (evaluate's `temperature`)
    options = stage_options(config)["evaluate"]
    row["other_temperatures"] = []
    for temperature in temperatures:
        out = run / f"evaluation_T{temperature:g}"
        evaluate(str(run / "model"), str(run / "training_table" / "eval"), str(out),
                 options.model_copy(update={"temperature": temperature}))
        row["other_temperatures"].append(cpe_columns(json.loads((out / "metrics.json").read_text())))
    return row


def cpe_table(rows: list[dict]) -> None:
    print("\n| seed | T | target return | one-step truth | DR | DR error | discounted truth (s.e.) | SDR | WDR | MAGIC | "
          "SDR error | WDR error | MAGIC error | E[w^2]/E[w]^2 per step | effective episodes |")
    print("|---|" + "---|" * 14)
    for seed, r in rows:
        print(f"| {seed} | {r['target_temperature']:g} | {r['target_mean_return']:.2f} | {r['one_step_truth']:.4f} | "
              f"{r['cpe_DR']:.4f} | {100 * r['DR_relative_error']:+.1f}% | "
              f"{r['target_policy_discounted_return']:.3f} ({r['target_policy_discounted_std_error']:.3f}) | "
              + " | ".join(f"{r[f'cpe_{n}']:.3f}" for n in ESTIMATORS[1:]) + " | "
              + " | ".join(f"{100 * r[f'{n}_relative_error']:+.1f}%" for n in ESTIMATORS[1:])
              + f" | {1 / r['per_step_effective_share']:.2f} | {r['effective_episodes']:.1f} of {r['eval_episodes']} |")
    for name in ESTIMATORS:
        print(f"{name} within 10% of its truth on {sum(abs(r[f'{name}_relative_error']) <= 0.1 for _, r in rows)}/"
              f"{len(rows)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=pathlib.Path, default=CONFIG)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("/tmp/batchrl-recommendation-bench"))
    parser.add_argument("--temperatures", type=float, nargs="*", default=[0.1, 0.2],
                        help="also evaluate CPE of softmax(Q/T) at these T on the same runs")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "recommendation_parametric.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(args.config, seed, args.workdir, args.temperatures))
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
    cpe_table([(r["seed"], r) for r in rows])
    for i, temperature in enumerate(args.temperatures):
        print(f"\nThe same runs, target policy softmax(Q/{temperature:g}):")
        cpe_table([(r["seed"], r["other_temperatures"][i]) for r in rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
