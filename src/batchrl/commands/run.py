"""`batchrl run`: the whole workflow from one config, locally."""

from __future__ import annotations

import argparse
from typing import Any

from batchrl.results import StageResult, require


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the whole workflow (generate -> ... -> train -> evaluate) from a config",
                       description="Run generate (or use --input), validate, timeline, normalize, prepare, "
                       "train and evaluate from one ReAgent-shaped workflow config, writing every artifact "
                       "under --workdir. Exits 1 when the model misses the config's passing_score_bar.")
    p.add_argument("config", help="workflow config YAML (e.g. configs/cartpole_dqn_offline.yaml)")
    p.add_argument("--workdir", required=True, help="directory or s3:// prefix for the artifacts")
    p.add_argument("--input", help="use this logged table instead of generating one from env_name")
    p.add_argument("--ds", default="2019-01-01", help="ds written by generate (default 2019-01-01)")
    p.add_argument("--start-ds", help="timeline startDs (default: the earliest ds in the logged table)")
    p.add_argument("--end-ds", help="timeline endDs (default: the latest ds in the logged table)")
    p.add_argument("--engine", choices=["auto", "duckdb", "spark"],
                   help="data stages' engine (default: the config's engine key, auto = DuckDB in this process)")
    p.add_argument("--spark-master", default="local[*]", help="Spark master with --engine spark (default local[*])")
    p.add_argument("--device", help="training device: auto, cpu, cuda, cuda:N (default: the config's)")
    p.add_argument("--no-evaluate", action="store_true", help="stop after training")
    p.add_argument("--stop-after", choices=["generate", "validate", "timeline", "normalize", "prepare", "train"],
                   help="stop once this stage is done (e.g. prepare: the data stages only)")
    p.set_defaults(func=run)


def _artifact_line(name: str, result: StageResult, elapsed: float) -> None:
    """One line per finished stage: its time and its headline numbers
    (:meth:`~batchrl.results.StageResult.headline`; the engine by its first word)."""
    facts = ", ".join(f"{k}={v.split(' ')[0] if k == 'engine' else _short(v)}"
                      for k, v in require(result, "batchrl run").headline().items())
    print(f"[{elapsed:6.1f}s] {name:<17} {facts}", flush=True)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    from batchrl.config import load_config
    from batchrl.evaluation.evaluate import EvaluateResult
    from batchrl.evaluation.report import format_cpe_table
    from batchrl.workflow import RunOptions, run_workflow

    config = load_config(args.config)
    finished: dict[str, StageResult] = {}

    def on_stage(name: str, result: StageResult, elapsed: float) -> None:
        finished[name] = result
        _artifact_line(name, result, elapsed)

    results = run_workflow(config, RunOptions(
        workdir=args.workdir, input=args.input, ds=args.ds, start_ds=args.start_ds, end_ds=args.end_ds,
        spark_master=args.spark_master, engine=args.engine, device=args.device, evaluate=not args.no_evaluate,
        stop_after=args.stop_after, on_stage=on_stage))
    print("\nartifacts:")
    for name, uri in results["artifacts"].items():
        print(f"  {name:<17} {uri}")
    evaluation = finished.get("evaluate")
    if not isinstance(evaluation, EvaluateResult):
        return 0
    print(f"  {'report':<17} {evaluation.report_html}")
    gym = evaluation.gym
    if gym:
        print(f"\ngym score ({config.env_name}, {gym.get('episodes')} greedy episodes): "
              f"mean {gym['mean_return']:.1f} +- {gym.get('std_return', float('nan')):.1f}")
    if not config.model.continuous:
        print("\ncounterfactual policy evaluation (eval table):")
        print(format_cpe_table(evaluation.cpe))
    if evaluation.passed is False:
        print(f"\nFAILED: mean return below the passing score bar {evaluation.passing_score_bar}")
        return 1
    return 0
