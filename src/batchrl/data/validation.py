"""Reading and validating logged tables (spec sections 1-2), on either engine (:mod:`batchrl.engine`).

``validate_logged(df)`` checks the schema and every row invariant in one aggregation pass plus one
duplicate-key pass, and raises a single :class:`BatchRLError` listing each failed check with the
column, the number of offending rows and one example (the smallest ``mdp_id, sequence_number``). It
returns a summary on success.

A stage that reads every row anyway (the timeline) need not pay for those passes: ``guard_logged(df)``
checks the schema, counts rows and episodes (cheap), and returns ``df`` with the same row checks as a
filter that fails the stage's own query on the first offending row (:func:`batchrl.engine.fail_when`,
message :data:`INVALID_ROW`); only then does the stage run ``validate_logged`` for the full report. Rows
the stage's plan drops before the check is reached may go unchecked there (the engines order filters
freely); they are never written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from batchrl import storage
from batchrl.engine import any_of, api, fail_when, filtered, get_engine, map_values, schema_of, type_name
from batchrl.errors import BatchRLError
from batchrl.results import StageResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyspark.sql import Column, DataFrame

    from batchrl.engine import Engine

#: The message a guarded row check fails a stage's query with (:func:`guard_logged`).
INVALID_ROW = "batchrl: a logged row fails validation"

REQUIRED = ["mdp_id", "sequence_number", "state_features", "action", "reward", "action_probability", "ds"]


def read_logged(engine: Engine, uri: str) -> DataFrame:
    """Read a logged table: a committed Parquet dataset, or JSON Lines (``*.json``/``*.jsonl``)."""
    if storage.resolve(uri).uri.endswith((".json", ".jsonl")):
        return engine.read_json(uri)
    return engine.read_parquet(uri)


@dataclass(frozen=True)
class LoggedKind:
    """What kind of actions a logged table holds."""

    parametric: bool
    has_possible_actions: bool


def _type_errors(df: DataFrame) -> tuple[list[str], LoggedKind | None]:
    fields = {f.name: f.dataType for f in schema_of(df).fields}
    errors = [f"missing column '{c}'" for c in REQUIRED if c not in fields]
    integral = ("LongType", "IntegerType", "ShortType")
    real = ("DoubleType", "FloatType")

    def is_map(dtype: Any, key_types: tuple[str, ...], value_types: tuple[str, ...]) -> bool:
        return (type_name(dtype) == "MapType" and type_name(dtype.keyType) in key_types
                and type_name(dtype.valueType) in value_types)

    expected: dict[str, tuple[Callable[[Any], bool], str]] = {
        "mdp_id": (lambda t: type_name(t) == "StringType", "string"),
        "sequence_number": (lambda t: type_name(t) in integral, "int64"),
        "state_features": (lambda t: is_map(t, integral, real), "map<int64,double>"),
        "reward": (lambda t: type_name(t) in real, "double"),
        "action_probability": (lambda t: type_name(t) in real, "double"),
        "ds": (lambda t: type_name(t) == "StringType", "string"),
        "metrics": (lambda t: is_map(t, ("StringType",), real), "map<string,double>"),
        "end_reason": (lambda t: type_name(t) == "StringType", "string"),
    }
    for name, (ok, wanted) in expected.items():
        if name in fields and not ok(fields[name]):
            errors.append(f"column '{name}' has type {fields[name].simpleString()}, expected {wanted}")
    kind = None
    action = fields.get("action")
    if action is not None:
        discrete = type_name(action) == "StringType"
        parametric = is_map(action, integral, real)
        ranking = type_name(action) == "ArrayType"
        if not (discrete or parametric or ranking):
            errors.append(f"column 'action' has type {action.simpleString()}, expected string (discrete), "
                          "map<int64,double> (parametric) or array (ranking)")
        possible = fields.get("possible_actions")
        if possible is not None and not (type_name(possible) == "ArrayType"
                                         and possible.elementType.simpleString() == action.simpleString()):
            errors.append(f"column 'possible_actions' has type {possible.simpleString()}, "
                          f"expected array<{action.simpleString()}>")
        kind = LoggedKind(parametric=not discrete, has_possible_actions=possible is not None)
    return errors, kind


def _row_checks(df: DataFrame, kind: LoggedKind) -> dict[str, tuple[str, Column]]:
    """Named row-level checks: name -> (column it concerns, condition true on an offending row)."""
    F = api(df).F

    def non_finite(col: Column) -> Column:
        return F.isnan(col) | (F.abs(col) == float("inf"))

    checks = {}
    for name in ["mdp_id", "sequence_number", "state_features", "action", "reward", "ds"]:
        checks[f"null {name}"] = (name, F.col(name).isNull())
    checks["non-finite reward"] = ("reward", non_finite(F.col("reward")))
    checks["null or non-finite state feature value"] = (
        "state_features",
        any_of(F, map_values(F, F.col("state_features")), lambda v: v.isNull() | non_finite(v)),
    )
    prob = F.col("action_probability")
    if kind.parametric:
        checks["action_probability not a finite positive density"] = (
            "action_probability", prob.isNotNull() & ((prob <= 0) | non_finite(prob)))
    else:
        checks["action_probability outside (0, 1]"] = (
            "action_probability", prob.isNotNull() & (non_finite(prob) | (prob <= 0) | (prob > 1)))
    if kind.has_possible_actions and not kind.parametric:
        possible = F.col("possible_actions")
        checks["action not in possible_actions"] = (
            "action", possible.isNotNull() & (F.size(possible) > 0) & ~F.array_contains(possible, F.col("action")))
    if "end_reason" in df.columns:
        checks["end_reason not one of terminated/truncated"] = (
            "end_reason", F.col("end_reason").isNotNull() & ~F.col("end_reason").isin("terminated", "truncated"))
    return checks


def _checked_kind(df: DataFrame, where: str) -> LoggedKind:
    errors, kind = _type_errors(df)
    if errors:
        raise BatchRLError("logged table has the wrong schema:\n    " + "\n    ".join(errors), where=where,
                           fix="see the logged-table schema in docs/data.md (spec section 1)")
    assert kind is not None
    return kind


def _empty(where: str) -> BatchRLError:
    return BatchRLError("logged table is empty", where=where, fix="check the input URI and the ds range")


def guard_logged(df: DataFrame, where: str = "logged table") -> tuple[DataFrame, dict[str, Any]]:
    """The schema checked, rows and episodes counted (an empty table fails here), and ``df`` with every row
    check of :func:`validate_logged` as a filter that fails the query reading it with :data:`INVALID_ROW`.
    A stage that sees that failure calls :func:`validate_logged` for the report. Duplicate keys are the
    stage's own check (the timeline's window sees them as a next row with the same sequence number)."""
    F = api(df).F
    kind = _checked_kind(df, where)
    stats = df.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("mdp_id").alias("episodes")).collect()[0]
    if stats["rows"] == 0:
        raise _empty(where)
    invalid = F.lit(False)
    for _, condition in _row_checks(df, kind).values():
        invalid = invalid | F.coalesce(condition, F.lit(False))
    return filtered(df, fail_when(F, invalid, INVALID_ROW)), {"rows": int(stats["rows"]),
                                                              "episodes": int(stats["episodes"])}


def validate_logged(df: DataFrame, where: str = "logged table") -> dict[str, Any]:
    """Check a logged table; raise one error naming every failed check, else return a summary."""
    F = api(df).F

    kind = _checked_kind(df, where)
    checks = _row_checks(df, kind)
    example_key = F.concat(F.lit("mdp_id="), F.col("mdp_id").cast("string"),
                           F.lit(", sequence_number="), F.col("sequence_number").cast("string"))
    aggs = [F.count(F.lit(1)).alias("rows"), F.countDistinct("mdp_id").alias("episodes"),
            F.min("ds").alias("min_ds"), F.max("ds").alias("max_ds")]
    for i, (_, cond) in enumerate(checks.values()):
        aggs.append(F.sum(F.when(cond, 1).otherwise(0)).alias(f"n{i}"))
        aggs.append(F.min(F.when(cond, example_key)).alias(f"e{i}"))
    stats = df.agg(*aggs).collect()[0]
    if stats["rows"] == 0:
        raise _empty(where)
    failures = []
    for i, (name, (column, _)) in enumerate(checks.items()):
        if stats[f"n{i}"]:
            failures.append(f"{name}: column '{column}', {stats[f'n{i}']} rows, e.g. {stats[f'e{i}']}")
    dupes = (df.groupBy("mdp_id", "sequence_number").count().where(F.col("count") > 1)
             .agg(F.count(F.lit(1)).alias("n"), F.sum("count").alias("rows"),
                  F.min(F.concat(F.lit("mdp_id="), F.col("mdp_id"), F.lit(", sequence_number="),
                                 F.col("sequence_number").cast("string"))).alias("e"))
             .collect()[0])
    if dupes["n"]:
        failures.append(f"duplicate (mdp_id, sequence_number): columns 'mdp_id, sequence_number', "
                        f"{dupes['rows']} rows in {dupes['n']} duplicated keys, e.g. {dupes['e']}")
    if failures:
        raise BatchRLError(
            f"logged table fails {len(failures)} check(s):\n    " + "\n    ".join(failures), where=where,
            fix="correct or filter the offending rows (duplicates: or pass --dedup to keep the first of each)")
    return {"rows": int(stats["rows"]), "episodes": int(stats["episodes"]),
            "min_ds": stats["min_ds"], "max_ds": stats["max_ds"],
            "action_kind": "parametric" if kind.parametric else "discrete"}


@dataclass(frozen=True, kw_only=True)
class ValidateResult(StageResult):
    """What :func:`validate_input` found in a valid logged table."""

    input: str
    valid: bool  # always True: an invalid table raises
    rows: int
    episodes: int
    min_ds: str
    max_ds: str
    action_kind: str  # discrete | parametric
    engine: str

    METADATA: ClassVar[tuple[str, ...]] = ("rows", "episodes", "min_ds", "max_ds", "action_kind")
    HEADLINE: ClassVar[tuple[str, ...]] = ("rows", "episodes", "engine")


def validate_input(uri: str, spark_master: str | None = "local[*]", engine: str = "auto") -> ValidateResult:
    """The validate stage: read the logged table at ``uri`` and check it (``engine``: auto, duckdb, spark)."""
    runner = get_engine(engine, spark_master, app_name="batchrl-validate")
    summary = validate_logged(read_logged(runner, uri), where=uri)
    return ValidateResult(input=uri, valid=True, **summary, engine=runner.describe())
