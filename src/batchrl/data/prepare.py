"""The prepare stage: timeline table -> dense train and eval training tables (spec section 3).

Per timeline row, on the data engine (DuckDB or Spark, :mod:`batchrl.engine`; one DataFrame-API
implementation for both, no Python UDFs):

1. reward: ``COALESCE(expr, 0)`` of a custom SQL expression if given; else with multi-step
   (``multi_steps = K``) the discounted sum ``sum_{j < step} gamma^j reward[j]``; else ``reward``;
2. split by a stable hash of ``mdp_id``: h = 100 u in [0, 100) with u = md5(split_seed|mdp_id) / 16^32
   (:func:`batchrl.engine.hash_key`, the same on both engines);
   train keeps h < table_sample, eval keeps h >= 100 - eval_table_sample (whole episodes stay together;
   the ranges must not overlap);
3. ``step`` = 1, or with multi-step ``min(len(next_state_features), K)`` (at least 1);
   ``time_diff``, the next state, next action, possible next actions and metrics are element
   ``step - 1`` of their arrays in multi-step mode;
4. sparse -> dense over the normalization's feature ids (ascending): values (missing -> 0) and presence;
5. discrete actions -> index into the action list (unknown or "" -> len(actions));
   ``not_terminal`` = the next action is a real action; possible (next) actions -> boolean masks;
   continuous (map) actions -> dense vectors over the action normalization's feature ids (raw values,
   scaled by the trainer), ``not_terminal`` = the next action map is not empty, empty masks;
   parametric actions (map actions with ``possible_actions`` as a list of maps: items chosen among
   candidate sets) -> the same vectors, plus the candidate sets of the state and the next state padded
   to K = the largest set (features flattened [K * A] with presence, a mask [K] of the real candidates)
   and ``action_index``, the chosen item's position among its candidates (:func:`candidate_columns`);
6. the columns of :func:`batchrl.data.schema.training_columns`, rows ordered by (mdp_id, sequence_number).

Truncation: a row without a next action whose ``end_reason`` is ``truncated`` (a time limit, not a
terminal state) has no next state and cannot be trained as terminal: it is dropped and counted.
Rows without ``end_reason`` (the column or the value) and a missing next action are terminal.
A null ``action_probability`` becomes 1.0 (counted and warned about: CPE needs real propensities).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batchrl import storage
from batchrl.data.schema import END_TRUNCATED, training_columns
from batchrl.engine import (
    any_of,
    api,
    get_engine,
    has_key,
    hash_below,
    hash_key,
    hash_key_of,
    hash_threshold,
    schema_of,
    type_name,
)
from batchrl.errors import BatchRLError
from batchrl.preprocessing.normalization import FeatureType, read_normalization
from batchrl.results import StageResult

if TYPE_CHECKING:
    from types import ModuleType

    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import DataType, StructType

    from batchrl.engine import Engine

log = logging.getLogger(__name__)

REQUIRED = ("mdp_id", "state_features", "action", "next_action", "action_probability", "reward",
            "next_state_features", "sequence_number", "time_diff")


class PrepareOptions(BaseModel):
    """Options of the prepare stage (ReAgent's ``input_table_spec`` and trainer names)."""

    model_config = ConfigDict(extra="forbid")

    #: Discrete action names in index order; None: the sorted distinct logged actions.
    actions: list[str] | None = None
    table_sample: float = Field(default=90.0, ge=0.0, le=100.0)
    eval_table_sample: float = Field(default=10.0, ge=0.0, le=100.0)
    multi_steps: int | None = Field(default=None, ge=1)
    gamma: float | None = Field(default=None, ge=0.0, le=1.0)
    custom_reward_expression: str | None = None
    split_seed: int = 0

    @field_validator("actions", mode="before")
    @classmethod
    def _action_names(cls, value: Any) -> Any:
        """ReAgent configs list actions as ints ([0, 1]); they name the logged strings "0", "1"."""
        if isinstance(value, list | tuple):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> PrepareOptions:
        if self.table_sample + self.eval_table_sample > 100.0:
            raise ValueError(f"table_sample {self.table_sample} + eval_table_sample {self.eval_table_sample} "
                             "> 100: an episode would be in both train and eval")
        if self.actions is not None:
            if not self.actions:
                raise ValueError("actions is empty")
            if len(set(self.actions)) != len(self.actions) or "" in self.actions:
                raise ValueError(f"actions must be distinct and non-empty, got {self.actions}")
        if self.multi_steps is not None and self.gamma is None and self.custom_reward_expression is None:
            raise ValueError("multi_steps needs gamma (the discount of the multi-step reward)")
        if self.custom_reward_expression is not None and not self.custom_reward_expression.strip():
            raise ValueError("custom_reward_expression is empty")
        return self


# ---------------------------------------------------------------- checks


def _check_input(df: DataFrame, options: PrepareOptions, where: str) -> tuple[bool, bool]:
    """Check the timeline table's columns; return whether it is multi-step (array rewards) and whether
    its actions are continuous (maps)."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise BatchRLError(f"the timeline table has no column(s) {missing}", where=where,
                           fix="pass the output of `batchrl timeline`")
    schema = {f.name: f.dataType for f in schema_of(df).fields}
    action = schema["action"]
    continuous = type_name(action) == "MapType" and type_name(action.keyType) in ("LongType", "IntegerType")
    if not continuous and type_name(action) != "StringType":
        raise BatchRLError(f"action is {action.simpleString()}: prepare supports discrete (string) and "
                           "continuous (map<bigint,double>) actions", where=where,
                           fix="log actions as names (strings) or as maps {action feature id: value}")
    if continuous and options.actions is not None:
        raise BatchRLError("--actions names discrete actions, but this timeline's actions are maps (continuous)",
                           where=where, fix="drop --actions; pass --action-normalization instead")
    multi = type_name(schema["reward"]) == "ArrayType"
    if multi and options.multi_steps is None:
        raise BatchRLError("the timeline is multi-step (reward is an array) but no --multi-steps was given",
                           where=where, fix="pass --multi-steps K --gamma G (K at most the timeline's steps)")
    if not multi and options.multi_steps is not None:
        raise BatchRLError(f"--multi-steps {options.multi_steps} needs a multi-step timeline (reward arrays)",
                           where=where, fix="rebuild the timeline with steps K, or drop --multi-steps")
    return multi, continuous


def action_features(uri: str | None, where: str) -> list[int]:
    """The feature ids of a continuous-action normalization; every one must be CONTINUOUS_ACTION."""
    fix = ("run `batchrl normalize --column action --feature-type CONTINUOUS_ACTION` on the timeline and pass "
           "its output as --action-normalization")
    if uri is None:
        raise BatchRLError("the timeline's actions are maps (continuous) but no action normalization was given",
                           where=where, fix=fix)
    params = read_normalization(uri)
    wrong = {i: p.feature_type.value for i, p in params.items() if p.feature_type != FeatureType.CONTINUOUS_ACTION}
    if wrong or not params:
        raise BatchRLError(f"continuous actions need CONTINUOUS_ACTION features (their [min, max] bounds); got "
                           f"{wrong or 'no features'}", where=uri, fix=fix)
    return sorted(params)


def is_parametric(df: DataFrame) -> bool:
    """Map actions chosen among candidate sets: ``possible_actions`` is a list of maps."""
    if "possible_actions" not in df.columns:
        return False
    possible = {f.name: f.dataType for f in schema_of(df).fields}["possible_actions"]
    return type_name(possible) == "ArrayType" and type_name(possible.elementType) == "MapType"


def parametric_action_features(uri: str | None, where: str) -> list[int]:
    """The item feature ids of a parametric-action table: those of the action normalization (any types)."""
    fix = ("run `batchrl normalize --column action` on the timeline (the chosen items' features) and pass its "
           "output as --action-normalization")
    if uri is None:
        raise BatchRLError("the timeline's actions are items chosen among candidate sets (parametric) but no "
                           "action normalization was given", where=where, fix=fix)
    params = read_normalization(uri)
    if not params:
        raise BatchRLError("the action normalization has no features", where=uri, fix=fix)
    return sorted(params)


def _check_candidates(df: DataFrame, action_ids: list[int], where: str) -> int:
    """One scan of a parametric timeline: the largest candidate set K; candidate or chosen-item maps with
    feature ids outside the action normalization are bad input."""
    F = api(df).F
    known = _ids(F, action_ids)
    unknown = F.array_except(F.concat(F.flatten(F.transform("possible_actions", lambda m: F.map_keys(m))),
                                      F.map_keys(F.col("action"))), known)
    row = df.agg(F.max(F.size("possible_actions")).alias("k"),
                 F.sum((F.coalesce(F.size(unknown), F.lit(0)) > 0).cast("long")).alias("bad_rows"),
                 F.array_distinct(F.flatten(F.collect_set(unknown))).alias("unknown")).collect()[0]
    if row["bad_rows"]:
        raise BatchRLError(f"{row['bad_rows']} rows have candidate (possible_actions) or chosen-item maps with "
                           f"feature ids {sorted(row['unknown'])[:20]} that the action normalization lacks "
                           f"(it has {action_ids})", where=where,
                           fix="compute the action normalization on this timeline (`batchrl normalize --column "
                               "action`), or drop those features from the logged candidates")
    return max(int(row["k"] or 0), 1)


def candidate_columns(F: ModuleType, possible: Column, ids: list[int], k: int) -> tuple[Column, Column, Column]:
    """A list of item maps padded to ``k`` candidates: (features float [k * len(ids)], presence [k * len(ids)],
    mask bool [k]); candidate i's vector is :func:`_dense` of its map, padding is all zero and absent."""
    size = F.coalesce(F.size(possible), F.lit(0))
    vectors = [_dense(F, F.try_element_at(possible, F.lit(i + 1)), ids) for i in range(k)]
    # (a padding position's map is null, so _dense already gives zeros and no presence)
    return (F.flatten(F.array(*[values for values, _ in vectors])),
            F.flatten(F.array(*[presence for _, presence in vectors])),
            F.array(*[size > i for i in range(k)]))


def _chosen_index(F: ModuleType, possible: Column, action: Column, ids: list[int], k: int) -> Column:
    """The 0-based position of the chosen item's vector among the candidates' (the first equal one); -1 if absent."""
    size = F.coalesce(F.size(possible), F.lit(0))
    hits = [F.when((size > i) & (_dense(F, F.try_element_at(possible, F.lit(i + 1)), ids)[0] == action), F.lit(i))
            for i in range(k)]
    return F.coalesce(*hits, F.lit(-1)).cast("bigint")


def _names(df: DataFrame, multi: bool, need_actions: bool) -> tuple[list[str] | None, list[str]]:
    """One scan: the sorted distinct logged actions (numerically when all are integers; only when
    ``need_actions``) and the sorted metric names."""
    F = api(df).F

    aggs = []
    if need_actions:
        aggs.append(F.collect_set("action").alias("actions"))
        if "possible_actions" in df.columns:
            aggs.append(F.array_distinct(F.flatten(F.collect_set("possible_actions"))).alias("possible"))
    if "metrics" in df.columns:
        maps = F.flatten(F.transform("metrics", lambda m: F.map_keys(m))) if multi else F.map_keys("metrics")
        aggs.append(F.array_distinct(F.flatten(F.collect_set(maps))).alias("metrics"))
    if not aggs:
        return None, []
    row = df.agg(*aggs).collect()[0].asDict()
    row = {k: (list(v) if v is not None else None) for k, v in row.items()}
    metric_names = sorted(row.get("metrics") or [])
    if not need_actions:
        return None, metric_names
    names = {a for a in (row.get("actions") or []) + (row.get("possible") or []) if a}
    if not names:
        raise BatchRLError("no actions found in the timeline table", fix="pass --actions")
    numeric = all(n.lstrip("-").isdigit() for n in names)
    return sorted(names, key=(lambda n: (int(n), n)) if numeric else None), metric_names


def _ids(F: ModuleType, ids: list[int]) -> Column:
    return F.array(*[F.lit(i).cast("bigint") for i in ids]) if ids else F.expr("array()").cast("array<bigint>")


def _dense(F: ModuleType, features: Column, ids: list[int]) -> tuple[Column, Column]:
    """A map<bigint,double> as float values (missing -> 0) and presence over ``ids``."""
    m = F.coalesce(features, F.expr("map()").cast("map<bigint,double>"))
    # when/otherwise keeps the elements nullable, as TRAINING_COLUMNS declares (Arrow's list default)
    values = F.transform(_ids(F, ids), lambda k: F.when(has_key(F, m, k), F.element_at(m, k))
                         .otherwise(F.lit(0.0)).cast("float"))
    presence = F.transform(_ids(F, ids), lambda k: has_key(F, m, k))
    return values, presence


def _action_index(F: ModuleType, action: Column, actions: list[str]) -> Column:
    """Index of ``action`` in ``actions``; unknown, empty or null -> len(actions)."""
    position = F.array_position(F.array(*[F.lit(a) for a in actions]), F.coalesce(action, F.lit("")))
    return F.when(position > 0, position - 1).otherwise(F.lit(len(actions))).cast("bigint")


def _mask(F: ModuleType, possible: Column | None, actions: list[str]) -> Column:
    if possible is None:
        return F.array(*[F.lit(True) for _ in actions])
    present = F.coalesce(possible, F.expr("array()").cast("array<string>"))
    return F.array(*[F.array_contains(present, F.lit(a)) for a in actions])


def episode_split(mdp_id: str, options: PrepareOptions) -> str | None:
    """Where ``prepare`` puts episode ``mdp_id``: ``"train"``, ``"eval"`` or None (neither), the engines'
    split rule in Python (e.g. to train another library on exactly the training episodes)."""
    key = hash_key_of(options.split_seed, mdp_id)
    if key < hash_threshold(options.table_sample / 100.0):
        return "train"
    if not key < hash_threshold((100.0 - options.eval_table_sample) / 100.0):
        return "eval"
    return None


def _split_hash(F: ModuleType, mdp_id: Column, seed: int) -> Column:
    """The episode's hash key; its position in [0, 100) is 100 u (:func:`batchrl.engine.hash_key`)."""
    return hash_key(F, F.lit(seed), mdp_id)


def training_rows(df: DataFrame, options: PrepareOptions, feature_ids: list[int], actions: list[str],
                  metric_names: list[str], multi: bool, action_ids: list[int] | None = None,
                  candidates: int | None = None) -> DataFrame:
    """Timeline rows -> training rows (``training_columns`` plus ``_split``, ``_truncated``,
    ``_prob_null``, ``_no_action``). ``action_ids``: the action feature ids of continuous (map) actions;
    ``candidates``: parametric actions, the candidate sets padded to this many items.

    Long because it is one projection plan: each training column's expression, in the training schema's
    order; split up, one SELECT would be scattered over several functions."""
    F = api(df).F
    custom = None
    if options.custom_reward_expression is not None:
        custom = F.coalesce(F.expr(options.custom_reward_expression).cast("double"), F.lit(0.0))
    # inputs under their own names, so that outputs of the same name never shadow them
    df = df.select(*[F.col(c).alias(f"_in_{c}") for c in df.columns],
                   *([custom.alias("_in__custom_reward")] if custom is not None else []))
    cols = {c[len("_in_"):] for c in df.columns}

    def col(name: str) -> Column:
        return F.col(f"_in_{name}")

    if multi:  # the step as a column of its own: SQLFrame mistranslates an array index that is an expression
        df = df.select("*", F.greatest(F.lit(1), F.least(F.size(col("next_state_features")),
                                                          F.lit(options.multi_steps))).alias("_in__step"))
        step = col("_step")

        def at_step(name: str) -> Column:
            return F.try_element_at(col(name), step)
    else:
        step = F.lit(1)

        def at_step(name: str) -> Column:
            return col(name)

    if custom is not None:
        reward = col("_custom_reward")
    elif multi:  # sum_{j < step} gamma^j reward[j], with the K terms written out
        assert options.gamma is not None and options.multi_steps is not None  # PrepareOptions, _check_input
        gamma = float(options.gamma)
        reward = F.lit(0.0)
        for j in range(options.multi_steps):
            term = F.coalesce(F.try_element_at(col("reward"), F.lit(j + 1)), F.lit(0.0)) * F.lit(gamma ** j)
            reward = reward + F.when(step > j, term).otherwise(F.lit(0.0))
    else:
        reward = col("reward")

    if action_ids is None:
        next_name = F.coalesce(at_step("next_action"), F.lit(""))
        next_index = _action_index(F, next_name, actions)
        missing_next = next_name == ""
        action = _action_index(F, col("action"), actions)
        action_columns = {
            "action": action, "next_action": next_index,
            "possible_actions_mask": _mask(F, col("possible_actions") if "possible_actions" in cols else None,
                                           actions),
            "possible_next_actions_mask": _mask(F, at_step("possible_next_actions")
                                                if "possible_next_actions" in cols else None, actions)}
        no_action = action == F.lit(len(actions))
    else:
        # size of a map as the size of its keys (SQLFrame sizes lists only)
        missing_next = F.coalesce(F.size(F.map_keys(at_step("next_action"))), F.lit(0)) <= 0
        action, action_presence = _dense(F, col("action"), action_ids)
        next_vector, next_presence_ = _dense(F, at_step("next_action"), action_ids)
        no_mask = F.expr("array()").cast("array<boolean>")
        action_columns = {"action": action, "action_presence": action_presence, "next_action": next_vector,
                          "next_action_presence": next_presence_, "possible_actions_mask": no_mask,
                          "possible_next_actions_mask": no_mask}
        no_action = ~any_of(F, action_presence, lambda present: present)
        if candidates is not None:  # parametric: the candidate sets of this and the next state
            features, presence, mask = candidate_columns(F, col("possible_actions"), action_ids, candidates)
            next_features, next_presence_c, next_mask = candidate_columns(
                F, at_step("possible_next_actions"), action_ids, candidates)
            action_columns.update({
                "possible_actions_mask": mask, "possible_next_actions_mask": next_mask,
                "possible_actions_features": features, "possible_actions_presence": presence,
                "possible_next_actions_features": next_features, "possible_next_actions_presence": next_presence_c,
                "action_index": _chosen_index(F, col("possible_actions"), action, action_ids, candidates)})
    truncated = F.coalesce(col("end_reason") == F.lit(END_TRUNCATED), F.lit(False)) \
        if "end_reason" in cols else F.lit(False)
    state, state_presence = _dense(F, col("state_features"), feature_ids)
    next_state, next_presence = _dense(F, at_step("next_state_features"), feature_ids)
    if "metrics" in cols:
        metrics, metrics_presence = _metric_columns(F, at_step("metrics"), metric_names)
    else:
        metrics, metrics_presence = F.expr("array()").cast("array<float>"), F.expr("array()").cast("array<boolean>")
    ordinal = "sequence_number_ordinal" if "sequence_number_ordinal" in cols else "sequence_number"
    out = {
        "reward": reward.cast("float"),
        "state_features": state,
        "state_features_presence": state_presence,
        "next_state_features": next_state,
        "next_state_features_presence": next_presence,
        **action_columns,
        "not_terminal": next_index < F.lit(len(actions)) if action_ids is None else ~missing_next,
        "action_probability": F.coalesce(col("action_probability"), F.lit(1.0)).cast("float"),
        "mdp_id": col("mdp_id").cast("string"),
        "sequence_number": col(ordinal).cast("bigint"),
        "step": step.cast("bigint"),
        "time_diff": F.coalesce(at_step("time_diff"), F.lit(0)).cast("bigint"),
        "metrics": metrics,
        "metrics_presence": metrics_presence,
    }
    return df.select(*[value.alias(name) for name, value in out.items()],
                     _split_hash(F, col("mdp_id"), options.split_seed).alias("_split"),
                     (missing_next & truncated).alias("_truncated"),
                     col("action_probability").isNull().alias("_prob_null"), no_action.alias("_no_action"))


def _check_candidate_rows(rows: DataFrame, where: str) -> None:
    """Bad parametric input (kept rows only): a chosen item that is not among its candidates (or an empty
    candidate set on a row with a chosen item), and a non-terminal row whose next candidate set is empty."""
    F = api(rows).F
    kept = rows.where(~F.col("_truncated") & ~F.col("_no_action"))
    empty = ~any_of(F, F.col("possible_actions_mask"), lambda real: real)
    next_empty = F.col("not_terminal") & ~any_of(F, F.col("possible_next_actions_mask"), lambda real: real)
    r = kept.agg(F.sum((F.col("action_index") < 0).cast("long")).alias("absent"),
                 F.sum(empty.cast("long")).alias("empty"), F.sum(next_empty.cast("long")).alias("next_empty"),
                 F.min(F.when(F.col("action_index") < 0, F.concat_ws(" seq ", F.col("mdp_id"),
                                                                      F.col("sequence_number").cast("string"))))
                 .alias("example")).collect()[0]
    if r["absent"]:
        raise BatchRLError(f"{r['absent']} rows have a chosen action that is not among their candidates "
                           f"(possible_actions; {r['empty'] or 0} of them have an empty candidate set), e.g. "
                           f"mdp_id {r['example']}", where=where,
                           fix="log the chosen item's feature map exactly as it appears in possible_actions")
    if r["next_empty"]:
        raise BatchRLError(f"{r['next_empty']} non-terminal rows have an empty next candidate set "
                           "(possible_next_actions = [] but a next action exists)", where=where,
                           fix="log the candidate set of every step that has a chosen item")


def _metric_columns(F: ModuleType, metrics: Column, names: list[str]) -> tuple[Column, Column]:
    m = F.coalesce(metrics, F.expr("map()").cast("map<string,double>"))
    keys = F.array(*[F.lit(n) for n in names]) if names else F.expr("array()").cast("array<string>")
    values = F.transform(keys, lambda k: F.when(has_key(F, m, k), F.element_at(m, k))
                         .otherwise(F.lit(0.0)).cast("float"))
    return values, F.transform(keys, lambda k: has_key(F, m, k))


# ---------------------------------------------------------------- the stage


def training_spark_schema(T: ModuleType, continuous: bool = False, parametric: bool = False) -> StructType:
    """``training_columns`` as a schema of the engine's types ``T`` (nullable lists of nullable elements,
    like Arrow's defaults)."""
    scalar = {pa.float32(): T.FloatType(), pa.int64(): T.LongType(), pa.bool_(): T.BooleanType(),
              pa.string(): T.StringType()}

    def spark_type(dtype: pa.DataType) -> DataType:
        if pa.types.is_list(dtype):
            return T.ArrayType(spark_type(dtype.value_type), containsNull=True)
        return scalar[dtype]

    return T.StructType([T.StructField(name, spark_type(dtype), True)
                         for name, dtype in training_columns(continuous, parametric).items()])


@dataclass(frozen=True)
class SplitStats:
    """Rows, episodes, reward moments and terminal rows of one output table (train or eval)."""

    num_rows: int
    episodes: int
    reward_mean: float | None  # None: no row
    reward_std: float | None
    terminal_rows: int


@dataclass(frozen=True, kw_only=True)
class PreparedTable(StageResult):
    """One output table of :func:`prepare`, as its committed metadata describes it (what KFP records on each
    table artifact)."""

    num_rows: int
    episodes: int
    reward_mean: float | None
    reward_std: float | None
    terminal_rows: int
    feature_ids: list[int]
    action_kind: str
    action_names: list[str]
    metric_names: list[str]

    METADATA: ClassVar[tuple[str, ...]] = ("num_rows", "episodes", "reward_mean", "terminal_rows", "feature_ids",
                                           "action_kind", "action_names", "metric_names")


@dataclass(frozen=True, kw_only=True)
class PrepareResult(StageResult):
    """What :func:`prepare` wrote; KFP records each table's :meth:`table`."""

    output_train: str
    output_eval: str
    input_rows: int
    dropped_truncated: int
    null_action_probability: int
    unknown_actions: int
    rows_without_features: int
    train: SplitStats
    eval: SplitStats
    feature_ids: list[int]
    action_kind: str  # discrete | continuous
    action_names: list[str]
    metric_names: list[str]
    gamma: float | None
    multi_steps: int | None
    table_sample: float
    eval_table_sample: float
    engine: str
    elapsed_s: float

    HEADLINE: ClassVar[tuple[str, ...]] = ("train_rows", "eval_rows", "dropped_truncated", "engine")

    @property
    def train_rows(self) -> int:
        return self.train.num_rows

    @property
    def eval_rows(self) -> int:
        return self.eval.num_rows

    def table(self, part: str) -> PreparedTable:
        """The ``train`` or ``eval`` table."""
        stats = {"train": self.train, "eval": self.eval}[part]
        return PreparedTable(**asdict(stats), feature_ids=self.feature_ids, action_kind=self.action_kind,
                             action_names=self.action_names, metric_names=self.metric_names)


def _part_stats(rows: DataFrame, parts: dict[str, Column]) -> tuple[dict[str, Any], dict[str, SplitStats]]:
    """One job: input counts (rows, truncated, null propensities, unknown actions) and per-part stats."""
    F = api(rows).F
    part = F.lit(None).cast("string")
    for name, condition in reversed(parts.items()):
        part = F.when(~F.col("_truncated") & condition, F.lit(name)).otherwise(part)
    grouped = rows.select("*", part.alias("_part")).groupBy("_part").agg(
        F.count(F.lit(1)).alias("rows"), F.countDistinct("mdp_id").alias("episodes"),
        F.sum("reward").alias("reward_sum"), F.sum(F.col("reward") * F.col("reward")).alias("reward_sq"),
        F.sum((~F.col("not_terminal")).cast("long")).alias("terminal"),
        F.sum(F.col("_truncated").cast("long")).alias("truncated"),
        F.sum(F.col("_prob_null").cast("long")).alias("prob_null"),
        F.sum(F.col("_no_action").cast("long")).alias("unknown"),
        F.sum((~any_of(F, F.col("state_features_presence"), lambda present: present)).cast("long"))
        .alias("featureless"),
    ).collect()
    by_part = {r["_part"]: r for r in grouped}
    counts = {key: sum(int(r[key] or 0) for r in grouped)
              for key in ("rows", "truncated", "prob_null", "unknown", "featureless")}
    stats: dict[str, SplitStats] = {}
    for name in parts:
        r = by_part.get(name)
        n = int(r["rows"]) if r else 0
        mean = float(r["reward_sum"]) / n if r and n else None
        std = max(float(r["reward_sq"]) / n - mean * mean, 0.0) ** 0.5 if r and mean is not None else None
        stats[name] = SplitStats(num_rows=n, episodes=int(r["episodes"]) if r else 0, reward_mean=mean,
                                 reward_std=std, terminal_rows=int(r["terminal"] or 0) if r else 0)
    return counts, stats


def _write_tables(runner: Engine, rows: DataFrame, schema: Any, conditions: dict[str, Column],
                  outputs: dict[str, tuple[str, list[float]]], metadata: dict[str, dict[str, Any]]) -> None:
    """Write each split's rows (``conditions``; truncated rows left out) in the training schema, whole
    episodes per file in sequence order (what sequential CPE reads); commit them all only when all are
    written, with their ``metadata``."""
    F = runner.api.F
    writers: dict[str, storage.DatasetWriter] = {}
    try:
        for name, (uri, _) in outputs.items():
            writers[name] = writer = storage.DatasetWriter(uri)
            part = rows.where(~F.col("_truncated") & conditions[name])
            typed = part.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
            runner.write_parquet(typed, writer, sort_by=["mdp_id", "sequence_number"])
        for name, writer in writers.items():
            writer.commit(metadata[name])
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise


def _report_counts(counts: dict[str, int], feature_ids: list[int], actions: list[str], action_ids: list[int] | None,
                   where: str) -> None:
    """Fail when no row has any normalized feature; warn about featureless rows, missing propensities and
    rows whose action is outside the trained ones (``action_ids``: continuous actions' feature ids)."""
    if counts["rows"] and counts["featureless"] == counts["rows"]:
        raise BatchRLError(f"no row has any of the normalization's feature ids {feature_ids[:20]} in "
                           "state_features", where=where,
                           fix="pass the normalization computed (`batchrl normalize`) on this timeline")
    if counts["featureless"]:
        log.warning("%d rows have none of the normalization's features (their state vectors are all 0)",
                    counts["featureless"])
    if counts["prob_null"]:
        log.warning("%d rows have no action_probability; 1.0 was used (CPE needs real propensities)",
                    counts["prob_null"])
    if counts["unknown"] and action_ids is not None:
        log.warning("%d rows have none of the action features %s (they are not trained on)", counts["unknown"],
                    action_ids)
    elif counts["unknown"]:
        log.warning("%d rows have a logged action outside %s (action index %d)", counts["unknown"], actions,
                    len(actions))


def prepare(input: str, normalization: str, output_train: str, output_eval: str, options: PrepareOptions,
            spark_master: str | None = "local[*]", action_normalization: str | None = None,
            engine: str = "auto") -> PrepareResult:
    """Write the train and eval training tables of the timeline table at ``input``.

    Feature ids (the order of the dense vectors) are the normalization's; the dataset metadata of both
    outputs records ``feature_ids``, ``action_kind``, ``action_names``, ``metric_names``, ``num_rows``,
    ``gamma``, ``multi_steps`` and the split ranges. Continuous (map) actions need
    ``action_normalization`` (CONTINUOUS_ACTION bounds); its feature ids order the action vectors, the
    action names are those ids as strings, and the metadata keeps the normalization itself
    (``action_feature_ids``, ``action_normalization``) for the trainer. Both outputs are committed only
    when both are written. ``engine``: auto, duckdb or spark.

    Long because it tells the stage in order (the input checks, the training-rows plan, its counts, the two
    committed tables), each step a call; what stays inline is the metadata both tables carry.
    """
    started = time.perf_counter()
    if storage.resolve(output_train).uri.rstrip("/") == storage.resolve(output_eval).uri.rstrip("/"):
        raise BatchRLError("train and eval outputs are the same location", where=output_train,
                           fix="pass two different --output-train / --output-eval URIs")
    feature_ids = list(read_normalization(normalization))
    runner = get_engine(engine, spark_master)
    F = runner.api.F
    df = runner.read_parquet(input)
    multi, continuous = _check_input(df, options, input)
    parametric = continuous and is_parametric(df)
    candidates = None
    if parametric:
        action_ids: list[int] | None = parametric_action_features(action_normalization, input)
        candidates = _check_candidates(df, cast(list[int], action_ids), input)
    else:
        action_ids = action_features(action_normalization, input) if continuous else None
    if not continuous and action_normalization is not None and read_normalization(action_normalization):
        raise BatchRLError("--action-normalization applies to continuous (map) actions; this timeline's actions "
                           "are discrete (strings)", where=input, fix="drop --action-normalization")
    inferred, metric_names = _names(df, multi, need_actions=not continuous and options.actions is None)
    if continuous:
        assert action_ids is not None  # action_features, called for continuous actions
        actions = [str(i) for i in action_ids]
    else:
        actions = list(options.actions) if options.actions is not None else inferred or []  # _names inferred them
    train_range = [0.0, options.table_sample]
    eval_range = [100.0 - options.eval_table_sample, 100.0]
    conditions = {"train": hash_below(F, F.col("_split"), options.table_sample / 100.0),
                  "eval": ~hash_below(F, F.col("_split"), eval_range[0] / 100.0)}
    try:  # a bad custom reward expression fails here (Spark: when planned; DuckDB: when run)
        rows = runner.named(training_rows(df, options, feature_ids, actions, metric_names, multi, action_ids,
                                          candidates))
        counts, results = _part_stats(rows, conditions)
        if parametric:
            _check_candidate_rows(rows, input)
    except BatchRLError:
        raise
    except Exception as exc:  # AnalysisException, sqlglot's ParseError, duckdb.Error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        expr = options.custom_reward_expression
        raise BatchRLError(f"could not build the training table: {first}", where=expr or input,
                           fix="check --custom-reward-expression (a SQL expression over the timeline columns)"
                           if expr else "pass the output of `batchrl timeline`") from None
    _report_counts(counts, feature_ids, actions, action_ids, f"{input} with {normalization}")
    common = {
        "feature_ids": feature_ids,
        "action_kind": "parametric" if parametric else "continuous" if continuous else "discrete",
        "action_names": actions,
        "metric_names": metric_names,
        "gamma": options.gamma,
        "multi_steps": options.multi_steps,
        "split": {"train": train_range, "eval": eval_range,
                  "hash": "100 * int(md5(split_seed|mdp_id), 16) / 16^32", "split_seed": options.split_seed},
        "custom_reward_expression": options.custom_reward_expression,
        "input": input,
        "normalization": normalization,
        **({"action_feature_ids": action_ids,
            "action_normalization": storage.read_json(cast(str, action_normalization)),  # set when continuous
            "action_normalization_uri": action_normalization} if continuous else {}),
        **({"num_candidates": candidates} if parametric else {}),
    }
    outputs = {"train": (output_train, train_range), "eval": (output_eval, eval_range)}
    schema = training_spark_schema(runner.api.T, continuous, parametric)
    _write_tables(runner, rows, schema, conditions, outputs,
                  {name: {"stage": "prepare", "table": name, **common, **asdict(results[name]),
                          "split_range": outputs[name][1]} for name in outputs})
    result = PrepareResult(
        output_train=output_train,
        output_eval=output_eval,
        input_rows=counts["rows"],
        dropped_truncated=counts["truncated"],
        null_action_probability=counts["prob_null"],
        unknown_actions=counts["unknown"],
        rows_without_features=counts["featureless"],
        train=results["train"],
        eval=results["eval"],
        feature_ids=feature_ids,
        action_kind=common["action_kind"],
        action_names=actions,
        metric_names=metric_names,
        gamma=options.gamma,
        multi_steps=options.multi_steps,
        table_sample=options.table_sample,
        eval_table_sample=options.eval_table_sample,
        engine=runner.describe(),
        elapsed_s=round(time.perf_counter() - started, 3),
    )
    log.info("prepare: %d train rows, %d eval rows (%d truncated rows dropped)", result.train_rows,
             result.eval_rows, result.dropped_truncated)
    return result


def make_options(values: dict[str, Any], where: str) -> PrepareOptions:
    """Validate a dict of options (e.g. a spark_job payload) into :class:`PrepareOptions`."""
    try:
        return PrepareOptions.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}"
                             for err in exc.errors())
        raise BatchRLError(f"invalid prepare options: {problems}", where=where,
                           fix=f"the known keys are {', '.join(PrepareOptions.model_fields)}") from None
