"""The timeline operator (spec section 2): logged decisions -> (state, next state) rows, with Spark.

Rows with ``start_ds <= ds <= end_ds`` are grouped into episodes; W = partition by ``mdp_id`` order by
``sequence_number``. Single-step: ``next_x = LEAD(x) over W``, ``time_diff = seq_{t+1} - seq_t``
(0 on the last row), ``time_since_first = seq_t - seq_first``, ``sequence_number_ordinal =
ROW_NUMBER() over W``. Multi-step (``steps = k``): the partners of row t are the next
``m = min(k, rows left)`` rows; reward columns become ``[r_t .. r_{t+m-1}]``, next columns
``[x_{t+1} .. x_{t+m}]`` and ``time_diff = [seq_{t+j} - seq_t for j = 1..m]``.

A row without partner is its episode's last: dropped unless ``add_terminal_state_row``, else kept
with typed empty "next" values (string ``""``, map ``{}``, list ``[]``; struct: a struct of empties;
numbers and booleans: null), ``time_diff`` 0, and in multi-step mode ``reward = [r_t]`` and
``time_diff = [0]`` (ReAgent put the absolute sequence number there).

Outlier filter (ReAgent's rule): episode length = rows in the ds range; ``pct`` = percentile p of the
lengths; if the share of episodes longer than ``pct`` is within 10% (relative) of ``1 - p`` those
episodes are dropped, else the filter is disabled with a warning.

The transform is written once with the PySpark DataFrame API (no Python UDFs) and runs on either
engine (:mod:`batchrl.engine`: DuckDB through SQLFrame, or Spark); the output schema is explicit
(:func:`timeline_schema`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from batchrl import storage
from batchrl.data.validation import INVALID_ROW, guard_logged, read_logged, validate_logged
from batchrl.engine import api, fail_when, filtered, get_engine, names_failure, schema_of, type_name
from batchrl.errors import BatchRLError
from batchrl.results import StageResult

if TYPE_CHECKING:
    from types import ModuleType

    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import ArrayType, DataType, StructType
    from pyspark.sql.window import WindowSpec

    from batchrl.engine import Engine

log = logging.getLogger(__name__)

#: Columns the operator produces or consumes itself; reward and extra columns may not reuse them.
CORE_COLUMNS = (
    "mdp_id", "state_features", "action", "next_action", "action_probability", "next_state_features",
    "sequence_number", "sequence_number_ordinal", "time_diff", "time_since_first", "possible_actions",
    "possible_next_actions", "ds", "end_reason",
)
INPUT_VIEW = "{config.inputTableName}"
OUTPUT_VIEW = "{config.outputTableName}"


class TimelineOptions(BaseModel):
    """Options of the timeline stage: ReAgent's TimelineConfiguration keys (camelCase) or snake_case.

    ``steps`` (ours) switches to multi-step output (arrays); ``dedup`` (ours) keeps the first row,
    in read order, of each duplicated ``(mdp_id, sequence_number)`` instead of rejecting the input.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)

    start_ds: str
    end_ds: str
    add_terminal_state_row: bool
    input_table_name: str | None = None
    output_table_name: str | None = None
    include_possible_actions: bool = True
    outlier_episode_length_percentile: float | None = Field(default=None, gt=0.0, lt=1.0)
    percentile_function: Literal["percentile", "percentile_approx"] = "percentile_approx"
    reward_columns: list[str] = Field(default_factory=lambda: ["reward", "metrics"])
    extra_feature_columns: list[str] = Field(default_factory=list)
    time_window_limit: int | None = Field(default=None, ge=0)
    validation_sql: str | None = None
    steps: int | None = Field(default=None, ge=1)
    dedup: bool = False

    @model_validator(mode="after")
    def _check(self) -> TimelineOptions:
        if self.start_ds > self.end_ds:
            raise ValueError(f"startDs '{self.start_ds}' is after endDs '{self.end_ds}'")
        named = self.reward_columns + self.extra_feature_columns
        repeated = sorted({c for c in named if named.count(c) > 1})
        if repeated:
            raise ValueError(f"columns named more than once in rewardColumns/extraFeatureColumns: {repeated}")
        reserved = sorted((set(named) - {"reward"}) & set(CORE_COLUMNS))
        if reserved:
            raise ValueError(f"rewardColumns/extraFeatureColumns may not name the operator's own columns {reserved}")
        clashes = sorted(c for c in self.extra_feature_columns if f"next_{c}" in named)
        if clashes:
            raise ValueError(f"extra feature columns {clashes} would clash with next_<col> of another column")
        if self.validation_sql is not None and not self.validation_sql.strip():
            raise ValueError("validationSql is empty")
        return self

    @property
    def multi_step(self) -> bool:
        return self.steps is not None


def options_error(exc: ValidationError, where: str) -> BatchRLError:
    """A readable BatchRLError for invalid timeline options; unknown keys are named."""
    unknown = [str(err["loc"][-1]) for err in exc.errors() if err["type"] == "extra_forbidden"]
    other = [f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}"
             for err in exc.errors() if err["type"] != "extra_forbidden"]
    parts = []
    if unknown:
        parts.append(f"unknown key(s) {', '.join(repr(k) for k in unknown)}")
    parts += other
    known = sorted(f.alias or name for name, f in TimelineOptions.model_fields.items())
    return BatchRLError("invalid timeline options: " + "; ".join(parts), where=where,
                        fix=f"the known keys are {', '.join(known)} (see docs/timeline.md)")


def load_timeline_config(uri: str) -> dict[str, Any]:
    """Read a JSON config of ReAgent TimelineConfiguration keys (optionally under a "timeline" key)."""
    raw = storage.read_json(uri)
    if isinstance(raw, dict) and set(raw) == {"timeline"} and isinstance(raw["timeline"], dict):
        raw = raw["timeline"]
    if not isinstance(raw, dict):
        raise BatchRLError("timeline config must be a JSON object of TimelineConfiguration keys", where=uri,
                           fix='write e.g. {"startDs": "2019-01-01", "endDs": "2019-01-01", '
                               '"addTerminalStateRow": true}')
    known = {name for name in TimelineOptions.model_fields} | {
        f.alias for f in TimelineOptions.model_fields.values() if f.alias}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise BatchRLError(f"unknown key(s) in timeline config: {', '.join(repr(k) for k in unknown)}",
                           where=uri, fix=f"remove or correct them; the known keys are "
                                          f"{', '.join(sorted(f.alias for f in TimelineOptions.model_fields.values() if f.alias))}")
    return raw


def make_options(values: dict[str, Any], where: str) -> TimelineOptions:
    """Validate a dict of options (camelCase or snake_case keys) into :class:`TimelineOptions`."""
    try:
        return TimelineOptions.model_validate(values)
    except ValidationError as exc:
        raise options_error(exc, where) from None


def resolve_locations(input: str | None, output: str | None, options: TimelineOptions) -> tuple[str, str]:
    """Input/output URIs from the arguments or from ``inputTableName``/``outputTableName``."""
    resolved: list[str] = []
    for given, key, name in ((input, options.input_table_name, "input"),
                             (output, options.output_table_name, "output")):
        if given and key and given != key:
            raise BatchRLError(f"two different {name} locations: '{given}' and {name}TableName '{key}'",
                               fix=f"give the {name} once (--{name} or {name}TableName)")
        if not (given or key):
            raise BatchRLError(f"no {name} location given", fix=f"pass --{name} URI or set {name}TableName")
        resolved.append(given or key or "")  # one of them is set (checked above)
    return resolved[0], resolved[1]


# ---------------------------------------------------------------- schema


def _action_kind(action_type: DataType) -> str:
    kind = type_name(action_type)
    return {"StringType": "discrete", "MapType": "parametric"}.get(kind, "ranking")


def _columns_used(schema: StructType, options: TimelineOptions) -> tuple[list[str], bool]:
    """Reward columns actually used and whether possible actions are carried; raises on missing ones.

    The defaults tolerate a table without ``metrics`` or ``possible_actions`` (continuous-action gym
    data); a column the user named explicitly must exist.
    """
    names = set(schema.names)
    rewards = list(options.reward_columns)
    if "reward_columns" not in options.model_fields_set and "metrics" not in names:
        rewards.remove("metrics")
    possible = options.include_possible_actions
    if possible and "possible_actions" not in names:
        if "include_possible_actions" in options.model_fields_set:
            raise BatchRLError("includePossibleActions is true but the input has no 'possible_actions' column",
                               fix="set includePossibleActions to false or log possible_actions")
        possible = False
    missing = [c for c in rewards + options.extra_feature_columns if c not in names]
    if missing:
        raise BatchRLError(f"columns named in rewardColumns/extraFeatureColumns are not in the input: {missing}",
                           fix=f"the input has {sorted(names)}")
    return rewards, possible


def _canonical(name: str, dtype: DataType) -> DataType:
    """The output type of an input column: int64 ids, map<int64,double> features, double rewards."""
    T = api(dtype).T

    features = T.MapType(T.LongType(), T.DoubleType())
    fixed = {"mdp_id": T.StringType(), "sequence_number": T.LongType(), "state_features": features,
             "reward": T.DoubleType(), "action_probability": T.DoubleType(), "ds": T.StringType(),
             "metrics": T.MapType(T.StringType(), T.DoubleType()), "end_reason": T.StringType()}
    if name in fixed:
        return fixed[name]
    if name in ("action", "possible_actions"):
        action = cast("ArrayType", dtype).elementType if name == "possible_actions" else dtype
        if type_name(action) == "MapType":
            action = features
        return T.ArrayType(action) if name == "possible_actions" else action
    return dtype


def timeline_schema(input_schema: StructType, options: TimelineOptions) -> StructType:
    """The output schema of :func:`build_timeline` for an input of ``input_schema``."""
    T = api(input_schema).T

    rewards, possible = _columns_used(input_schema, options)
    types = {f.name: _canonical(f.name, f.dataType) for f in input_schema.fields}

    def nxt(dtype: DataType) -> DataType:
        return T.ArrayType(dtype) if options.multi_step else dtype

    def rew(dtype: DataType) -> DataType:
        return T.ArrayType(dtype) if options.multi_step else dtype

    fields = [
        ("mdp_id", T.StringType()),
        ("state_features", types["state_features"]),
        ("action", types["action"]),
        ("next_action", nxt(types["action"])),
        ("action_probability", T.DoubleType()),
        *[(c, rew(types[c])) for c in rewards],
        ("next_state_features", nxt(types["state_features"])),
        ("sequence_number", T.LongType()),
        ("sequence_number_ordinal", T.LongType()),
        ("time_diff", nxt(T.LongType())),
        ("time_since_first", T.LongType()),
    ]
    if possible:
        fields += [("possible_actions", types["possible_actions"]),
                   ("possible_next_actions", nxt(types["possible_actions"]))]
    for c in options.extra_feature_columns:
        fields += [(c, types[c]), (f"next_{c}", nxt(types[c]))]
    fields.append(("ds", T.StringType()))
    if "end_reason" in types:
        fields.append(("end_reason", T.StringType()))
    return T.StructType([T.StructField(name, dtype, True) for name, dtype in fields])


def typed_empty(dtype: DataType) -> Column:
    """The placeholder of a missing "next" value: "" for strings, {} for maps, [] for lists."""
    F = api(dtype).F
    kind = type_name(dtype)
    if kind == "StringType":
        return F.lit("")
    if kind == "MapType":
        return F.expr("map()").cast(dtype)
    if kind == "ArrayType":
        return F.expr("array()").cast(dtype)
    if kind == "StructType":
        return F.struct(*[typed_empty(f.dataType).alias(f.name) for f in cast("StructType", dtype).fields])
    return F.lit(None).cast(dtype)


# ---------------------------------------------------------------- outlier filter


@dataclass(frozen=True)
class OutlierFilter:
    """The outcome of the episode-length outlier rule (spec section 2)."""

    percentile: float
    function: str
    threshold: float
    episodes: int
    outlier_episodes: int
    outlier_share: float
    applied: bool


def length_percentile(lengths: np.ndarray, counts: np.ndarray, p: float, function: str) -> float:
    """Percentile ``p`` of episode lengths given as a histogram (distinct ``lengths`` ascending, ``counts``).

    ``percentile``: linear interpolation between the order statistics at position ``p (n - 1)``;
    ``percentile_approx``: the smallest length whose CDF is >= p (Spark's answer, exact here).
    """
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])
    if function == "percentile_approx":
        return float(lengths[np.searchsorted(cumulative, p * n, side="left")])
    position = p * (n - 1)
    lo = int(np.floor(position))

    def order_statistic(i: int) -> float:  # the i-th smallest length, 0-based
        return float(lengths[np.searchsorted(cumulative, i + 1, side="left")])

    below = order_statistic(lo)
    return below + (position - lo) * (order_statistic(min(lo + 1, n - 1)) - below)


def outlier_filter(df: DataFrame, options: TimelineOptions) -> OutlierFilter | None:
    """Apply the rule to the episode lengths of ``df`` (rows already in the ds range).

    The engine computes the histogram of episode lengths (small: one row per distinct length); the
    percentile is taken from it here, the same way for both engines.
    """
    F = api(df).F
    p = options.outlier_episode_length_percentile
    if p is None:
        return None
    lengths = df.groupBy("mdp_id").agg(F.count(F.lit(1)).alias("length"))
    histogram = sorted((int(r[0]), int(r[1])) for r in lengths.groupBy("length").agg(
        F.count(F.lit(1)).alias("episodes")).collect())
    if not histogram:
        return None
    values, counts = np.array([h[0] for h in histogram]), np.array([h[1] for h in histogram])
    pct = length_percentile(values, counts, p, options.percentile_function)
    episodes, outliers = int(counts.sum()), int(counts[values > pct].sum())
    share = outliers / episodes if episodes else 0.0
    expected = 1.0 - p
    applied = abs(share - expected) / expected <= 0.1
    if not applied:
        log.warning("outlier filter disabled: %.4f of %d episodes are longer than the %s %.3f of episode "
                    "length (%s), expected about %.4f", share, episodes, options.percentile_function, p, pct,
                    expected)
    return OutlierFilter(p, options.percentile_function, float(pct), episodes, outliers, share, applied)


# ---------------------------------------------------------------- the transform


def next_name(column: str) -> str:
    """The name of a column's "next" version: ``next_<col>``, but ``possible_next_actions``."""
    return "possible_next_actions" if column == "possible_actions" else f"next_{column}"


def _lead(F: ModuleType, name: str, w: WindowSpec, offset: int = 1) -> Column:
    return F.lead(F.col(name), offset).over(w)


def build_timeline(df: DataFrame, options: TimelineOptions, outliers: OutlierFilter | None = None) -> DataFrame:
    """The timeline of a logged table (DataFrame -> DataFrame; schema :func:`timeline_schema`).

    ``df`` is the logged table (any ds); ``outliers`` is the outcome of :func:`outlier_filter` on its
    ds range (computed here when the option is set and it is not given). Two projections: the window
    values, then the output columns.
    """
    F, Window = api(df).F, api(df).Window
    schema = timeline_schema(schema_of(df), options)
    rewards, possible = _columns_used(schema_of(df), options)
    types = {f.name: f.dataType for f in schema.fields}
    rows = df.where((F.col("ds") >= options.start_ds) & (F.col("ds") <= options.end_ds))
    if options.outlier_episode_length_percentile is not None and outliers is None:
        outliers = outlier_filter(rows, options)
    episode = Window.partitionBy("mdp_id")
    w = episode.orderBy("sequence_number")
    if outliers is not None and outliers.applied:
        rows = (rows.select("*", F.count(F.lit(1)).over(episode).alias("_length"))
                .where(F.col("_length") <= F.lit(outliers.threshold)))
    seq = F.col("sequence_number").cast("bigint")
    nexts = ["action", "state_features"] + (["possible_actions"] if possible else []) + options.extra_feature_columns
    window: dict[str, Column] = {  # first projection: window values, under _w_<name>
        "_ordinal": F.row_number().over(w),
        # min over W's running frame = the episode's first sequence number; one window spec, one sort
        "_since_first": seq - F.min(seq).over(w),
        "_next_seq": _lead(F, "sequence_number", w),  # equal to this row's: a duplicate key, which fails
    }
    out: dict[str, Column] = {  # second projection: the output columns, from the window values
        "sequence_number_ordinal": F.col("_w__ordinal"),
        "time_since_first": F.col("_w__since_first"),
    }
    if options.multi_step:
        k = options.steps
        assert k is not None  # multi_step
        window["_partners"] = F.count(F.lit(1)).over(w.rowsBetween(1, k))
        for name in nexts:
            window[f"next_{name}"] = F.array(*[_lead(F, name, w, j) for j in range(1, k + 1)])
            out[next_name(name)] = F.expr(f"slice(`_w_next_{name}`, 1, _w__partners)")
        for name in rewards:
            window[f"reward_{name}"] = F.array(F.col(name), *[_lead(F, name, w, j) for j in range(1, k)])
            out[name] = F.expr(f"slice(`_w_reward_{name}`, 1, greatest(_w__partners, 1))")
        window["_offsets"] = F.array(*[_lead(F, "sequence_number", w, j) - seq for j in range(1, k + 1)])
        out["time_diff"] = F.expr("if(_w__partners > 0, slice(_w__offsets, 1, _w__partners), "
                                  "array(cast(0 as bigint)))")
        has_next = F.col("_w__partners") > 0
    else:
        has_next = F.col("_w__next_seq").isNotNull()
        for name in nexts:
            window[f"next_{name}"] = _lead(F, name, w)
            out[next_name(name)] = F.col(f"_w_next_{name}")
            if options.add_terminal_state_row:  # else rows without a next row are dropped below
                out[next_name(name)] = F.when(has_next, out[next_name(name)]).otherwise(
                    typed_empty(types[next_name(name)]))
        out["time_diff"] = F.coalesce(F.col("_w__next_seq") - seq, F.lit(0))
    keep = fail_when(F, F.col("_w__next_seq") == seq, INVALID_ROW)
    if not options.add_terminal_state_row:
        keep = keep & has_next
    if options.time_window_limit is not None:
        keep = keep & (F.col("_w__since_first") <= options.time_window_limit)
    rows = rows.select("*", *[col.alias(f"_w_{name}") for name, col in window.items()]).where(keep)
    projected = []
    for field in schema.fields:
        if field.name in out:
            col = out[field.name]
        elif field.name == "ds":
            col = F.lit(options.end_ds)
        else:
            col = F.col(field.name)
        projected.append(col.cast(field.dataType).alias(field.name))
    return rows.select(*projected)


# ---------------------------------------------------------------- the stage


def drop_duplicate_keys(df: DataFrame, engine: Engine) -> DataFrame:
    """Keep the first row (in read order) of each duplicated ``(mdp_id, sequence_number)``."""
    F, Window = engine.api.F, engine.api.Window
    w = Window.partitionBy("mdp_id", "sequence_number").orderBy("_read_order")
    ordered = df.select("*", engine.read_order().alias("_read_order"))
    return (ordered.select("*", F.row_number().over(w).alias("_copy")).where(F.col("_copy") == 1)
            .drop("_read_order", "_copy"))


def run_validation_sql(engine: Engine, sql: str, input_df: DataFrame, output_df: DataFrame) -> None:
    """Run ``validationSql`` (Spark SQL) over the input and output tables; it must return one row of all TRUE."""
    try:
        result = engine.run_sql(sql, {INPUT_VIEW: input_df, OUTPUT_VIEW: output_df})
    except Exception as exc:  # Spark's AnalysisException / ParseException, DuckDB's / sqlglot's errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BatchRLError(f"validationSql could not run: {first}", where=sql,
                           fix="refer to the tables as {config.inputTableName} and {config.outputTableName}"
                           ) from exc
    if len(result) != 1 or not all(value is True for value in result[0]):
        shown = [tuple(row) for row in result[:3]]
        raise BatchRLError(f"validationSql failed: it returned {len(result)} row(s) {shown}, expected exactly one "
                           "row of all TRUE; nothing was written", where=sql,
                           fix="check the data, or the query")


@dataclass(frozen=True, kw_only=True)
class TimelineResult(StageResult):
    """What :func:`timeline` wrote (also committed as the output's metadata)."""

    input: str
    output: str
    input_rows: int  # rows in the ds range (after dropping duplicate keys with ``dedup``)
    input_episodes: int
    duplicates_dropped: int
    output_rows: int
    action_kind: str  # discrete | parametric | ranking
    steps: int | None  # None: one-step rows
    add_terminal_state_row: bool
    outlier_filter: dict[str, Any] | None  # the OutlierFilter's fields; None: no filter asked for
    outlier_episodes_dropped: int
    columns: list[str]
    engine: str
    elapsed_s: float

    METADATA: ClassVar[tuple[str, ...]] = (
        "input", "input_rows", "input_episodes", "output_rows", "duplicates_dropped", "outlier_episodes_dropped",
        "action_kind", "steps", "add_terminal_state_row", "columns")
    HEADLINE: ClassVar[tuple[str, ...]] = ("output_rows", "engine")


def timeline(input: str, output: str, options: TimelineOptions, spark_master: str | None = "local[*]",
             engine: str = "auto") -> TimelineResult:
    """The timeline stage: read the logged table at ``input``, write the timeline table to ``output``.

    The input rows in the ds range are validated (duplicates, types, nulls, propensities) inside the pass
    that writes the timeline (:func:`batchrl.data.validation.guard_logged`), and fully reported when a row
    fails; a bad input or a failing ``validationSql`` writes nothing. ``engine``: auto, duckdb or spark.
    """
    if storage.resolve(input).uri.rstrip("/") == storage.resolve(output).uri.rstrip("/") or \
            storage.spark_path(input).rstrip("/") == storage.spark_path(output).rstrip("/"):
        raise BatchRLError(f"input and output are the same location: {input}",
                           fix="write the timeline to a new location")
    started = time.perf_counter()
    runner = get_engine(engine, spark_master, app_name="batchrl-timeline")
    F = runner.api.F
    raw = read_logged(runner, input)
    in_range = filtered(raw, (F.col("ds") >= options.start_ds) & (F.col("ds") <= options.end_ds))
    where = f"{input} (ds {options.start_ds} .. {options.end_ds})"
    rows_read = None
    if options.dedup:
        rows_read = in_range.count()
        in_range = drop_duplicate_keys(in_range, runner)
    guarded, checked = guard_logged(in_range, where=where)  # rows failing a check fail the write below
    schema = timeline_schema(schema_of(in_range), options)  # raises on missing reward/extra columns
    outliers = outlier_filter(in_range, options)
    result = build_timeline(guarded, options, outliers)
    log.info("timeline: %d rows, %d episodes in the ds range; writing %s with %s", checked["rows"],
             checked["episodes"], output, runner.describe())
    writer = storage.DatasetWriter(output)
    try:
        try:
            output_rows = runner.write_parquet(result, writer)
        except Exception as exc:
            if names_failure(exc, INVALID_ROW):
                validate_logged(in_range, where=where)  # raises the report: every failed check, with examples
                raise BatchRLError(f"a logged row failed validation: {str(exc).strip().splitlines()[0]}",
                                   where=where, fix="run `batchrl validate` on the input") from exc
            raise
        if options.validation_sql or output_rows is None:
            written = runner.read_staged(writer)
            output_rows = written.count() if output_rows is None else output_rows
            if options.validation_sql:
                run_validation_sql(runner, options.validation_sql, raw, written)
        elapsed = time.perf_counter() - started
        summary = TimelineResult(
            input=input,
            output=output,
            input_rows=checked["rows"],
            input_episodes=checked["episodes"],
            duplicates_dropped=(rows_read - checked["rows"]) if rows_read is not None else 0,
            output_rows=output_rows,
            action_kind=_action_kind(_field_type(schema_of(in_range), "action")),
            steps=options.steps,
            add_terminal_state_row=options.add_terminal_state_row,
            outlier_filter=asdict(outliers) if outliers else None,
            outlier_episodes_dropped=outliers.outlier_episodes if outliers and outliers.applied else 0,
            columns=schema.names,
            engine=runner.describe(),
            elapsed_s=round(elapsed, 3),
        )
        writer.commit({"stage": "timeline", **summary.to_dict(),
                       "options": options.model_dump(by_alias=True, mode="json"),
                       "schema": schema.simpleString()})
    except BaseException:
        writer.abort()
        raise
    log.info("timeline: wrote %d rows to %s in %.1f s", output_rows, output, summary.elapsed_s)
    return summary


def _field_type(schema: StructType, name: str) -> DataType:
    return next(f.dataType for f in schema.fields if f.name == name)
