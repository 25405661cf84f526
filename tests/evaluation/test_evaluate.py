"""The evaluate stage: CPE on a prepared eval table, greedy rollouts, reports, the CLI's exit codes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from batchrl import storage
from batchrl.evaluation.evaluate import EvaluateOptions, evaluate, return_statistics
from batchrl.evaluation.report import format_cpe_table
from batchrl.evaluation.rollouts import greedy_rollouts
from batchrl.serving.export import load_policy
from tests.support.evaluation import (
    SUMMARY,
    AngleOnly,
    Constant,
    write_eval_table,
    write_model,
)

FAST = {"bootstrap": 50, "fqe_iterations": 5, "episodes": 6}


@pytest.fixture(scope="module")
def eval_table(tmp_path_factory) -> str:
    return write_eval_table(str(tmp_path_factory.mktemp("eval") / "eval"))


def test_evaluate_writes_metrics_and_reports(tmp_path, eval_table):
    model = write_model(str(tmp_path / "model"), summary=SUMMARY)
    out = str(tmp_path / "evaluation")
    summary = evaluate(model, eval_table, out, EvaluateOptions(env="CartPole-v0", passing_score_bar=150, **FAST))
    assert summary.gym_score == 200.0 and summary.passed is True
    assert summary.gym["episodes"] == 6 and summary.gym["ci_low"] == 200.0
    assert list(summary.cpe) == ["DM", "IPS", "SNIPS", "DR", "Switch", "SwitchDR", "SDR", "WDR", "MAGIC", "FQE"]
    metrics = json.loads(open(f"{out}/metrics.json").read())
    assert metrics["gamma"] == 0.9 and metrics["temperature"] == 0.5
    assert metrics["cpe"]["value_model"] == "q_value_model.torchscript"
    assert metrics["cpe"]["logging_policy"]["mean_logged_reward"] == pytest.approx(1.0)
    assert metrics["cpe"]["logging_policy"]["episodes"] == 12
    # the reward model says 1 everywhere and every logged reward is 1: DM and DR are exactly 1 (normalized)
    assert summary.cpe["DM"]["normalized"] == pytest.approx(1.0)
    assert summary.cpe["DR"]["normalized"] == pytest.approx(1.0)
    assert len(metrics["gym"]["returns"]) == 6
    markdown = open(f"{out}/report.md").read()
    assert "PASSED" in markdown and "| MAGIC | sequential |" in markdown
    page = open(f"{out}/report.html").read()
    assert page.count("src='data:image/png;base64,") == 3  # returns, CPE, training curves
    assert "http://" not in page and "https://" not in page


def test_cli_exits_1_below_the_bar(tmp_path, cli, eval_table):
    model = write_model(str(tmp_path / "model"), summary=SUMMARY)
    out = tmp_path / "evaluation"
    code, stdout, stderr = cli("evaluate", "--model", model, "--eval", eval_table, "--env", "CartPole-v0",
                               "--episodes", "3", "--bootstrap", "20", "--fqe-iterations", "3",
                               "--passing-score-bar", "500", "--output", out)
    assert code == 1
    assert "below the passing score bar 500" in stderr
    assert "estimator" in stderr and "MAGIC" in stderr  # the CPE table
    assert json.loads(stdout)["passed"] is False
    assert (out / "metrics.json").exists() and "FAILED" in (out / "report.md").read_text()


def test_without_cpe_models_fqe_is_the_value_model(tmp_path, eval_table):
    model = write_model(str(tmp_path / "model"), cpe_models=False)
    out = str(tmp_path / "evaluation")
    summary = evaluate(model, eval_table, out, EvaluateOptions(gamma=0.9, temperature=0.0, **FAST))
    assert list(summary.cpe) == ["IPS", "SNIPS", "SDR", "WDR", "MAGIC", "FQE"]
    assert summary.gym is None and summary.passed is None
    notes = " ".join(summary.notes)
    assert "DM, DR, Switch and SwitchDR skipped" in notes and "FQE's Q" in notes
    assert "training_summary.json" in notes
    metrics = json.loads(open(f"{out}/metrics.json").read())
    assert metrics["cpe"]["value_model"] == "FQE" and metrics["cpe"]["target_policy"] == "greedy"


def test_without_models_or_fqe_only_importance_sampling_remains(tmp_path, eval_table):
    model = write_model(str(tmp_path / "model"), cpe_models=False)
    summary = evaluate(model, eval_table, str(tmp_path / "e"), EvaluateOptions(fqe=False, bootstrap=10))
    assert list(summary.cpe) == ["IPS", "SNIPS"]


def test_mismatched_eval_table_is_an_error_and_writes_nothing(tmp_path, cli):
    table = write_eval_table(str(tmp_path / "eval3"), episodes=3, actions=["a", "b"])
    model = write_model(str(tmp_path / "model"))
    out = tmp_path / "evaluation"
    code, _, stderr = cli("evaluate", "--model", model, "--eval", table, "--output", out)
    assert code == 2 and "does not match the model" in stderr
    assert not out.exists()


def test_nothing_to_evaluate_and_missing_model(tmp_path, cli):
    code, _, stderr = cli("evaluate", "--model", tmp_path / "nowhere", "--output", tmp_path / "out")
    assert code == 2 and "nothing to evaluate" in stderr
    code, _, stderr = cli("evaluate", "--model", tmp_path / "nowhere", "--env", "CartPole-v0",
                          "--output", tmp_path / "out")
    assert code == 2 and "model.torchscript" in stderr


def test_options_accept_the_reagent_name_and_reject_unknown_keys():
    assert EvaluateOptions.model_validate({"num_eval_episodes": 7}).episodes == 7
    assert EvaluateOptions(episodes=3).episodes == 3
    with pytest.raises(ValueError, match="extra"):
        EvaluateOptions.model_validate({"episode": 3})


def test_rollouts_are_seeded(tmp_path):
    policy = load_policy(write_model(str(tmp_path / "m"), cpe_models=False) + "/model.torchscript")
    policy_random = load_policy(write_model(str(tmp_path / "r"), cpe_models=False,
                                            network=AngleOnly()) + "/model.torchscript")
    a = greedy_rollouts(policy_random, "CartPole-v0", 9, seed=3, gamma=0.9, num_envs=4)
    b = greedy_rollouts(policy_random, "CartPole-v0", 9, seed=3, gamma=0.9, num_envs=4)
    c = greedy_rollouts(policy_random, "CartPole-v0", 9, seed=4, gamma=0.9, num_envs=4)
    assert np.array_equal(a.returns, b.returns) and not np.array_equal(a.returns, c.returns)
    assert np.array_equal(a.lengths, a.returns)
    assert np.allclose(a.discounted_returns, (1 - 0.9 ** a.lengths) / (1 - 0.9))
    good = greedy_rollouts(policy, "CartPole-v0", 4, seed=3, num_envs=4, max_steps=50)
    assert good.returns.tolist() == [50.0] * 4  # the time limit override applies


def test_rollouts_honour_the_environment_action_mask(tmp_path):
    # Taxi's info["action_mask"] forbids illegal pickups/drop-offs (reward -10). A policy that always
    # prefers "drop off" never gets -10 when the mask is honoured: 200 steps of -1.
    names = [str(i) for i in range(6)]
    prefers_dropoff = Constant([0.5, 0.0, 0.0, 0.0, 0.0, 1.0])
    policy = load_policy(write_model(str(tmp_path / "taxi"), cpe_models=False, network=prefers_dropoff,
                                     actions=names, features=[0]) + "/model.torchscript")
    result = greedy_rollouts(policy, "Taxi-v4", 2, seed=0, num_envs=2)
    assert result.returns.tolist() == [-200.0, -200.0]


def test_rollouts_reject_a_model_that_reads_more_features_than_observed(tmp_path, cli):
    model = write_model(str(tmp_path / "m"), cpe_models=False, features=[0, 1, 2, 7])
    code, _, stderr = cli("evaluate", "--model", model, "--env", "CartPole-v0", "--output", tmp_path / "o")
    assert code == 2 and "feature ids [0, 1, 2, 7]" in stderr


def test_return_statistics():
    stats = return_statistics(np.array([1.0, 2.0, 3.0, 4.0]), replicates=200, seed=0)
    assert stats["mean_return"] == 2.5 and stats["min_return"] == 1.0 and stats["max_return"] == 4.0
    assert 1.0 <= stats["ci_low"] < 2.5 < stats["ci_high"] <= 4.0


def test_format_cpe_table_reads_the_stage_summary():
    table = format_cpe_table({"cpe": {"IPS": {"raw": 1.5, "normalized": 1.2, "ci_low": 1.0, "ci_high": 2.0,
                                              "normalized_ci_low": 0.8, "normalized_ci_high": 1.6}}})
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["estimator", "kind", "raw"]
    assert lines[2].split() == ["IPS", "one-step", "1.5", "[1,", "2]", "1.2", "[0.8,", "1.6]", "n/a", "n/a"]
    assert format_cpe_table({}) == "no CPE estimates"


def test_evaluate_on_s3(tmp_path, s3_env, eval_table):
    model = write_model(f"{s3_env}/model", cpe_models=False)
    summary = evaluate(model, eval_table, f"{s3_env}/evaluation", EvaluateOptions(fqe=False, bootstrap=10))
    assert storage.read_json(summary.metrics)["cpe"]["estimates"]["IPS"]["units"] == summary.cpe["IPS"]["units"]
    assert storage.read_bytes(f"{s3_env}/evaluation/report.html").startswith(b"<!DOCTYPE html>")


def test_report_html_is_self_contained_without_training_history(tmp_path, eval_table):
    model = write_model(str(tmp_path / "model"), cpe_models=False)
    out = str(tmp_path / "ev")
    evaluate(model, eval_table, out, EvaluateOptions(fqe=False, bootstrap=10))
    page = open(os.path.join(out, "report.html")).read()
    assert "No data for: training curves" in page and page.count("data:image/png;base64,") == 1
