"""Validation of logged tables: each bad-input class names column, count and an example; exit 2. Every test
runs on both engines (DuckDB, Spark), and both engines word every failure the same."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from batchrl import storage
from batchrl.data.gym_logging import GenerateOptions, generate


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("v") / "good")
    generate(uri, GenerateOptions(transitions=300, seed=0))
    return storage.read_table(uri)


def _write(tmp_path, table, name="bad"):
    uri = str(tmp_path / name)
    storage.write_table(table, uri)
    return uri


def _replace(table, name, values, type_=None):
    idx = table.schema.get_field_index(name)
    return table.set_column(idx, pa.field(name, type_ or table.schema.field(name).type),
                            pa.array(values, type=type_ or table.schema.field(name).type))


def test_good_table_passes(tmp_path, good, cli, engine):
    code, out, err = cli("validate", "--input", _write(tmp_path, good, "good"), "--engine", engine.name)
    assert code == 0, err
    assert json.loads(out)["rows"] == 300


def _bad_cases(good) -> dict[str, pa.Table]:
    """Expected message -> a corrupted copy of the good table."""
    probs = good.column("action_probability").to_pylist()
    rewards = good.column("reward").to_pylist()
    actions = good.column("action").to_pylist()
    seqs = good.column("sequence_number").to_pylist()
    return {
        "missing column 'reward'": good.drop_columns(["reward"]),
        "column 'sequence_number' has type string": _replace(good, "sequence_number", [str(s) for s in seqs],
                                                             pa.string()),
        "action_probability outside (0, 1]: column 'action_probability', 2 rows":
            _replace(good, "action_probability", [1.5, 0.0] + probs[2:]),
        "non-finite reward: column 'reward', 1 rows": _replace(good, "reward", [float("nan")] + rewards[1:]),
        "null reward: column 'reward', 1 rows": _replace(good, "reward", rewards[:-1] + [None]),
        "action not in possible_actions: column 'action', 3 rows": _replace(good, "action",
                                                                           ["7"] * 3 + actions[3:]),
        "duplicate (mdp_id, sequence_number)": _replace(good, "sequence_number", [0, 0] + seqs[2:]),
        "logged table is empty": good.slice(0, 0),
        "null or non-finite state feature value": good.set_column(
            good.schema.get_field_index("state_features"), "state_features",
            pa.array([[(0, float("inf"))]] + good.column("state_features").to_pylist()[1:],
                     type=good.schema.field("state_features").type)),
    }


BAD_INPUTS = [
    "missing column 'reward'", "column 'sequence_number' has type string",
    "action_probability outside (0, 1]: column 'action_probability', 2 rows",
    "non-finite reward: column 'reward', 1 rows", "null reward: column 'reward', 1 rows",
    "action not in possible_actions: column 'action', 3 rows", "duplicate (mdp_id, sequence_number)",
    "logged table is empty", "null or non-finite state feature value",
]


@pytest.mark.parametrize("expected", BAD_INPUTS)
def test_bad_input_named_with_count_and_example(tmp_path, good, cli, engine, expected):
    uri = _write(tmp_path, _bad_cases(good)[expected])
    code, out, err = cli("validate", "--input", uri, "--engine", engine.name)
    assert code == 2
    assert expected in err
    assert "Traceback" not in err
    if "rows" in expected:
        assert "e.g. mdp_id=" in err


def test_jsonl_input(tmp_path, good, cli, engine):
    path = tmp_path / "logged.jsonl"
    with open(path, "w") as fh:
        for row in good.slice(0, 50).to_pylist():
            row["state_features"] = {str(k): v for k, v in row["state_features"]}
            row["metrics"] = dict(row["metrics"])
            fh.write(json.dumps(row) + "\n")
    code, out, err = cli("validate", "--input", path, "--engine", engine.name)
    assert code == 0, err
    assert json.loads(out)["rows"] == 50


def test_engines_word_every_failure_the_same(good):
    """All the bad cases in one table, validated on DuckDB and on Spark: the same message, word for word."""
    from batchrl.data.validation import validate_logged
    from batchrl.engine import get_engine
    from batchrl.errors import BatchRLError

    probs, rewards = good.column("action_probability").to_pylist(), good.column("reward").to_pylist()
    seqs, actions = good.column("sequence_number").to_pylist(), good.column("action").to_pylist()
    bad = _replace(good, "action_probability", [1.5, 0.0] + probs[2:])
    bad = _replace(bad, "reward", [float("nan")] + rewards[1:-1] + [None])
    bad = _replace(bad, "sequence_number", [0, 0] + seqs[2:])
    bad = _replace(bad, "action", actions[:5] + ["7"] * 3 + actions[8:])
    messages = {}
    for name in ("duckdb", "spark"):
        runner = get_engine(name, "local[2]")
        with pytest.raises(BatchRLError) as caught:
            validate_logged(runner.from_arrow(bad))
        messages[name] = caught.value.message
    assert messages["duckdb"] == messages["spark"]
    assert "fails 5 check(s)" in messages["duckdb"]
