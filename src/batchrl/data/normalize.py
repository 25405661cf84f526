"""The normalize stage: per-feature normalization of a map column of the timeline table (spec section 4).

Sampling runs in Spark: the map column is exploded into (feature id, value) pairs; each pair gets a
seeded hash ``u = xxhash64(seed, feature, mdp_id, sequence_number, value)`` mapped to [0, 1), and each
feature keeps its ``num_samples`` pairs of smallest ``u``. That sample depends only on the data and the
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
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from pydantic import Field, ValidationError

from batchrl import storage
from batchrl.errors import BatchRLError
from batchrl.preprocessing.identify import MIN_SAMPLES, IdentifyOptions, NotIdentified, identify_feature
from batchrl.preprocessing.normalization import FeatureType, Normalization, write_normalization

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

_U_BITS = 53


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
    """(feature_id, value, u) for every entry of the map column; u in [0, 1) from a seeded hash."""
    from pyspark.sql import functions as F

    row_key = [F.col(c) for c in ("mdp_id", "sequence_number") if c in df.columns]
    pairs = df.select(*row_key, F.explode(F.col(column)).alias("feature_id", "value"))
    hashed = F.xxhash64(F.lit(seed), F.col("feature_id"), *row_key, F.col("value"))
    scale = float(2 ** _U_BITS)
    return pairs.select(F.col("feature_id").cast("long").alias("feature_id"), F.col("value").cast("double"),
                        (F.pmod(hashed, F.lit(2 ** _U_BITS)).cast("double") / scale).alias("u"))


def _sample(pairs: DataFrame, num_samples: int, bounds: dict[int, float] | None) -> dict[int, np.ndarray]:
    """Per feature, the values of its ``num_samples`` pairs of smallest u (only pairs with u < bound)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if bounds is not None:
        limits = pairs.sparkSession.createDataFrame(list(bounds.items()), "feature_id long, bound double")
        pairs = pairs.join(F.broadcast(limits), "feature_id").where(F.col("u") < F.col("bound"))
    window = Window.partitionBy("feature_id").orderBy("u", "value")
    ranked = pairs.withColumn("rank", F.row_number().over(window)).where(F.col("rank") <= num_samples)
    table = ranked.select("feature_id", "value", "rank").toArrow()
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


def sample_features(df: DataFrame, column: str, num_samples: int, seed: int) -> tuple[dict[int, np.ndarray],
                                                                                       dict[int, int]]:
    """Seeded per-feature samples of a map column and each feature's total count of entries."""
    from pyspark.sql import functions as F

    pairs = _exploded(df, column, seed).cache()
    try:
        stats = pairs.groupBy("feature_id").agg(
            F.count(F.lit(1)).alias("count"),
            F.sum((F.col("value").isNull() | F.isnan("value")
                   | F.col("value").isin(math.inf, -math.inf)).cast("long")).alias("bad"),
            F.sum((F.col("value").isNull()).cast("long")).alias("null"),
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
        samples = _sample(pairs, num_samples, bounds if any(b < 1.0 for b in bounds.values()) else None)
        short = [f for f, c in counts.items() if len(samples.get(f, ())) < min(num_samples, c)]
        if short:
            log.info("re-sampling %d features without the pre-filter", len(short))
            exact = _sample(pairs.where(F.col("feature_id").isin(short)), num_samples, None)
            samples.update(exact)
    finally:
        pairs.unpersist()
    return samples, counts


def _check_column(df: DataFrame, column: str, where: str) -> None:
    from pyspark.sql.types import MapType, NumericType

    if column not in df.columns:
        raise BatchRLError(f"column '{column}' not found (columns: {', '.join(df.columns)})", where=where,
                           fix="pass --column with a map column of the timeline table, e.g. state_features")
    dtype = df.schema[column].dataType
    if not (isinstance(dtype, MapType) and isinstance(dtype.keyType, NumericType)
            and isinstance(dtype.valueType, NumericType)):
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


def normalize(input: str, output: str, options: NormalizeOptions, spark_master: str = "local[*]") -> dict:
    """Identify normalization parameters of ``options.column`` in the timeline table ``input``.

    Writes ReAgent's JSON (feature id -> JSON-encoded parameters) to ``output`` and returns a summary.
    """
    from batchrl.spark import get_spark

    storage.require_committed(input)
    spark = get_spark(spark_master)
    df = spark.read.parquet(storage.spark_path(input))
    _check_column(df, options.column, input)
    samples, counts = sample_features(df, options.column, options.num_samples, options.seed)
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
    types: dict[str, int] = {}
    for params in normalization.values():
        types[params.feature_type.value] = types.get(params.feature_type.value, 0) + 1
    log.info("normalization of %d features of %s written to %s", len(normalization), options.column, output)
    return {
        "output": output,
        "column": options.column,
        "features": len(normalization),
        "feature_ids": list(normalization),
        "types": dict(sorted(types.items())),
        "samples_per_feature": {str(f): len(v) for f, v in sorted(samples.items())},
        "not_identified": {str(f): reason for f, reason in skipped.items()},
        "num_samples": options.num_samples,
        "seed": options.seed,
    }


def has_continuous_actions(timeline: str) -> bool:
    """Whether the timeline table's ``action`` column holds maps (continuous actions); from its schema."""
    schema = storage.read_schema(timeline)
    return "action" in schema.names and pa.types.is_map(schema.field("action").type)


def normalize_actions(input: str, output: str, options: NormalizeOptions, spark_master: str = "local[*]") -> dict:
    """The CONTINUOUS_ACTION bounds of the timeline's continuous (map) actions, which ``prepare`` and the
    exported actor use. Discrete (string) actions have nothing to normalize: an empty normalization is
    written (without Spark), so that one pipeline shape serves both kinds of actions."""
    options = options.model_copy(update={"column": "action", "feature_type": FeatureType.CONTINUOUS_ACTION})
    if not has_continuous_actions(input):
        write_normalization(output, {})
        return {"output": output, "column": "action", "action_kind": "discrete", "features": 0, "feature_ids": []}
    return {**normalize(input, output, options, spark_master), "action_kind": "continuous"}


def make_options(values: dict[str, Any], where: str) -> NormalizeOptions:
    """Validate a dict of options (e.g. a spark_job payload) into :class:`NormalizeOptions`."""
    try:
        return NormalizeOptions.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}"
                             for err in exc.errors())
        raise BatchRLError(f"invalid normalize options: {problems}", where=where,
                           fix=f"the known keys are {', '.join(NormalizeOptions.model_fields)}") from None
