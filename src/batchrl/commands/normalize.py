"""`batchrl normalize`: identify per-feature normalization of a timeline table (ReAgent JSON)."""

from __future__ import annotations

import argparse

from batchrl.commands._common import build_options, print_summary
from batchrl.commands._spark_options import add_spark_mode_options, run_on_kubernetes
from batchrl.errors import BatchRLError

FEATURE_TYPES = ("BINARY", "PROBABILITY", "CONTINUOUS", "BOXCOX", "ENUM", "QUANTILE", "CONTINUOUS_ACTION",
                 "DISCRETE_ACTION", "DO_NOT_PREPROCESS", "CLIP_LOG")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("normalize", help="identify per-feature normalization of a timeline table",
                       description="Sample each feature of a map column of the timeline table (seeded, in "
                       "DuckDB or Spark), identify its type (BINARY, PROBABILITY, ENUM, CONTINUOUS, BOXCOX, QUANTILE) "
                       "and parameters, and write them as ReAgent's normalization JSON.")
    p.add_argument("--input", required=True, help="timeline table URI")
    p.add_argument("--output", required=True, help="normalization JSON URI (path, file:// or s3://)")
    p.add_argument("--column", help="map column to normalize (default state_features; action for "
                   "parametric/continuous actions)")
    p.add_argument("--num-samples", type=int, help="values sampled per feature (default 100000)")
    p.add_argument("--seed", type=int, help="sampling seed (default 0)")
    p.add_argument("--max-unique-enum-values", type=int, help="most distinct values of an ENUM (default 10)")
    p.add_argument("--quantile-size", type=int, help="number of quantile intervals (default 20)")
    p.add_argument("--quantile-k2-threshold", type=float,
                   help="K2 normality statistic above which QUANTILE is used (default 1000)")
    p.add_argument("--skip-box-cox", action="store_true", default=None, help="never use BOXCOX")
    quantiles = p.add_mutually_exclusive_group()
    quantiles.add_argument("--skip-quantiles", dest="skip_quantiles", action="store_true", default=None,
                           help="never use QUANTILE (the default, as in ReAgent's workflow)")
    quantiles.add_argument("--use-quantiles", dest="skip_quantiles", action="store_false",
                           help="use QUANTILE for heavy-tailed features")
    p.add_argument("--feature-override", action="append", default=[], metavar="ID=TYPE",
                   help=f"force a feature's type (repeatable); TYPE one of {', '.join(FEATURE_TYPES)}")
    p.add_argument("--feature-type", choices=FEATURE_TYPES,
                   help="force this type on every feature of the column (e.g. CONTINUOUS_ACTION)")
    p.add_argument("--stddev-floor", type=float,
                   help="floor of identified stddevs (default 1e-6; 1.0 reproduces ReAgent)")
    add_spark_mode_options(p)
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict[int, str]:
    """``["3=ENUM", "7=CONTINUOUS"]`` -> ``{3: "ENUM", 7: "CONTINUOUS"}`` with clear errors."""
    out: dict[int, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            feature_id = int(key.strip())
        except ValueError:
            feature_id = None
        kind = value.strip().upper()
        if not sep or feature_id is None or kind not in FEATURE_TYPES:
            raise BatchRLError(f"bad --feature-override '{item}'", where="batchrl normalize",
                               fix=f"write ID=TYPE, e.g. 3=ENUM; TYPE one of {', '.join(FEATURE_TYPES)}")
        out[feature_id] = kind
    return out


def run(args: argparse.Namespace) -> int:
    from batchrl.data.normalize import NormalizeOptions, normalize

    options = build_options(
        NormalizeOptions, "batchrl normalize", column=args.column, num_samples=args.num_samples, seed=args.seed,
        max_unique_enum_values=args.max_unique_enum_values, quantile_size=args.quantile_size,
        quantile_k2_threshold=args.quantile_k2_threshold, skip_box_cox=args.skip_box_cox,
        skip_quantiles=args.skip_quantiles, feature_overrides=parse_overrides(args.feature_override) or None,
        feature_type=args.feature_type, stddev_floor=args.stddev_floor)
    if (code := run_on_kubernetes(args, "normalize", args.input, args.output, options)) is not None:
        return code
    print_summary(normalize(args.input, args.output, options, spark_master=args.spark_master, engine=args.engine))
    return 0
