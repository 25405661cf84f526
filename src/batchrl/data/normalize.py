"""The normalize stage: per-feature normalization of a map column of the timeline table (spec section 4).

Sampling runs in the data engine (DuckDB or Spark, :mod:`batchrl.engine`): the map column is exploded
into (feature id, value) pairs; each pair gets a seeded hash ``u = md5(seed|feature|mdp_id|sequence_number)
/ 16^32`` in [0, 1) (:func:`batchrl.engine.hash_key`, the same on both engines), and each feature keeps its
``num_samples`` pairs of smallest ``(u, value)``. That sample depends only on the data and the
seed, not on partitioning, so the same seed gives the same file. (To avoid sorting every pair, pairs
are first pre-filtered by ``u`` below a bound that keeps a comfortable margin over ``num_samples``; a
feature whose pre-filter kept too few is re-sampled without it, so the result is always exact.)

Non-finite (NaN, infinite or null) values are counted over all rows, not just the sample, and fail
the stage naming the feature. A feature with fewer than 20 values is not identified: it is left out
of the output with a warning naming it (and listed under ``not_identified`` in the summary).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field, ValidationError

from batchrl import storage
from batchrl.engine import api, get_engine, hash_key, hash_threshold, schema_of, type_name
from batchrl.errors import BatchRLError
from batchrl.preprocessing.identify import MIN_SAMPLES, IdentifyOptions, NotIdentified, identify_feature
from batchrl.preprocessing.normalization import FeatureType, Normalization, write_normalization
from batchrl.results import StageResult, when_set

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from batchrl.engine import Engine

log = logging.getLogger(__name__)


class NormalizeOptions(IdentifyOptions):
    """Options of the normalize stage (ReAgent's ``preprocessing_options`` names)."""

    column: str = "state_features"
    num_samples: int = Field(default=100_000, ge=1)
    seed: int = 0
    #: feature id -> forced type (spec section 4 overrides).
    feature_overrides: dict[int, FeatureType] = Field(default_factory=dict)
    #: Force this type on every feature of the column (e.g. CONTINUOUS_ACTION for a continuous action).
    feature_type: FeatureType | None = None


def _exploded(df: DataFrame, column: str, seed: int) -> DataFrame:
    """(feature_id, value, u) for every entry of the map column; u is a seeded hash key (hex, ordered as u)."""
    F = api(df).F
    row_key = [c for c in ("mdp_id", "sequence_number") if c in df.columns]
    keyed = df.select(*row_key, F.col(column).alias("_map"), F.explode(F.map_keys(column)).alias("_key"))
    u = hash_key(F, F.lit(seed), F.col("_key").cast("bigint"), *[F.col(c) for c in row_key])
    return keyed.select(F.col("_key").cast("bigint").alias("feature_id"),
                        F.element_at(F.col("_map"), F.col("_key")).cast("double").alias("value"), u.alias("u"))


def _sample(engine: Engine, pairs: DataFrame, num_samples: int,
            bounds: dict[int, float] | None) -> dict[int, np.ndarray]:
    """Per feature, the values of its ``num_samples`` pairs of smallest u (only pairs with u < bound)."""
    F, Window = engine.api.F, engine.api.Window
    if bounds is not None:
        limits = engine.from_arrow(pa.table({"feature_id": pa.array(list(bounds), pa.int64()),
                                             "bound": pa.array([hash_threshold(b) for b in bounds.values()])}))
        pairs = pairs.join(limits, "feature_id").where(F.col("u") < F.col("bound"))
    window = Window.partitionBy("feature_id").orderBy("u", "value")
    ranked = pairs.select("feature_id", "value", F.row_number().over(window).alias("rank")) \
        .where(F.col("rank") <= num_samples)
    table = engine.to_arrow(ranked)
    ids = table.column("feature_id").to_numpy()
    values = table.column("value").to_numpy()
    ranks = table.column("rank").to_numpy()
    order = np.lexsort((ranks, ids))
    ids, values = ids[order], values[order]
    out: dict[int, np.ndarray] = {}
    for feature_id in np.unique(ids):
        lo, hi = np.searchsorted(ids, feature_id, "left"), np.searchsorted(ids, feature_id, "right")
        out[int(feature_id)] = values[lo:hi]
    return out


def sample_features(engine: Engine, df: DataFrame, column: str, num_samples: int,
                    seed: int) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """Seeded per-feature samples of a map column and each feature's total count of entries."""
    F = engine.api.F
    pairs = engine.cache(_exploded(df, column, seed))
    try:
        value = F.col("value")
        stats = pairs.groupBy("feature_id").agg(
            F.count(F.lit(1)).alias("count"),
            F.sum((value.isNull() | F.isnan(value) | (F.abs(value) == float("inf"))).cast("long")).alias("bad"),
            F.sum(value.isNull().cast("long")).alias("null"),
        ).collect()
        counts = {int(r["feature_id"]): int(r["count"]) for r in stats}
        bad = sorted((int(r["feature_id"]), int(r["bad"]), int(r["null"])) for r in stats if r["bad"])
        if bad:
            listed = ", ".join(f"feature {f}: {b} of {counts[f]} ({n} null)" for f, b, n in bad[:10])
            raise BatchRLError(f"column '{column}' has NaN, infinite or null values: {listed}"
                               + (f" and {len(bad) - 10} more features" if len(bad) > 10 else ""),
                               fix="clean the data (drop or replace non-finite values) before normalization")
        # keep pairs with u below a bound well above num_samples / count (exactness is checked below)
        bounds = {f: min(1.0, (1.1 * num_samples + 10.0 * math.sqrt(num_samples) + 100.0) / c)
                  for f, c in counts.items()}
        samples = _sample(engine, pairs, num_samples, bounds if any(b < 1.0 for b in bounds.values()) else None)
        short = [f for f, c in counts.items() if len(samples.get(f, ())) < min(num_samples, c)]
        if short:
            log.info("re-sampling %d features without the pre-filter", len(short))
            exact = _sample(engine, pairs.where(F.col("feature_id").isin(short)), num_samples, None)
            samples.update(exact)
    finally:
        engine.uncache(pairs)
    return samples, counts


NUMERIC = ("ByteType", "ShortType", "IntegerType", "LongType", "FloatType", "DoubleType", "DecimalType")


def _check_column(df: DataFrame, column: str, where: str) -> None:
    if column not in df.columns:
        raise BatchRLError(f"column '{column}' not found (columns: {', '.join(df.columns)})", where=where,
                           fix="pass --column with a map column of the timeline table, e.g. state_features")
    dtype = next(f.dataType for f in schema_of(df).fields if f.name == column)
    if not (type_name(dtype) == "MapType" and type_name(dtype.keyType) in NUMERIC
            and type_name(dtype.valueType) in NUMERIC):
        raise BatchRLError(f"column '{column}' is {dtype.simpleString()}, not a map of feature id -> value",
                           where=where, fix="normalize a map column (state_features, or action for "
                           "parametric/continuous actions); discrete actions need no normalization")


def identify_all(samples: dict[int, np.ndarray], options: NormalizeOptions) -> tuple[Normalization, dict[int, str]]:
    """Parameters per sampled feature, and the features left out with the reason."""
    normalization: Normalization = {}
    skipped: dict[int, str] = {}
    for feature_id in sorted(samples):
        forced = options.feature_overrides.get(feature_id, options.feature_type)
        name = f"{options.column} feature {feature_id}"
        try:
            normalization[feature_id] = identify_feature(samples[feature_id], options, forced, feature=name)
        except NotIdentified as exc:
            log.warning("%s: not identified and left out of the normalization", exc)
            skipped[feature_id] = str(exc)
    return normalization, skipped


@dataclass(frozen=True, kw_only=True)
class NormalizeResult(StageResult):
    """What :func:`normalize` wrote. The ``when_set`` fields are ``None`` (and not printed) when they are not
    known: the KFP step that ran the stage as a SparkApplication reads back only the normalization file."""

    output: str
    column: str
    features: int
    feature_ids: list[int]
    types: dict[str, int] | None = when_set()  # feature type -> number of features
    samples_per_feature: dict[str, int] | None = when_set()
    not_identified: dict[str, str] | None = when_set()  # feature id -> why (fewer than 20 values)
    num_samples: int | None = when_set()
    seed: int | None = when_set()
    engine: str | None = when_set()

    METADATA: ClassVar[tuple[str, ...]] = (
        "column", "features", "feature_ids", "types", "not_identified", "num_samples", "seed")
    HEADLINE: ClassVar[tuple[str, ...]] = ("features", "engine")


@dataclass(frozen=True, kw_only=True)
class NormalizeActionsResult(NormalizeResult):
    """What :func:`normalize_actions` wrote: for continuous actions a :class:`NormalizeResult`; for discrete
    ones (an empty normalization, no engine) only ``output``, ``column``, ``features`` (0) and
    ``feature_ids``."""

    action_kind: str  # discrete | continuous

    METADATA: ClassVar[tuple[str, ...]] = ("column", "action_kind", "features", "feature_ids")


def type_counts(normalization: Normalization) -> dict[str, int]:
    """Feature type -> number of features of that type (sorted by type)."""
    types: dict[str, int] = {}
    for params in normalization.values():
        types[params.feature_type.value] = types.get(params.feature_type.value, 0) + 1
    return dict(sorted(types.items()))


def normalize(input: str, output: str, options: NormalizeOptions, spark_master: str | None = "local[*]",
              engine: str = "auto") -> NormalizeResult:
    """Identify normalization parameters of ``options.column`` in the timeline table ``input``.

    Writes ReAgent's JSON (feature id -> JSON-encoded parameters) to ``output`` and returns a summary.
    ``engine``: auto, duckdb or spark (the sampling; identification is numpy).
    """
    runner = get_engine(engine, spark_master)
    df = runner.read_parquet(input)
    _check_column(df, options.column, input)
    samples, counts = sample_features(runner, df, options.column, options.num_samples, options.seed)
    unknown = sorted(set(options.feature_overrides) - set(counts))
    if unknown:
        raise BatchRLError(f"feature overrides name feature ids not in column '{options.column}': {unknown}",
                           where=input, fix=f"override only ids present in the data: {sorted(counts)[:20]}")
    normalization, skipped = identify_all(samples, options)
    if not normalization:
        reason = "it is empty" if not counts else f"no feature has {MIN_SAMPLES} or more values"
        raise BatchRLError(f"nothing to normalize in column '{options.column}': {reason}", where=input,
                           fix="check the input table (and --column)")
    write_normalization(output, normalization)
    log.info("normalization of %d features of %s written to %s", len(normalization), options.column, output)
    return NormalizeResult(
        output=output,
        column=options.column,
        features=len(normalization),
        feature_ids=list(normalization),
        types=type_counts(normalization),
        samples_per_feature={str(f): len(v) for f, v in sorted(samples.items())},
        not_identified={str(f): reason for f, reason in skipped.items()},
        num_samples=options.num_samples,
        seed=options.seed,
        engine=runner.describe(),
    )


def has_continuous_actions(timeline: str) -> bool:
    """Whether the timeline table's ``action`` column holds maps (continuous actions); from its schema."""
    schema = storage.read_schema(timeline)
    return "action" in schema.names and pa.types.is_map(schema.field("action").type)


def normalize_actions(input: str, output: str, options: NormalizeOptions, spark_master: str | None = "local[*]",
                      engine: str = "auto") -> NormalizeActionsResult:
    """The CONTINUOUS_ACTION bounds of the timeline's continuous (map) actions, which ``prepare`` and the
    exported actor use. Discrete (string) actions have nothing to normalize: an empty normalization is
    written (without an engine), so that one pipeline shape serves both kinds of actions."""
    options = options.model_copy(update={"column": "action", "feature_type": FeatureType.CONTINUOUS_ACTION})
    if not has_continuous_actions(input):
        write_normalization(output, {})
        return NormalizeActionsResult(output=output, column="action", action_kind="discrete", features=0,
                                      feature_ids=[])
    result = normalize(input, output, options, spark_master, engine)
    return NormalizeActionsResult(**result.to_dict(), action_kind="continuous")


def make_options(values: dict[str, Any], where: str) -> NormalizeOptions:
    """Validate a dict of options (e.g. a spark_job payload) into :class:`NormalizeOptions`."""
    try:
        return NormalizeOptions.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}"
                             for err in exc.errors())
        raise BatchRLError(f"invalid normalize options: {problems}", where=where,
                           fix=f"the known keys are {', '.join(NormalizeOptions.model_fields)}") from None
