"""`batchrl cpe`: CPE of any policy from a table of numbers; the same numbers as the evaluate stage."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from batchrl.evaluation.cpe_table import inputs_to_table
from batchrl.evaluation.evaluate import EvaluateOptions, evaluate
from tests.support.evaluation import SUMMARY, bandit, write_eval_table, write_model


def _write(table: pa.Table, path) -> str:
    pq.write_table(table, str(path))
    return str(path)


@pytest.fixture(scope="module")
def bandit_table(tmp_path_factory) -> str:
    inputs, _ = bandit(0, 300, on_policy=False, exact_model=False, episode_length=5)
    return _write(inputs_to_table(inputs), tmp_path_factory.mktemp("cpe") / "logged.parquet")


def test_one_step_by_default_with_diagnostics_and_the_sequential_ones_skipped(tmp_path, cli, bandit_table):
    out = tmp_path / "cpe.json"
    code, _, err = cli("cpe", "--input", bandit_table, "--output", out, "--bootstrap", "30", "--seed", "3")
    assert code == 0, err
    document = json.loads(out.read_text())
    assert set(document["estimates"]) == {"DM", "IPS", "SNIPS", "DR", "Switch", "SwitchDR"}
    for name, e in document["estimates"].items():
        assert {"raw", "normalized", "ci_low", "ci_high"} <= set(e), name
        assert e["diagnostics"]["effective_sample_size"] > 0 and isinstance(e["warnings"], list), name
    assert set(document["skipped"]) == {"SDR", "WDR", "MAGIC"}
    assert document["recommended"]["estimator"] is None  # episodes of 5 steps: one-step estimates are not enough
    assert "SDR" in err and "--sequential" in err


def test_sequential_estimators_with_q_estimates(tmp_path, cli, bandit_table):
    out = tmp_path / "cpe.json"
    code, _, err = cli("cpe", "--input", bandit_table, "--output", out, "--sequential", "--gamma", "0.9",
                       "--bootstrap", "20")
    assert code == 0, err
    document = json.loads(out.read_text())
    assert {"SDR", "WDR", "MAGIC"} <= set(document["estimates"]) and document["skipped"] == {}
    assert document["estimates"]["MAGIC"]["diagnostics"]["solver_relative_gap"] <= 1e-8


def test_missing_optional_columns_skip_estimators_with_the_reason(tmp_path, cli, bandit_table):
    table = pq.read_table(bandit_table).drop_columns(["logging_probabilities", "q_estimates"])
    path = _write(table, tmp_path / "t.parquet")
    out = tmp_path / "cpe.json"
    code, _, err = cli("cpe", "--input", path, "--output", out, "--sequential", "--bootstrap", "0")
    assert code == 0, err
    document = json.loads(out.read_text())
    assert "Switch" not in document["estimates"] and "every action" in document["skipped"]["Switch"]
    assert "value model" in document["skipped"]["WDR"]
    no_models = _write(table.drop_columns(["reward_estimates"]), tmp_path / "u.parquet")
    assert cli("cpe", "--input", no_models, "--output", out, "--bootstrap", "0")[0] == 0
    assert set(json.loads(out.read_text())["estimates"]) == {"IPS", "SNIPS"}


def _replace(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, pa.array(values))


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.drop_columns(["action_probability"]), "lacks the column(s) action_probability"),
    (lambda t: _replace(t, "action_probability", [1.5] + [0.5] * (t.num_rows - 1)), "outside (0, 1]"),
    (lambda t: _replace(t, "target_probabilities", [[0.7, 0.7, 0.2]] * t.num_rows), "do not sum to 1"),
    (lambda t: _replace(t, "target_probabilities", [[1.2, -0.2, 0.0]] * t.num_rows), "outside [0, 1]"),
    (lambda t: _replace(t, "reward_estimates", [[0.1, 0.2]] * t.num_rows), "2 values per row"),
    (lambda t: _replace(t, "q_estimates", [[0.1, 0.2, 0.3]] * (t.num_rows - 1) + [[0.1]]), "different lengths"),
    (lambda t: _replace(t, "action", [7] * t.num_rows), "indices outside 0..2"),
    (lambda t: _replace(t, "sequence_number", [0] * t.num_rows), "more than once"),
    (lambda t: _replace(t, "reward", [None] + [1.0] * (t.num_rows - 1)), "null"),
])
def test_bad_tables_are_one_clear_error_exit_2_and_no_output(tmp_path, cli, bandit_table, change, message):
    path = _write(change(pq.read_table(bandit_table)), tmp_path / "bad.parquet")
    out = tmp_path / "cpe.json"
    code, stdout, err = cli("cpe", "--input", path, "--output", out)
    assert code == 2 and message in err and "Traceback" not in err
    assert err.count("batchrl cpe: error") == 1
    assert not out.exists()


def test_bad_options_and_missing_input_exit_2(tmp_path, cli, bandit_table):
    out = tmp_path / "cpe.json"
    assert cli("cpe", "--input", bandit_table, "--output", out, "--gamma", "1.5")[0] == 2
    code, _, err = cli("cpe", "--input", tmp_path / "none.parquet", "--output", out)
    assert code == 2 and "not found" in err and not out.exists()


def _close(a, b) -> bool:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    return abs(a - b) <= 1e-9 * max(1.0, abs(a))


def test_batchrl_cpe_reproduces_the_evaluate_stage_to_1e9(tmp_path, cli):
    """The evaluate stage writes the numbers it estimated from (cpe_inputs.parquet, with the logging-policy
    model's probabilities); `batchrl cpe` on that table gives the stage's estimates to 1e-9."""
    eval_table = write_eval_table(str(tmp_path / "eval"))
    model = write_model(str(tmp_path / "model"), summary=SUMMARY)
    stage = str(tmp_path / "evaluation")
    evaluate(model, eval_table, stage, EvaluateOptions(bootstrap=40, fqe=False, seed=5))
    metrics = json.loads(open(f"{stage}/metrics.json").read())
    out = tmp_path / "cpe.json"
    code, _, err = cli("cpe", "--input", f"{stage}/cpe_inputs.parquet", "--output", out, "--sequential",
                       "--gamma", "0.9", "--bootstrap", "40", "--seed", "5")
    assert code == 0, err
    document = json.loads(out.read_text())
    stage_estimates = metrics["cpe"]["estimates"]
    assert set(document["estimates"]) == set(stage_estimates) - {"FQE"}  # FQE needs states: stage only
    assert "Switch" in document["estimates"]
    for name, e in stage_estimates.items():
        if name == "FQE":
            continue
        for key, value in e.items():
            if key in ("diagnostics", "warnings"):
                continue
            assert _close(value, document["estimates"][name][key]), (name, key)
        for key, value in e["diagnostics"].items():
            if isinstance(value, float):
                assert _close(value, document["estimates"][name]["diagnostics"][key]), (name, key)
    assert document["recommended"]["estimator"] == metrics["cpe"]["recommended"]["estimator"]


def test_inputs_to_table_round_trips(tmp_path):
    from batchrl.evaluation.cpe_table import read_cpe_table

    inputs, _ = bandit(5, 40, on_policy=False, exact_model=False, episode_length=4)
    back = read_cpe_table(_write(inputs_to_table(inputs), tmp_path / "t.parquet"))
    for name in ("reward", "action", "logged_propensity", "target_probs", "reward_hat", "q_hat", "logging_probs"):
        assert torch.equal(getattr(back, name).double(), getattr(inputs, name).double()), name
    assert torch.equal(back.episode, inputs.episode)
