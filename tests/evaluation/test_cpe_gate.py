"""The `cpe` publish gate on real CartPole logs: it refuses a bad policy that the one-step DR would pass."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from batchrl import storage
from batchrl.data.gym_logging import GenerateOptions, run_episodes
from batchrl.data.schema import TRAINING_COLUMNS
from batchrl.evaluation.evaluate import EvaluateOptions, evaluate
from batchrl.kfp import runtime
from batchrl.serving.export import export_model
from tests.support.evaluation import FEATURES, Constant, Identity, write_model


class PushesTheWrongWay(nn.Module):
    """Q = (angle, -angle): pushes the cart away from under the pole, as a barely trained network can."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 2], -x[:, 2]], dim=1)


def cartpole_eval_table(uri: str, episodes: int, seed: int) -> tuple[str, float]:
    """An eval table of real CartPole-v0 episodes logged by the uniform random policy; and their mean length."""
    finished, _ = run_episodes(GenerateOptions(env="CartPole-v0", episodes=episodes, seed=seed))
    rows = []
    for number, ep in enumerate(finished):
        for t in range(len(ep)):
            last = t == len(ep) - 1
            terminal = last and ep.end_reason == "terminated"
            rows.append({
                "reward": float(ep.rewards[t]), "state_features": ep.obs[t].tolist(),
                "state_features_presence": [True] * 4,
                "next_state_features": ep.obs[t + 1].tolist() if not last else [0.0] * 4,
                "next_state_features_presence": [not last] * 4, "action": int(ep.actions[t]),
                "next_action": int(ep.actions[t + 1]) if not last else 2,
                "possible_actions_mask": [True, True], "possible_next_actions_mask": [not last] * 2,
                "not_terminal": not terminal, "action_probability": float(ep.probs[t]), "mdp_id": f"{number:04d}",
                "sequence_number": t, "step": 1, "time_diff": 1, "metrics": [float(ep.rewards[t])],
                "metrics_presence": [True]})
    schema = pa.schema([pa.field(name, kind) for name, kind in TRAINING_COLUMNS.items()])
    storage.write_table(pa.Table.from_pylist(rows, schema=schema), uri,
                        metadata={"feature_ids": FEATURES, "action_names": ["0", "1"], "metric_names": ["reward"]})
    return uri, float(np.mean([len(ep) for ep in finished]))


@pytest.mark.slow
def test_gate_refuses_a_bad_cartpole_policy_that_the_one_step_dr_would_pass(tmp_path, caplog):
    """Issue 17, problem 4: on CartPole every reward is 1, so the one-step DR of any policy is about 1.0
    normalized (the old gate's number); the gate must judge the episode return and refuse."""
    eval_table, logged_length = cartpole_eval_table(str(tmp_path / "eval"), episodes=60, seed=11)
    model = write_model(str(tmp_path / "model"), network=PushesTheWrongWay(),
                        summary={"gamma": 0.99, "temperature": 0.0})
    export_model(f"{model}/q_value_model.torchscript", Identity(), Constant([20.0, 20.0]), ["0", "1"], FEATURES,
                 {}, {})
    summary = evaluate(model, eval_table, str(tmp_path / "evaluation"),
                       EvaluateOptions(env="CartPole-v0", episodes=8, bootstrap=50, fqe=False))
    assert summary.gym_score < 0.7 * logged_length  # the policy is worse than the random logging policy
    dr = summary.cpe["DR"]
    assert dr["normalized_ci_low"] >= 0.95  # ... yet the one-step DR says "as good", and would have passed
    assert not dr["diagnostics"]["trusted"] and "one_step_on_episodes" in dr["diagnostics"]["flags"]
    recommended = summary.cpe_recommended
    assert recommended["estimator"] is None and set(recommended["candidates"]) == {"WDR", "SDR"}
    with caplog.at_level("WARNING", logger="batchrl.kfp.runtime"):
        verdict = runtime.gate(summary, "cpe", 0.95)
    assert verdict.passed is False and np.isnan(verdict.score)
    assert "WDR" in caplog.text and "not published" in caplog.text  # says why
    report = open(f"{tmp_path}/evaluation/report.html").read()
    assert "Do not act on these estimates" in report and "When not to trust these numbers" in report
