"""Property: the timeline on each engine (DuckDB, Spark) equals the independent pandas reference on random
logged tables; both engines therefore give the same rows."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrl.data.schema import METRICS_MAP, STATE_MAP
from batchrl.data.timeline import build_timeline, make_options
from tests.support.timeline_reference import reference_timeline

DS = "2020-05-01"


@st.composite
def logged_tables(draw) -> pa.Table:
    """Episodes of 1..7 rows, sequence numbers with random gaps, rows in random order, some ds outside."""
    rows = []
    for episode in range(draw(st.integers(1, 6))):
        seq = draw(st.integers(0, 5))
        for step in range(draw(st.integers(1, 7))):
            if step:
                seq += draw(st.integers(1, 4))
            ds = draw(st.sampled_from([DS, DS, DS, "2020-04-30"]))
            rows.append((f"m{episode}", seq, ds, step))
    order = draw(st.permutations(range(len(rows))))
    rows = [rows[i] for i in order]
    n = len(rows)
    return pa.table({
        "mdp_id": [r[0] for r in rows],
        "sequence_number": pa.array([r[1] for r in rows], pa.int64()),
        "state_features": pa.array([[(0, float(r[1])), (7, float(r[3]))] for r in rows], STATE_MAP),
        "action": [str(r[1] % 3) for r in rows],
        "reward": [float(r[1]) / 4 for r in rows],
        "possible_actions": [["0", "1", "2"][: 1 + r[1] % 3] for r in rows],
        "action_probability": [0.25 + (r[3] % 3) / 4 for r in rows],
        "ds": [r[2] for r in rows],
        "metrics": pa.array([[("m", float(r[3]))] for r in rows], METRICS_MAP),
        "tags": pa.array([[f"t{r[3]}"] * (r[1] % 2) for r in rows], pa.list_(pa.string())),
        "end_reason": pa.array([None] * n, pa.string()),
    })


configs = st.fixed_dictionaries(
    {"addTerminalStateRow": st.booleans(), "steps": st.sampled_from([None, None, 1, 2, 3])},
    optional={
        "timeWindowLimit": st.integers(0, 12),
        "outlierEpisodeLengthPercentile": st.sampled_from([0.5, 0.75, 0.9]),
        "percentileFunction": st.sampled_from(["percentile", "percentile_approx"]),
        "extraFeatureColumns": st.just(["tags"]),
        "includePossibleActions": st.booleans(),
    })


def _sorted_rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: (r["mdp_id"], r["sequence_number"]))


#: Examples per engine: DuckDB runs a case in milliseconds, Spark in about a second.
EXAMPLES = {"duckdb": 30, "spark": 10}


def test_engine_equals_pandas_reference(engine):
    @settings(max_examples=EXAMPLES[engine.name], deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(table=logged_tables(), config=configs)
    def check(table, config):
        config = {"startDs": DS, "endDs": DS, **{k: v for k, v in config.items() if v is not None}}
        expected = reference_timeline(table, config)
        actual = engine.to_arrow(build_timeline(engine.from_arrow(table), make_options(config, "property test")))
        assert actual.column_names == expected.column_names
        assert _sorted_rows(actual) == _sorted_rows(expected)

    check()


def test_no_row_in_the_date_range_with_an_outlier_percentile(engine):
    """The case the property test found: every row outside [startDs, endDs] and an outlier percentile
    set. No episode is left, so nothing is an outlier and the timeline is empty on both engines."""
    from tests.support.timeline import ex1_table

    table = ex1_table()
    for function in ("percentile", "percentile_approx"):
        config = {"startDs": "2030-01-01", "endDs": "2030-01-01", "addTerminalStateRow": False,
                  "outlierEpisodeLengthPercentile": 0.5, "percentileFunction": function}
        expected = reference_timeline(table, config)
        actual = engine.to_arrow(build_timeline(engine.from_arrow(table), make_options(config, "property test")))
        assert expected.num_rows == 0 and actual.num_rows == 0
        assert actual.column_names == expected.column_names
