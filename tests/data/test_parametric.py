"""Parametric actions (items chosen among candidate sets, spec section 1 Ex.2): generate in the recommendation
simulator with true propensities, the timeline of its rows, prepare's padded candidate sets (both engines),
the loader's candidate tensors, and the bad inputs of issue 19."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from batchrl import storage
from batchrl.data.gym_logging import GenerateOptions, generate
from batchrl.data.loader import read_eval_batch
from batchrl.data.prepare import PrepareOptions, prepare
from batchrl.data.schema import METRICS_MAP, PARAMETRIC_TRAINING_COLUMNS, STATE_MAP, logged_schema
from batchrl.data.timeline import make_options, timeline
from batchrl.errors import BatchRLError
from batchrl.preprocessing.normalization import NormalizationParameters, write_normalization
from batchrl.simulators.recommendation import heuristic_scores

MASTER = "local[2]"
ENV = "batchrl/Recommendation-v0"


def _dense(m, n):
    out = np.zeros(n)
    for k, v in m:
        out[k] = v
    return out


@pytest.mark.parametrize("policy", ["heuristic-softmax", "random"])
def test_generate_logs_candidates_with_true_propensities(tmp_path, policy):
    uri = str(tmp_path / "logged")
    summary = generate(uri, GenerateOptions(env=ENV, transitions=300, policy=policy, temperature=0.5, seed=7))
    table = storage.read_table(uri)
    assert table.schema.equals(logged_schema(parametric=True, possible_actions=True), check_metadata=False)
    assert summary.action_kind == "parametric" and table.num_rows == 300
    for row in table.to_pylist()[:120]:
        user = _dense(row["state_features"], 5)
        items = np.array([_dense(m, 6) for m in row["possible_actions"]])
        chosen = _dense(row["action"], 6)
        index = [i for i, item in enumerate(items) if np.array_equal(item, chosen)]
        assert len(index) == 1  # the chosen item is one of the candidates
        if policy == "random":
            expected = 1.0 / len(items)
        else:
            z = heuristic_scores(user, items) / 0.5
            expected = np.exp(z - z.max())[index[0]] / np.exp(z - z.max()).sum()
        assert row["action_probability"] == pytest.approx(expected, rel=1e-5)  # float32 observations
    again = str(tmp_path / "again")
    generate(again, GenerateOptions(env=ENV, transitions=300, policy=policy, temperature=0.5, seed=7))
    assert storage.read_table(again).equals(table)


def test_candidate_policies_need_a_candidate_set_env(tmp_path):
    with pytest.raises(BatchRLError, match="needs a candidate-set environment"):
        generate(str(tmp_path / "x"), GenerateOptions(env="CartPole-v1", transitions=10, policy="myopic"))


def _timeline_schema() -> pa.Schema:
    items = pa.list_(STATE_MAP)
    return pa.schema([
        ("mdp_id", pa.string()), ("state_features", STATE_MAP), ("action", STATE_MAP), ("next_action", STATE_MAP),
        ("action_probability", pa.float64()), ("reward", pa.float64()), ("metrics", METRICS_MAP),
        ("next_state_features", STATE_MAP), ("sequence_number", pa.int64()), ("sequence_number_ordinal", pa.int64()),
        ("time_diff", pa.int64()), ("time_since_first", pa.int64()), ("possible_actions", items),
        ("possible_next_actions", items), ("ds", pa.string()), ("end_reason", pa.string())])


def _row(seq, action, possible, next_action, possible_next, end=None) -> dict:
    return {"mdp_id": "a", "state_features": [(0, float(seq))], "action": action, "next_action": next_action,
            "action_probability": 0.5, "reward": 1.0, "metrics": [], "next_state_features": [(0, seq + 1.0)]
            if next_action else [], "sequence_number": seq, "sequence_number_ordinal": seq + 1,
            "time_diff": 1 if next_action else 0, "time_since_first": seq, "possible_actions": possible,
            "possible_next_actions": possible_next, "ds": "2019-01-01", "end_reason": end}


A, B, C = [(1001, 0.3), (1002, 0.5)], [(1001, 0.6), (1002, 0.2)], [(1002, 1.0)]


@pytest.fixture
def norms(tmp_path) -> tuple[str, str]:
    state, items = str(tmp_path / "norm.json"), str(tmp_path / "items.json")
    write_normalization(state, {0: NormalizationParameters(feature_type="CONTINUOUS", mean=0.0, stddev=1.0)})
    write_normalization(items, {i: NormalizationParameters(feature_type="CONTINUOUS", mean=0.0, stddev=1.0)
                                for i in (1001, 1002)})
    return state, items


def _prepare(tmp_path, rows, norms, engine_name="duckdb") -> dict:
    storage.write_table(pa.Table.from_pylist(rows, schema=_timeline_schema()), str(tmp_path / "tl"))
    return prepare(str(tmp_path / "tl"), norms[0], str(tmp_path / "train"), str(tmp_path / "eval"),
                   PrepareOptions(table_sample=100, eval_table_sample=0), MASTER, norms[1], engine=engine_name)


def test_prepare_pads_candidate_sets_by_hand(engine, tmp_path, norms):
    rows = [_row(0, B, [A, B], C, [C]), _row(1, C, [C], [], [], end="terminated")]
    summary = _prepare(tmp_path, rows, norms, engine.name)
    assert summary.action_kind == "parametric" and summary.action_names == ["1001", "1002"]
    assert storage.read_metadata(str(tmp_path / "train"))["num_candidates"] == 2
    table = storage.read_table(str(tmp_path / "train"))
    assert table.column_names == list(PARAMETRIC_TRAINING_COLUMNS)
    first, last = sorted(table.to_pylist(), key=lambda r: r["sequence_number"])
    assert first["action"] == pytest.approx([0.6, 0.2]) and first["action_index"] == 1
    assert first["possible_actions_features"] == pytest.approx([0.3, 0.5, 0.6, 0.2])
    assert first["possible_actions_mask"] == [True, True]
    assert first["possible_next_actions_features"] == pytest.approx([0.0, 1.0, 0.0, 0.0])
    assert first["possible_next_actions_presence"] == [False, True, False, False]
    assert first["possible_next_actions_mask"] == [True, False] and first["not_terminal"]
    assert last["action_index"] == 0 and not last["not_terminal"]
    assert last["possible_next_actions_mask"] == [False, False]

    batch = read_eval_batch(str(tmp_path / "train"))
    assert batch.candidates.shape == (2, 2, 2) and batch.action_index.tolist() == [1, 0]
    assert torch.equal(batch.candidates[torch.arange(2), batch.action_index], batch.action)


def test_bad_parametric_inputs_are_clear_errors_and_write_nothing(tmp_path, norms):
    unknown = [_row(0, A, [A, [(1001, 0.1), (1003, 2.0)]], [], [], end="terminated")]
    with pytest.raises(BatchRLError, match=r"feature ids \[1003\] that the action normalization lacks"):
        _prepare(tmp_path, unknown, norms)
    absent = [_row(0, C, [A, B], [], [], end="terminated")]
    with pytest.raises(BatchRLError, match="1 rows have a chosen action that is not among their candidates"):
        _prepare(tmp_path, absent, norms)
    empty = [_row(0, A, [], [], [], end="terminated")]
    with pytest.raises(BatchRLError, match="1 of them have an empty candidate set"):
        _prepare(tmp_path, empty, norms)
    next_empty = [_row(0, A, [A], B, []), _row(1, B, [B], [], [], end="terminated")]
    with pytest.raises(BatchRLError, match="1 non-terminal rows have an empty next candidate set"):
        _prepare(tmp_path, next_empty, norms)
    with pytest.raises(BatchRLError, match="no action normalization was given"):
        prepare(str(tmp_path / "tl"), norms[0], str(tmp_path / "train"), str(tmp_path / "eval"),
                PrepareOptions(), MASTER, None, engine="duckdb")
    assert not (tmp_path / "train").exists() and not (tmp_path / "eval").exists()


def test_generated_data_through_timeline_and_prepare(tmp_path):
    """Ex.2's shape from the simulator: the timeline keeps map actions and lists of maps; terminal rows get {}
    and []; prepare pads to the largest candidate set."""
    logged, tl = str(tmp_path / "logged"), str(tmp_path / "tl")
    generate(logged, GenerateOptions(env=ENV, episodes=20, policy="heuristic-softmax", seed=1))
    timeline(logged, tl, make_options({"startDs": "2019-01-01", "endDs": "2019-01-01", "addTerminalStateRow": True},
                                      where="test"), engine="duckdb")
    rows = storage.read_table(tl).to_pylist()
    terminal = [r for r in rows if r["end_reason"] == "terminated"]
    assert terminal and all(r["next_action"] == [] and r["possible_next_actions"] == [] for r in terminal)
    state, items = str(tmp_path / "s.json"), str(tmp_path / "i.json")
    write_normalization(state, {i: NormalizationParameters(feature_type="CONTINUOUS", mean=0.0, stddev=1.0)
                                for i in range(5)})
    write_normalization(items, {i: NormalizationParameters(feature_type="CONTINUOUS", mean=0.0, stddev=1.0)
                                for i in range(6)})
    prepare(tl, state, str(tmp_path / "train"), str(tmp_path / "eval"),
            PrepareOptions(table_sample=100, eval_table_sample=0), MASTER, items, engine="duckdb")
    batch = read_eval_batch(str(tmp_path / "train"))
    assert batch.candidates.shape[1] == max(len(r["possible_actions"]) for r in rows)
    assert torch.equal(batch.candidates[torch.arange(len(batch)), batch.action_index], batch.action)
    assert torch.equal(batch.possible_actions_mask.sum(1),
                       torch.tensor([len(r["possible_actions"]) for r in sorted(
                           rows, key=lambda r: (r["mdp_id"], r["sequence_number"]))]))
