"""`batchrl validate`: check a logged table against the schema and invariants."""

from __future__ import annotations

import argparse

from batchrl.commands._common import print_summary
from batchrl.commands._spark_options import add_engine_option


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check a logged table (schema, nulls, duplicates, propensities)",
                       description="Check a logged table against the schema and row invariants; every "
                       "failed check is listed with its column, offending row count and an example.")
    p.add_argument("--input", required=True, help="logged table URI (Parquet dataset, or .json/.jsonl)")
    add_engine_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from batchrl.data.validation import validate_input

    print_summary(validate_input(args.input, args.spark_master, engine=args.engine))
    return 0
