"""`batchrl cpe`: counterfactual evaluation of any policy from a table of logged decisions."""

from __future__ import annotations

import argparse
import sys

from batchrl.commands._common import build_options


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cpe", help="estimate any policy's value from a table of logged decisions and its "
                       "action probabilities; write the estimates as JSON",
                       description="Counterfactual policy evaluation from numbers alone: TABLE (Parquet) has one "
                       "row per logged decision with mdp_id, sequence_number, reward, action, action_probability "
                       "and target_probabilities, and optionally logging_probabilities, reward_estimates and "
                       "q_estimates (docs/evaluation.md). Writes every estimate the columns allow (DM, IPS, "
                       "SNIPS, DR, Switch, SwitchDR; SDR, WDR, MAGIC with --sequential) with 95%% intervals, "
                       "diagnostics and warnings; the others are listed under `skipped` with the reason.")
    p.add_argument("--input", required=True, help="the table (Parquet file or dataset; path, file:// or s3://)")
    p.add_argument("--output", required=True, help="the JSON file to write")
    p.add_argument("--sequential", action="store_true", help="also the sequential estimators (SDR, WDR, MAGIC)")
    p.add_argument("--gamma", type=float, help="discount of the sequential estimators (default 1)")
    p.add_argument("--bootstrap", type=int, help="bootstrap replicates of the intervals (default 200; 0: none)")
    p.add_argument("--seed", type=int, help="seed of the bootstrap (default 0)")
    p.add_argument("--switch-threshold", type=float, help="weight threshold of Switch/SwitchDR (default 10)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from batchrl.evaluation.cpe_table import CPETableOptions, evaluate_table
    from batchrl.evaluation.report import format_cpe_table

    options = build_options(CPETableOptions, "batchrl cpe", sequential=args.sequential, gamma=args.gamma,
                            bootstrap=args.bootstrap, seed=args.seed, switch_threshold=args.switch_threshold)
    document = evaluate_table(args.input, args.output, options)
    print(format_cpe_table(document), file=sys.stderr)
    for name, reason in document["skipped"].items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    return 0
