"""The prepare stage (spec section 3): hand-computed rows, multi-step, custom reward, split, errors; each test
taking ``engine`` runs on DuckDB and on Spark."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pytest

from batchrl import storage
from batchrl.data.prepare import PrepareOptions, episode_split, prepare
from batchrl.data.schema import METRICS_MAP, STATE_MAP, TRAINING_COLUMNS
from batchrl.errors import BatchRLError
from batchrl.preprocessing.normalization import NormalizationParameters, write_normalization

MASTER = "local[2]"


def _single_schema() -> pa.Schema:
    return pa.schema([
        ("mdp_id", pa.string()), ("state_features", STATE_MAP), ("action", pa.string()),
        ("next_action", pa.string()), ("action_probability", pa.float64()), ("reward", pa.float64()),
        ("metrics", METRICS_MAP), ("next_state_features", STATE_MAP), ("sequence_number", pa.int64()),
        ("sequence_number_ordinal", pa.int64()), ("time_diff", pa.int64()), ("time_since_first", pa.int64()),
        ("possible_actions", pa.list_(pa.string())), ("possible_next_actions", pa.list_(pa.string())),
        ("ds", pa.string()), ("end_reason", pa.string()),
    ])


def _multi_schema() -> pa.Schema:
    fields = []
    for f in _single_schema():
        if f.name in ("next_action", "reward", "metrics", "next_state_features", "time_diff",
                      "possible_next_actions"):
            f = pa.field(f.name, pa.list_(f.type))
        fields.append(f)
    return pa.schema(fields)


def _row(mdp, seq, ordinal, state, action, next_action, reward, next_state, time_diff, prob=0.5,
         metrics=None, possible=("0", "1"), possible_next=("0", "1"), end=None) -> dict:
    return {"mdp_id": mdp, "state_features": list(state.items()), "action": action, "next_action": next_action,
            "action_probability": prob, "reward": reward, "metrics": metrics if metrics is not None else [],
            "next_state_features": next_state, "sequence_number": seq, "sequence_number_ordinal": ordinal,
            "time_diff": time_diff, "time_since_first": seq, "possible_actions": list(possible),
            "possible_next_actions": possible_next, "ds": "2019-01-01", "end_reason": end}


def _write(path, rows: list[dict], schema: pa.Schema) -> str:
    storage.write_table(pa.Table.from_pylist(rows, schema=schema), str(path))
    return str(path)


@pytest.fixture(scope="module")
def norm(tmp_path_factory) -> str:
    """Feature ids 0 and 2 (feature 1 of the data is not normalized, so it is not in the vectors)."""
    uri = str(tmp_path_factory.mktemp("prep") / "norm.json")
    write_normalization(uri, {0: NormalizationParameters(feature_type="CONTINUOUS", mean=0.0, stddev=1.0),
                              2: NormalizationParameters(feature_type="BINARY")})
    return uri


def _rows_by_key(uri: str) -> dict[tuple[str, int], dict]:
    return {(r["mdp_id"], r["sequence_number"]): r for r in storage.read_table(uri).to_pylist()}


def test_single_step_rows_by_hand(engine, tmp_path, norm, cli):
    rows = [
        _row("a", 0, 1, {0: 1.5, 1: 9.0, 2: 1.0}, "1", "0", 1.0, [(0, 2.5)], 1,
             metrics=[("reward", 1.0), ("cost", 2.0)], possible_next=["0"]),
        _row("a", 1, 2, {0: 2.5}, "0", "7", 2.0, [(0, 3.5), (2, 0.0)], 3, prob=None, metrics=[("reward", 2.0)]),
        _row("a", 4, 3, {0: 3.5, 2: 0.0}, "1", "", 3.0, [], 0, prob=0.25, possible_next=[], end="terminated"),
        _row("b", 0, 1, {0: -1.0}, "0", "1", 4.0, [(0, -2.0)], 1),
        _row("b", 1, 2, {0: -2.0}, "1", "", 5.0, [], 0, possible_next=[], end="truncated"),
        _row("c", 0, 1, {0: 7.0}, "2", "", 6.0, [], 0, possible_next=[]),
    ]
    timeline = _write(tmp_path / "tl", rows, _single_schema())
    train, evaluation = tmp_path / "train", tmp_path / "eval"
    code, out, err = cli("prepare", "--input", timeline, "--normalization", norm, "--output-train", train,
                         "--output-eval", evaluation, "--actions", "0,1", "--table-sample", "100",
                         "--eval-table-sample", "0", "--spark-master", MASTER, "--engine", engine.name)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["dropped_truncated"] == 1 and summary["unknown_actions"] == 1
    assert summary["null_action_probability"] == 1
    got = _rows_by_key(str(train))
    assert set(got) == {("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1)}  # truncated b/2 is dropped
    a1, a2, a3, b1, c1 = (got[k] for k in [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1)])
    assert a1 == {
        "reward": 1.0, "state_features": [1.5, 1.0], "state_features_presence": [True, True],
        "next_state_features": [2.5, 0.0], "next_state_features_presence": [True, False],
        "action": 1, "next_action": 0, "possible_actions_mask": [True, True],
        "possible_next_actions_mask": [True, False], "not_terminal": True, "action_probability": 0.5,
        "mdp_id": "a", "sequence_number": 1, "step": 1, "time_diff": 1,
        "metrics": [2.0, 1.0], "metrics_presence": [True, True]}  # metric names sorted: cost, reward
    # an unknown next action: index len(actions), terminal
    assert (a2["next_action"], a2["not_terminal"], a2["time_diff"]) == (2, False, 3)
    assert a2["action_probability"] == 1.0 and a2["metrics_presence"] == [False, True]
    assert a2["next_state_features"] == [3.5, 0.0] and a2["next_state_features_presence"] == [True, True]
    # a real terminal row: empty next action, empty next state
    assert (a3["next_action"], a3["not_terminal"], a3["reward"]) == (2, False, 3.0)
    assert a3["next_state_features_presence"] == [False, False] and a3["possible_next_actions_mask"] == [False, False]
    assert b1["not_terminal"] and b1["next_action"] == 1
    # an unknown logged action; no end_reason at all means terminal
    assert (c1["action"], c1["not_terminal"]) == (2, False)
    meta = storage.read_metadata(str(train))
    assert meta["feature_ids"] == [0, 2] and meta["action_names"] == ["0", "1"]
    assert meta["metric_names"] == ["cost", "reward"] and meta["num_rows"] == 5
    assert meta["split"]["train"] == [0.0, 100.0] and meta["multi_steps"] is None
    # the empty eval table is still a committed, typed dataset
    empty = storage.read_table(str(evaluation))
    assert empty.num_rows == 0 and empty.column_names == list(TRAINING_COLUMNS)
    assert storage.read_metadata(str(evaluation))["num_rows"] == 0


def test_multi_step_reward_step_and_next_elements(engine, tmp_path, norm):
    rows = [
        _row("m", 0, 1, {0: 0.0}, "0", ["0", "1", "0"], [1.0, 2.0, 4.0], [[(0, 1.0)], [(0, 2.0)], [(0, 3.0)]],
             [1, 2, 3], metrics=[[("m", 1.0)], [("m", 2.0)], [("m", 3.0)]],
             possible_next=[["0"], ["1"], ["0", "1"]]),
        _row("m", 3, 2, {0: 3.0}, "1", ["1"], [8.0], [[(0, 4.0)]], [2], metrics=[[("m", 4.0)]],
             possible_next=[["1"]]),
        _row("m", 5, 3, {0: 4.0}, "1", [], [5.0], [], [0], metrics=[[("m", 5.0)]], possible_next=[],
             end="terminated"),
        _row("t", 0, 1, {0: 1.0}, "1", [], [5.0], [], [0], metrics=[[("m", 5.0)]], possible_next=[],
             end="truncated"),
    ]
    timeline = _write(tmp_path / "tl", rows, _multi_schema())
    options = PrepareOptions(actions=["0", "1"], table_sample=100, eval_table_sample=0, multi_steps=2, gamma=0.5)
    summary = prepare(timeline, norm, str(tmp_path / "train"), str(tmp_path / "eval"), options, MASTER, engine=engine.name)
    assert summary.dropped_truncated == 1
    got = _rows_by_key(str(tmp_path / "train"))
    first, middle, last = got[("m", 1)], got[("m", 2)], got[("m", 3)]
    # step = min(len(next), K) = 2: reward 1 + 0.5 * 2; next state/action/possible/metrics/time_diff element 2
    assert (first["step"], first["reward"], first["time_diff"]) == (2, 2.0, 2)
    assert first["next_state_features"] == [2.0, 0.0] and first["next_action"] == 1 and first["not_terminal"]
    assert first["possible_next_actions_mask"] == [False, True] and first["metrics"] == [2.0]
    assert (middle["step"], middle["reward"], middle["time_diff"], middle["next_action"]) == (1, 8.0, 2, 1)
    assert (last["step"], last["reward"], last["time_diff"], last["not_terminal"]) == (1, 5.0, 0, False)
    assert last["metrics"] == [5.0] and last["next_state_features_presence"] == [False, False]
    meta = storage.read_metadata(str(tmp_path / "train"))
    assert (meta["gamma"], meta["multi_steps"]) == (0.5, 2)
    # a custom reward expression replaces the discounted sum; null -> 0
    options = PrepareOptions(actions=["0", "1"], table_sample=100, eval_table_sample=0, multi_steps=2, gamma=0.5,
                             custom_reward_expression="CASE WHEN sequence_number > 0 THEN reward[0] * 10 END")
    prepare(timeline, norm, str(tmp_path / "train2"), str(tmp_path / "eval2"), options, MASTER, engine=engine.name)
    got = _rows_by_key(str(tmp_path / "train2"))
    assert [got[("m", i)]["reward"] for i in (1, 2, 3)] == [0.0, 80.0, 50.0]


def test_cartpole_split_is_90_10_by_whole_episodes(engine, tmp_path):
    from batchrl.data.gym_logging import GenerateOptions, generate
    from batchrl.data.timeline import make_options, timeline

    logged, tl = str(tmp_path / "logged"), str(tmp_path / "timeline")
    generate(logged, GenerateOptions(env="CartPole-v0", transitions=30000, seed=42))
    timeline(logged, tl, make_options({"startDs": "2019-01-01", "endDs": "2019-01-01",
                                       "addTerminalStateRow": True}, where="test"), spark_master=MASTER,
             engine=engine.name)
    norm = str(tmp_path / "norm.json")
    write_normalization(norm, {i: NormalizationParameters(feature_type="CONTINUOUS", mean=0.0, stddev=1.0)
                               for i in range(4)})
    train, evaluation = str(tmp_path / "train"), str(tmp_path / "eval")
    summary = prepare(tl, norm, train, evaluation, PrepareOptions(), MASTER, engine=engine.name)
    assert summary.action_names == ["0", "1"]  # inferred, in numeric order
    kept = 30000 - summary.dropped_truncated
    assert summary.dropped_truncated >= 1  # at least the episode cut by the transition budget
    n_train, n_eval = summary.train.num_rows, summary.eval.num_rows
    assert n_train + n_eval == kept
    assert abs(n_train / kept - 0.9) <= 0.02 and abs(n_eval / kept - 0.1) <= 0.02
    train_table, eval_table = storage.read_table(train), storage.read_table(evaluation)
    assert not set(train_table.column("mdp_id").to_pylist()) & set(eval_table.column("mdp_id").to_pylist())
    for name, dtype in TRAINING_COLUMNS.items():
        assert train_table.schema.field(name).type == dtype, name
    assert train_table.column_names == list(TRAINING_COLUMNS)
    # every terminated episode ends in exactly one terminal row
    assert summary.train.terminal_rows + summary.eval.terminal_rows == (
        summary.train.episodes + summary.eval.episodes - summary.dropped_truncated)
    # the split rule in Python names the same episodes (what the offline matrix gives d3rlpy)
    for table, part in ((train_table, "train"), (eval_table, "eval")):
        assert {episode_split(m, PrepareOptions()) for m in table.column("mdp_id").to_pylist()} == {part}
    meta = storage.read_metadata(evaluation)
    assert meta["feature_ids"] == [0, 1, 2, 3] and meta["split"]["eval"] == [90.0, 100.0]
    assert meta["num_rows"] == n_eval and meta["reward_mean"] == 1.0


def test_bad_input_is_a_clear_error_and_writes_nothing(engine, tmp_path, norm, cli):
    multi = _write(tmp_path / "multi", [
        _row("m", 0, 1, {0: 0.0}, "0", ["1"], [1.0], [[(0, 1.0)]], [1], metrics=[[("m", 1.0)]],
             possible_next=[["0"]])], _multi_schema())
    single = _write(tmp_path / "single", [_row("a", 0, 1, {0: 1.0}, "1", "0", 1.0, [(0, 2.0)], 1)],
                    _single_schema())
    train, evaluation = str(tmp_path / "train"), str(tmp_path / "eval")
    options = PrepareOptions(actions=["0", "1"])
    with pytest.raises(BatchRLError, match="the timeline is multi-step"):
        prepare(multi, norm, train, evaluation, options, MASTER, engine=engine.name)
    with pytest.raises(BatchRLError, match="needs a multi-step timeline"):
        prepare(single, norm, train, evaluation, PrepareOptions(multi_steps=2, gamma=0.9), MASTER, engine=engine.name)
    with pytest.raises(BatchRLError, match="could not build the training table"):
        prepare(single, norm, train, evaluation, PrepareOptions(custom_reward_expression="no_such_column + 1"),
                MASTER, engine=engine.name)
    other_norm = str(tmp_path / "other.json")
    write_normalization(other_norm, {50: NormalizationParameters(feature_type="BINARY")})
    with pytest.raises(BatchRLError, match=r"no row has any of the normalization's feature ids \[50\]"):
        prepare(single, other_norm, train, evaluation, options, MASTER, engine=engine.name)
    code, _, err = cli("prepare", "--input", single, "--normalization", norm, "--output-train", train,
                       "--output-eval", evaluation, "--table-sample", "95", "--eval-table-sample", "10", "--engine", engine.name)
    assert code == 2 and "an episode would be in both train and eval" in err
    code, _, err = cli("prepare", "--input", single, "--normalization", tmp_path / "missing.json",
                       "--output-train", train, "--output-eval", evaluation, "--engine", engine.name)
    assert code == 2 and "file not found" in err
    assert not os.path.exists(train) and not os.path.exists(evaluation)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging directories left


def test_options_take_reagent_int_actions_and_reject_overlaps():
    assert PrepareOptions(actions=[0, 1]).actions == ["0", "1"]
    with pytest.raises(ValueError, match="both train and eval"):
        PrepareOptions(table_sample=60, eval_table_sample=50)
    with pytest.raises(ValueError, match="multi_steps needs gamma"):
        PrepareOptions(multi_steps=3)
    with pytest.raises(ValueError, match="distinct"):
        PrepareOptions(actions=["0", "0"])
    with pytest.raises(ValueError, match="Extra inputs"):
        PrepareOptions(colour=1)


def test_continuous_actions_become_vectors(engine, tmp_path, norm):
    """Map actions -> dense vectors over the action normalization's ids; an empty next action is terminal."""
    schema = pa.schema([(f.name, STATE_MAP) if f.name in ("action", "next_action") else f
                        for f in _single_schema() if f.name not in ("possible_actions", "possible_next_actions")])
    rows = [dict(_row("a", 0, 1, {0: 1.0}, [(100, 0.5)], [(100, -1.0), (101, 2.0)], 1.0, [(0, 2.0)], 1)),
            dict(_row("a", 1, 2, {0: 2.0}, [(101, 0.25)], [], 2.0, [], 0, end="terminated"))]
    for row in rows:
        del row["possible_actions"], row["possible_next_actions"]
    timeline = _write(tmp_path / "tl", rows, schema)
    actions = str(tmp_path / "actions.json")
    write_normalization(actions, {i: NormalizationParameters(feature_type="CONTINUOUS_ACTION", min_value=-2.0,
                                                              max_value=2.0) for i in (100, 101)})
    summary = prepare(timeline, norm, str(tmp_path / "train"), str(tmp_path / "eval"),
                      PrepareOptions(table_sample=100, eval_table_sample=0), MASTER, actions, engine=engine.name)
    assert summary.action_kind == "continuous" and summary.action_names == ["100", "101"]
    got = _rows_by_key(str(tmp_path / "train"))
    first, last = got[("a", 1)], got[("a", 2)]
    assert (first["action"], first["action_presence"]) == ([0.5, 0.0], [True, False])
    assert (first["next_action"], first["not_terminal"]) == ([-1.0, 2.0], True)
    assert (last["next_action_presence"], last["not_terminal"]) == ([False, False], False)


def test_episode_split_leaves_the_gap_between_train_and_eval_to_neither():
    options = PrepareOptions(table_sample=50, eval_table_sample=20, split_seed=3)
    parts = [episode_split(f"m{i}", options) for i in range(3000)]
    assert abs(parts.count("train") / 3000 - 0.5) < 0.04 and abs(parts.count("eval") / 3000 - 0.2) < 0.03
    assert abs(parts.count(None) / 3000 - 0.3) < 0.04
    assert [episode_split(f"m{i}", PrepareOptions(table_sample=100, eval_table_sample=0)) for i in range(50)] == \
        ["train"] * 50
