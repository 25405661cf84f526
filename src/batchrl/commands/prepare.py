"""`batchrl prepare`: timeline table -> dense train and eval training tables."""

from __future__ import annotations

import argparse

from batchrl.commands._spark_options import add_engine_option


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prepare", help="build the dense train/eval training tables from a timeline table",
                       description="Compute rewards (custom SQL, multi-step discounted sums), split episodes "
                       "into train and eval by a stable hash of mdp_id, turn sparse features into dense "
                       "vectors over the normalization's feature ids and actions into indices and masks (continuous "
                       "actions into vectors), and "
                       "write two Parquet datasets with the feature ids and action names in their metadata.")
    p.add_argument("--input", required=True, help="timeline table URI")
    p.add_argument("--normalization", required=True, help="normalization JSON (from `batchrl normalize`)")
    p.add_argument("--output-train", required=True, help="train table URI")
    p.add_argument("--output-eval", required=True, help="eval table URI")
    p.add_argument("--action-normalization", help="continuous (map) actions: the CONTINUOUS_ACTION normalization "
                   "of the action column (`batchrl normalize --column action --feature-type CONTINUOUS_ACTION`)")
    p.add_argument("--actions", help="discrete action names in index order, comma-separated (default: the "
                   "sorted distinct logged actions)")
    p.add_argument("--table-sample", type=float, help="percent of episodes in train (default 90)")
    p.add_argument("--eval-table-sample", type=float, help="percent of episodes in eval (default 10)")
    p.add_argument("--split-seed", type=int, help="seed of the episode hash (default 0)")
    p.add_argument("--multi-steps", type=int, help="K of a multi-step timeline (needs --gamma)")
    p.add_argument("--gamma", type=float, help="discount of the multi-step reward")
    p.add_argument("--custom-reward-expression", metavar="SQL",
                   help="Spark SQL expression over the timeline row used as reward (COALESCE(expr, 0))")
    add_engine_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from batchrl.commands._common import build_options, print_summary
    from batchrl.data.prepare import PrepareOptions, prepare

    actions = [a.strip() for a in args.actions.split(",")] if args.actions is not None else None
    options = build_options(
        PrepareOptions, "batchrl prepare", actions=actions, table_sample=args.table_sample,
        eval_table_sample=args.eval_table_sample, split_seed=args.split_seed, multi_steps=args.multi_steps,
        gamma=args.gamma, custom_reward_expression=args.custom_reward_expression)
    print_summary(prepare(args.input, args.normalization, args.output_train, args.output_eval, options,
                          spark_master=args.spark_master, action_normalization=args.action_normalization,
                          engine=args.engine))
    return 0
