"""The timeline operator (spec section 2): worked examples, options, filters, multi-step, placeholders.

Every test taking ``engine`` runs on DuckDB and on Spark (tests/conftest.py)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from batchrl import storage
from batchrl.data.schema import METRICS_MAP, STATE_MAP
from batchrl.data.timeline import (
    TimelineOptions,
    build_timeline,
    load_timeline_config,
    make_options,
    outlier_filter,
    run_validation_sql,
    timeline,
    timeline_schema,
)
from batchrl.errors import BatchRLError
from tests.support.timeline import DS, ex1_table

SINGLE_COLUMNS = ["mdp_id", "state_features", "action", "next_action", "action_probability", "reward", "metrics",
                  "next_state_features", "sequence_number", "sequence_number_ordinal", "time_diff",
                  "time_since_first", "possible_actions", "possible_next_actions", "ds"]


def options(**values) -> TimelineOptions:
    return make_options({"startDs": DS, "endDs": DS, **values}, where="test")


def ex2_table() -> pa.Table:
    """Spec Ex.2 input: Ex.1 with parametric (map) actions."""
    table = ex1_table()
    actions = pa.array([[(1001, 0.3), (1002, 0.5)], []], STATE_MAP)
    possible = pa.array([[[(1001, 0.3), (1002, 0.5)], [(1001, 0.6), (1002, 0.2)]], []], pa.list_(STATE_MAP))
    table = table.set_column(table.schema.get_field_index("action"), "action", actions)
    return table.set_column(table.schema.get_field_index("possible_actions"), "possible_actions", possible)


def episodes_table(lengths: list[int], seq_step: int = 1) -> pa.Table:
    """Episodes e0, e1, ... of the given lengths; reward = step index, state {0: step}."""
    rows = [(f"e{i}", j * seq_step) for i, n in enumerate(lengths) for j in range(n)]
    return pa.table({
        "mdp_id": [r[0] for r in rows],
        "sequence_number": pa.array([r[1] for r in rows], pa.int64()),
        "state_features": pa.array([[(0, float(r[1]))] for r in rows], STATE_MAP),
        "action": ["0" for _ in rows],
        "reward": [float(r[1]) for r in rows],
        "possible_actions": [["0", "1"] for _ in rows],
        "action_probability": [0.5 for _ in rows],
        "ds": [DS for _ in rows],
    })


def build(engine, table: pa.Table, **values) -> list[dict]:
    df = build_timeline(engine.from_arrow(table), options(**values))
    return sorted(engine.to_arrow(df).to_pylist(), key=lambda r: (r["mdp_id"], r["sequence_number"]))


def types_of(df) -> dict[str, str]:
    """Column name -> Spark type name (spelled the same on both engines)."""
    return {f.name: f.dataType.simpleString().replace(" ", "") for f in df.schema.fields}


# ---------------------------------------------------------------- worked examples


def test_ex1_discrete_without_terminal_row(engine):
    df = build_timeline(engine.from_arrow(ex1_table()), options(addTerminalStateRow=False))
    assert df.columns == SINGLE_COLUMNS
    assert engine.to_arrow(df).to_pylist() == [{
        "mdp_id": "mdp1", "state_features": [(1, 1.0)], "action": "action1", "next_action": "action2",
        "action_probability": 0.8, "reward": 1.0, "metrics": [("Widgets", 10.0)],
        "next_state_features": [(2, 1.0)], "sequence_number": 1, "sequence_number_ordinal": 1, "time_diff": 10,
        "time_since_first": 0, "possible_actions": ["action1", "action2"], "possible_next_actions": [],
        "ds": DS}]


def test_ex2_parametric_actions(engine):
    df = build_timeline(engine.from_arrow(ex2_table()), options(addTerminalStateRow=False))
    assert types_of(df)["action"] == types_of(df)["next_action"] == "map<bigint,double>"
    (row,) = engine.to_arrow(df).to_pylist()
    assert row["action"] == [(1001, 0.3), (1002, 0.5)]
    assert row["next_action"] == []
    assert row["possible_actions"] == [[(1001, 0.3), (1002, 0.5)], [(1001, 0.6), (1002, 0.2)]]
    assert row["possible_next_actions"] == []
    assert row["time_diff"] == 10


def test_ex3_terminal_state_row(engine):
    first, second = build(engine, ex1_table(), addTerminalStateRow=True)
    assert first["next_action"] == "action2" and first["time_diff"] == 10
    assert second["next_state_features"] == [] and second["next_action"] == ""
    assert second["possible_next_actions"] == []
    assert (second["time_diff"], second["time_since_first"], second["sequence_number_ordinal"]) == (0, 10, 2)
    assert second["reward"] == 0.2 and second["action"] == "action2"


EX4 = [
    ("select if((select count(*) from {config.inputTableName} where reward>1.0) == 0, TRUE, FALSE)", True),
    ("select if((select count(*) from {config.inputTableName} where reward<=1.0) == 0, TRUE, FALSE)", False),
    ("select if((select count(*) from {config.outputTableName}) == 1, TRUE, FALSE)", True),
    ("select if((select count(*) from {config.outputTableName}) == 0, TRUE, FALSE)", False),
]


@pytest.mark.parametrize(("sql", "passes"), EX4)
def test_ex4_validation_sql(engine, sql, passes):
    source = engine.from_arrow(ex2_table())
    output = build_timeline(source, options(addTerminalStateRow=False))
    if passes:
        run_validation_sql(engine, sql, source, output)
    else:
        with pytest.raises(BatchRLError, match="validationSql failed"):
            run_validation_sql(engine, sql, source, output)


def test_failing_validation_sql_writes_nothing(tmp_path, engine):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    storage.write_table(ex2_table(), src)
    opts = options(addTerminalStateRow=False, validationSql=EX4[3][0])
    with pytest.raises(BatchRLError, match="validationSql failed"):
        timeline(src, out, opts, "local[2]", engine=engine.name)
    assert not storage.exists(out)
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # no staging directory left behind


def test_validation_sql_that_cannot_run(engine):
    source = engine.from_arrow(ex2_table())
    with pytest.raises(BatchRLError, match="validationSql could not run"):
        run_validation_sql(engine, "select no_such_column from {config.inputTableName}", source, source)


# ---------------------------------------------------------------- filters


def test_outlier_filter_applied(engine):
    # lengths 1..20, p = 0.9: exact percentile 18.1, two outliers (19, 20) = 10% of episodes: applied
    table = episodes_table(list(range(1, 21)))
    kept = {r["mdp_id"] for r in build(engine, table, addTerminalStateRow=True,
                                       outlierEpisodeLengthPercentile=0.9, percentileFunction="percentile")}
    assert kept == {f"e{i}" for i in range(18)}


def test_outlier_filter_disabled_by_ten_percent_rule(engine):
    # all episodes have length 5: nobody is longer than the percentile (0% vs the expected 10%)
    table = episodes_table([5] * 10)
    result = outlier_filter(engine.from_arrow(table), options(addTerminalStateRow=True,
                                                                 outlierEpisodeLengthPercentile=0.9))
    assert not result.applied and result.outlier_episodes == 0
    rows = build(engine, table, addTerminalStateRow=True, outlierEpisodeLengthPercentile=0.9)
    assert len(rows) == 50


def test_percentile_versus_percentile_approx(engine):
    df = engine.from_arrow(episodes_table(list(range(1, 21))))
    exact = outlier_filter(df, options(addTerminalStateRow=True, outlierEpisodeLengthPercentile=0.9,
                                       percentileFunction="percentile"))
    approx = outlier_filter(df, options(addTerminalStateRow=True, outlierEpisodeLengthPercentile=0.9))
    assert exact.threshold == pytest.approx(18.1)  # linear interpolation
    assert approx.threshold == 18.0  # smallest length with at least 90% of lengths at or below it
    assert exact.applied and approx.applied and exact.outlier_episodes == approx.outlier_episodes == 2


def test_time_window(engine):
    table = episodes_table([6], seq_step=2)  # seq 0, 2, ..., 10
    rows = build(engine, table, addTerminalStateRow=True, timeWindowLimit=5)
    assert [r["sequence_number"] for r in rows] == [0, 2, 4]
    assert rows[-1]["next_state_features"] == [(0, 6.0)]  # the next state beyond the window is kept
    assert [r["time_since_first"] for r in rows] == [0, 2, 4]


def test_ds_range_and_output_ds(engine):
    table = episodes_table([3, 3])
    ds = pa.array(["2018-01-01"] * 3 + ["2018-01-03"] * 3)
    table = table.set_column(table.schema.get_field_index("ds"), "ds", ds)
    opts = make_options({"startDs": "2018-01-02", "endDs": "2018-01-05", "addTerminalStateRow": False}, "t")
    rows = engine.to_arrow(build_timeline(engine.from_arrow(table), opts)).to_pylist()
    assert {r["mdp_id"] for r in rows} == {"e1"}
    assert {r["ds"] for r in rows} == {"2018-01-05"}


# ---------------------------------------------------------------- columns and types


PLACEHOLDER_TYPES = {
    "s": (pa.string(), "x", ""),
    "m": (pa.map_(pa.string(), pa.float64()), [("a", 1.0)], []),
    "l": (pa.list_(pa.int64()), [1, 2], []),
    "lm": (pa.list_(pa.map_(pa.int64(), pa.float64())), [[(1, 2.0)]], []),
    "ml": (pa.map_(pa.string(), pa.list_(pa.float64())), [("k", [1.0, 2.0])], []),
    "ll": (pa.list_(pa.list_(pa.string())), [["a"], []], []),
}


def test_extra_feature_columns_and_every_placeholder_type(engine):
    table = episodes_table([2])
    for name, (dtype, value, _) in PLACEHOLDER_TYPES.items():
        table = table.append_column(pa.field(name, dtype), pa.array([value, value], dtype))
    table = table.append_column("score", pa.array([0.5, 1.5]))
    extras = [*PLACEHOLDER_TYPES, "score"]
    df = build_timeline(engine.from_arrow(table), options(addTerminalStateRow=True, extraFeatureColumns=extras))
    assert df.columns[-2 * len(extras) - 1:] == [c for e in extras for c in (e, f"next_{e}")] + ["ds"]
    first, last = sorted(engine.to_arrow(df).to_pylist(), key=lambda r: r["sequence_number"])
    for name, (_, value, empty) in PLACEHOLDER_TYPES.items():
        assert first[name] == first[f"next_{name}"] == value
        assert last[name] == value and last[f"next_{name}"] == empty, name
    assert (first["next_score"], last["next_score"]) == (1.5, None)  # numbers have no empty value: null


def test_ranking_actions(engine):
    table = episodes_table([2])
    ranking = pa.array([["b", "a"], ["c"]], pa.list_(pa.string()))
    table = table.set_column(table.schema.get_field_index("action"), "action", ranking)
    table = table.set_column(table.schema.get_field_index("possible_actions"), "possible_actions",
                             pa.array([[["b", "a"], ["a"]], [["c"]]], pa.list_(pa.list_(pa.string()))))
    first, last = build(engine, table, addTerminalStateRow=True)
    assert first["next_action"] == ["c"] and last["next_action"] == []
    assert first["possible_next_actions"] == [["c"]] and last["possible_next_actions"] == []


def test_end_reason_carried_after_ds(engine):
    table = episodes_table([3])
    table = table.append_column("end_reason", pa.array([None, None, "truncated"], pa.string()))
    df = build_timeline(engine.from_arrow(table), options(addTerminalStateRow=True, rewardColumns=["reward"]))
    assert df.columns[-2:] == ["ds", "end_reason"]
    rows = sorted(engine.to_arrow(df).to_pylist(), key=lambda r: r["sequence_number"])
    assert [r["end_reason"] for r in rows] == [None, None, "truncated"]


def test_explicit_output_schema(engine):
    table = ex1_table().append_column("end_reason", pa.array([None, "terminated"], pa.string()))
    for steps in (None, 3):
        opts = options(addTerminalStateRow=True, steps=steps)
        df = engine.from_arrow(table)
        out = build_timeline(df, opts)
        types = types_of(out)
        assert types == {f.name: f.dataType.simpleString().replace(" ", "")
                         for f in timeline_schema(df.schema, opts).fields}
        assert types["sequence_number_ordinal"] == "bigint" and types["time_since_first"] == "bigint"
        if steps is None:
            assert (types["reward"], types["time_diff"]) == ("double", "bigint")
        else:
            assert (types["reward"], types["time_diff"]) == ("array<double>", "array<bigint>")
            assert types["next_state_features"] == "array<map<bigint,double>>"
            assert types["possible_next_actions"] == "array<array<string>>"


# ---------------------------------------------------------------- multi-step


def test_multi_step_k3(engine):
    seqs = [0, 1, 3, 6, 10]
    table = episodes_table([5])
    table = table.set_column(1, "sequence_number", pa.array(seqs, pa.int64()))
    table = table.set_column(table.schema.get_field_index("reward"), "reward", pa.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    table = table.append_column("metrics", pa.array([[("r", float(i))] for i in range(5)], METRICS_MAP))
    rows = build(engine, table, addTerminalStateRow=True, steps=3)
    assert [r["reward"] for r in rows] == [[1, 2, 3], [2, 3, 4], [3, 4], [4], [5]]
    assert [r["time_diff"] for r in rows] == [[1, 3, 6], [2, 5, 9], [3, 7], [4], [0]]
    assert [len(r["next_state_features"]) for r in rows] == [3, 3, 2, 1, 0]
    assert rows[0]["next_state_features"] == [[(0, 1.0)], [(0, 2.0)], [(0, 3.0)]]
    assert rows[2]["metrics"] == [[("r", 2.0)], [("r", 3.0)]]
    assert rows[0]["next_action"] == ["0", "0", "0"] and rows[4]["next_action"] == []
    assert rows[3]["possible_next_actions"] == [["0", "1"]] and rows[4]["possible_next_actions"] == []
    assert [r["sequence_number_ordinal"] for r in rows] == [1, 2, 3, 4, 5]
    without = build(engine, table, addTerminalStateRow=False, steps=3)
    assert [r["sequence_number"] for r in without] == [0, 1, 3, 6]


# ---------------------------------------------------------------- options and config


def test_options_accept_reagent_keys_and_reject_unknown(tmp_path):
    path = tmp_path / "timeline.json"
    path.write_text(json.dumps({"timeline": {"startDs": DS, "endDs": DS, "addTerminalStateRow": True,
                                             "outlierEpisodeLengthPercentile": 0.95,
                                             "percentileFunction": "percentile", "timeWindowLimit": 7,
                                             "includePossibleActions": False, "rewardColumns": ["reward"],
                                             "extraFeatureColumns": [], "validationSql": "select TRUE",
                                             "inputTableName": "in", "outputTableName": "out", "steps": 2}}))
    opts = make_options(load_timeline_config(str(path)), str(path))
    assert (opts.outlier_episode_length_percentile, opts.time_window_limit, opts.steps) == (0.95, 7, 2)
    path.write_text(json.dumps({"startDs": DS, "endDs": DS, "addTerminalStateRow": True, "outlierPercentile": 1}))
    with pytest.raises(BatchRLError, match="unknown key.*'outlierPercentile'"):
        load_timeline_config(str(path))
    with pytest.raises(BatchRLError, match="unknown key.*'windowLimit'"):
        make_options({"startDs": DS, "endDs": DS, "addTerminalStateRow": True, "windowLimit": 3}, "t")
    with pytest.raises(BatchRLError, match="addTerminalStateRow"):
        make_options({"startDs": DS, "endDs": DS}, "t")
    with pytest.raises(BatchRLError, match="percentileFunction"):
        options(addTerminalStateRow=True, percentileFunction="median")


def test_missing_extra_column_is_an_error(engine):
    with pytest.raises(BatchRLError, match="not in the input.*'nope'"):
        build_timeline(engine.from_arrow(ex1_table()), options(addTerminalStateRow=True,
                                                                   extraFeatureColumns=["nope"]))
