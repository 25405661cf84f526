"""`batchrl timeline`: logged table -> timeline table (one row per state/next-state pair), DuckDB or Spark."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from batchrl.commands._common import print_summary
from batchrl.commands._spark_options import add_spark_mode_options, run_on_kubernetes

if TYPE_CHECKING:
    from batchrl.data.timeline import TimelineOptions


def _columns(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "timeline", help="build the timeline table (state, action, reward, next state ...)",
        description="Build the timeline table of spec section 2 from a logged table. Options come from "
        "--config (a JSON file of ReAgent TimelineConfiguration keys, e.g. startDs, endDs, "
        "addTerminalStateRow) and from the flags below, which take precedence.")
    p.add_argument("--input", help="logged table URI (or inputTableName in --config)")
    p.add_argument("--output", help="timeline table URI (or outputTableName in --config)")
    p.add_argument("--config", help="JSON file of TimelineConfiguration keys (unknown keys are an error)")
    p.add_argument("--start-ds", help="first ds to read (startDs)")
    p.add_argument("--end-ds", help="last ds to read; also the output ds (endDs)")
    p.add_argument("--add-terminal-state-row", action=argparse.BooleanOptionalAction, default=None,
                   help="keep each episode's last row with empty next values (addTerminalStateRow)")
    p.add_argument("--include-possible-actions", action=argparse.BooleanOptionalAction, default=None,
                   help="carry possible_actions and possible_next_actions (default: when the input has them)")
    p.add_argument("--outlier-episode-length-percentile", type=float, metavar="P",
                   help="drop episodes longer than this percentile of episode length, e.g. 0.95")
    p.add_argument("--percentile-function", choices=["percentile", "percentile_approx"],
                   help="percentile (exact) or percentile_approx (default)")
    p.add_argument("--reward-columns", type=_columns, metavar="C1,C2",
                   help="columns copied through without a next_ version (default reward,metrics)")
    p.add_argument("--extra-feature-columns", type=_columns, metavar="C1,C2",
                   help="columns copied through with a next_<col> version")
    p.add_argument("--time-window-limit", type=int, metavar="N",
                   help="keep rows with time_since_first <= N")
    p.add_argument("--validation-sql", metavar="SQL",
                   help="query over {config.inputTableName}/{config.outputTableName} that must return one "
                   "row of all TRUE, else nothing is written")
    p.add_argument("--steps", type=int, metavar="K", help="multi-step: partner rows per row (array columns)")
    p.add_argument("--dedup", action="store_true", default=None,
                   help="keep the first of duplicated (mdp_id, sequence_number) rows instead of failing")
    add_spark_mode_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from batchrl.data.timeline import timeline

    input, output, options = options_from_args(args)
    if (code := run_on_kubernetes(args, "timeline", input, output, options)) is not None:
        return code
    print_summary(timeline(input, output, options, spark_master=args.spark_master, engine=args.engine))
    return 0


def options_from_args(args: argparse.Namespace) -> tuple[str, str, TimelineOptions]:
    """(input URI, output URI, TimelineOptions) from --config and the flags (flags win)."""
    from batchrl.data.timeline import load_timeline_config, make_options, resolve_locations

    values = load_timeline_config(args.config) if args.config else {}
    flags = {
        "start_ds": args.start_ds, "end_ds": args.end_ds, "add_terminal_state_row": args.add_terminal_state_row,
        "include_possible_actions": args.include_possible_actions,
        "outlier_episode_length_percentile": args.outlier_episode_length_percentile,
        "percentile_function": args.percentile_function, "reward_columns": args.reward_columns,
        "extra_feature_columns": args.extra_feature_columns, "time_window_limit": args.time_window_limit,
        "validation_sql": args.validation_sql, "steps": args.steps, "dedup": args.dedup,
    }
    options = make_options(_merge(values, {k: v for k, v in flags.items() if v is not None}),
                           where=args.config or "batchrl timeline")
    input, output = resolve_locations(args.input, args.output, options)
    return input, output, options


def _merge(config: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Config keys overridden by flags; a flag replaces the config's key whichever spelling it used."""
    from batchrl.data.timeline import TimelineOptions

    merged = dict(config)
    for name, value in flags.items():
        alias = TimelineOptions.model_fields[name].alias
        merged.pop(alias or name, None)  # (name is set just below anyway)
        merged[name] = value
    return merged
