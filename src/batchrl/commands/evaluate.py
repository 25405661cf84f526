"""`batchrl evaluate`: counterfactual evaluation on the eval table, gym rollouts, reports."""

from __future__ import annotations

import argparse
import sys

from batchrl.commands._common import build_options, print_summary


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("evaluate", help="CPE on the eval table and greedy gym rollouts; write metrics.json, "
                       "report.md and report.html",
                       description="Estimate the trained policy's value from the eval table (DM, IPS, SNIPS, DR, "
                       "Switch, SwitchDR, sequential DR, weighted DR, MAGIC, FQE; each with a 95%% bootstrap "
                       "interval and normalized by the logging policy's value), roll the greedy policy out in a "
                       "gymnasium environment, and write metrics.json, report.md and report.html. Exits 1 "
                       "when the mean return is below --passing-score-bar.")
    p.add_argument("--model", required=True, help="model directory written by `batchrl train`")
    p.add_argument("--eval", help="prepared eval table URI (for CPE)")
    p.add_argument("--env", help="gymnasium id for greedy rollouts, e.g. CartPole-v0")
    p.add_argument("--episodes", type=int, help="rollout episodes (default 50)")
    p.add_argument("--seed", type=int, help="seed of rollouts, bootstrap and FQE (default 42)")
    p.add_argument("--passing-score-bar", type=float, help="exit 1 when the mean return is below this")
    p.add_argument("--gamma", type=float, help="discount for the sequential estimators (default: training's)")
    p.add_argument("--temperature", type=float,
                   help="target policy softmax temperature for CPE; 0 = greedy (default: training's)")
    p.add_argument("--bootstrap", type=int, help="bootstrap replicates of the intervals (default 200)")
    p.add_argument("--switch-threshold", type=float, help="weight threshold of Switch/SwitchDR (default 10)")
    p.add_argument("--no-fqe", action="store_true", help="skip fitted Q evaluation")
    p.add_argument("--fqe-iterations", type=int, help="FQE iterations (default 300)")
    p.add_argument("--num-envs", type=int, help="environments stepped together (default 16)")
    p.add_argument("--max-steps", type=int, help="episode time limit (default: the environment's)")
    p.add_argument("--output", required=True, help="output directory URI (path, file:// or s3://)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from batchrl.evaluation.evaluate import EvaluateOptions, evaluate
    from batchrl.evaluation.report import format_cpe_table

    options = build_options(EvaluateOptions, "batchrl evaluate", env=args.env, episodes=args.episodes,
                            seed=args.seed, passing_score_bar=args.passing_score_bar, gamma=args.gamma,
                            temperature=args.temperature, bootstrap=args.bootstrap,
                            switch_threshold=args.switch_threshold, fqe=False if args.no_fqe else None,
                            fqe_iterations=args.fqe_iterations, num_envs=args.num_envs, max_steps=args.max_steps)
    result = evaluate(args.model, args.eval, args.output, options)
    print_summary(result)
    if result.cpe:
        print(format_cpe_table(result.cpe), file=sys.stderr)
    if result.passed is False:
        assert result.gym is not None  # passed is decided on the gym rollouts
        print(f"batchrl evaluate: mean return {result.gym_score:.4g} over {result.gym['episodes']} "
              f"episodes is below the passing score bar {result.passing_score_bar:g}", file=sys.stderr)
        return 1
    return 0
