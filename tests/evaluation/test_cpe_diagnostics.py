"""When not to trust an estimate: weight diagnostics, baseline checks, warnings and the recommended estimator."""

from __future__ import annotations

import math

import pytest
import torch

from batchrl.evaluation.cpe import CPEInputs, counterfactual_estimates, recommend
from batchrl.evaluation.estimators import diagnostics
from batchrl.evaluation.estimators.core import Terms, baseline_problem, estimate


def test_weight_diagnostics_by_hand():
    stats = diagnostics.weight_diagnostics(torch.tensor([1.0, 1.0, 2.0, 0.0]))
    assert stats["effective_sample_size"] == pytest.approx(16 / 6)  # (sum w)^2 / sum w^2 = 4^2 / 6
    assert stats["effective_sample_share"] == pytest.approx(16 / 6 / 4)
    assert stats["max_weight_share"] == pytest.approx(0.5)
    assert stats["mean_weight"] == pytest.approx(1.0) and stats["zero_weight_share"] == pytest.approx(0.25)
    equal = diagnostics.weight_diagnostics(torch.full((50,), 3.0))
    assert equal["effective_sample_size"] == pytest.approx(50.0) and equal["max_weight_share"] == pytest.approx(0.02)


def test_vanished_share_counts_episodes_the_target_would_not_produce():
    stats = diagnostics.episode_weight_diagnostics(torch.tensor([0.0, 1e-9, 2.0, 4.0]))
    assert stats["vanished_share"] == pytest.approx(0.5)


@pytest.mark.parametrize(("base", "se", "scale", "expected"), [
    (2.0, 0.1, 2.0, None),
    (-1.0, 0.1, 1.0, "negative"),
    (0.0, 0.1, 1.0, "zero"),
    (0.1, 0.2, 1.0, "standard errors"),
    (0.001, 1e-6, 1.0, "tiny"),
])
def test_baseline_problem(base, se, scale, expected):
    problem = baseline_problem(base, se, scale)
    assert (problem is None) if expected is None else (expected in problem)


def test_a_negative_baseline_gives_no_normalized_value_and_says_why():
    # rewards of a losing logging policy: its value is negative, so "normalized > 1" would mean worse
    reward = torch.tensor([-1.0, -2.0, -1.5, -0.5] * 25, dtype=torch.float64)
    better = Terms.mean_of(reward / 2)  # half the loss: truly better
    result = estimate(better, Terms.mean_of(reward), replicates=50, seed=0)
    assert result.raw == pytest.approx(-0.625)
    assert math.isnan(result.normalized) and math.isnan(result.normalized_ci_low)
    assert "negative" in result.normalization and result.baseline == pytest.approx(-1.25)


def _one_step(n: int, target: torch.Tensor, episode_length: int = 1, seed: int = 0) -> CPEInputs:
    gen = torch.Generator().manual_seed(seed)
    action = torch.randint(2, (n,), generator=gen)
    reward = 1.0 + torch.rand(n, generator=gen, dtype=torch.float64)
    last = (torch.arange(n) % episode_length) == episode_length - 1
    return CPEInputs(reward=reward, action=action, logged_propensity=torch.full((n,), 0.5, dtype=torch.float64),
                     target_probs=target.expand(n, 2).clone(), reward_hat=torch.ones(n, 2, dtype=torch.float64),
                     q_hat=torch.ones(n, 2, dtype=torch.float64), episode=torch.arange(n) // episode_length,
                     not_terminal=~last, logging_probs=torch.full((n, 2), 0.5, dtype=torch.float64))


def test_one_step_logs_near_the_target_are_trusted_and_recommend_dr():
    inputs = _one_step(400, torch.tensor([[0.6, 0.4]], dtype=torch.float64))
    result = counterfactual_estimates(inputs, gamma=0.9, seed=0, bootstrap=50, sequential_estimators=False)
    dr = result["estimates"]["DR"]
    assert dr["diagnostics"]["trusted"] and dr["diagnostics"]["effective_sample_size"] > 300
    assert result["recommended"]["estimator"] == "DR"
    assert any("reward model" in w for w in result["estimates"]["DM"]["warnings"])


def test_one_step_estimators_are_flagged_on_multi_step_logs_and_sequential_ones_recommended():
    inputs = _one_step(400, torch.tensor([[0.55, 0.45]], dtype=torch.float64), episode_length=4)
    result = counterfactual_estimates(inputs, gamma=0.9, seed=0, bootstrap=50)
    dr = result["estimates"]["DR"]
    assert "one_step_on_episodes" in dr["diagnostics"]["flags"] and not dr["diagnostics"]["trusted"]
    assert any("immediate reward" in w for w in dr["warnings"])
    assert result["recommended"]["estimator"] == "WDR"
    assert result["logging_policy"]["longest_episode"] == 4


def test_a_greedy_target_far_from_long_random_logs_is_flagged_and_nothing_is_recommended():
    inputs = _one_step(600, torch.tensor([[1.0, 0.0]], dtype=torch.float64), episode_length=30)
    result = counterfactual_estimates(inputs, gamma=0.99, seed=0, bootstrap=20)
    wdr = result["estimates"]["WDR"]
    assert wdr["diagnostics"]["vanished_share"] > 0.9
    assert {"few_effective_samples", "vanished_weights"} <= set(wdr["diagnostics"]["flags"])
    assert result["recommended"]["estimator"] is None
    assert "vanished" in result["recommended"]["refusals"]["WDR"] or "effective" in result["recommended"][
        "refusals"]["WDR"]


def test_wrong_propensities_show_in_the_mean_weight():
    inputs = _one_step(2000, torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    inputs.logged_propensity = torch.full((2000,), 0.25, dtype=torch.float64)  # logged wrong: true mu is 0.5
    result = counterfactual_estimates(inputs, gamma=0.9, seed=0, bootstrap=0, sequential_estimators=False)
    assert "mean_weight" in result["estimates"]["IPS"]["diagnostics"]["flags"]


def test_recommend_skips_missing_and_flagged_candidates():
    trusted = {"normalized_ci_low": 0.9, "warnings": [], "diagnostics": {"trusted": True, "flags": []}}
    flagged = {"normalized_ci_low": 1.2, "warnings": ["few samples"], "diagnostics": {"trusted": False,
                                                                                      "flags": ["x"]}}
    chosen = recommend({"WDR": flagged, "SDR": trusted}, longest_episode=5)
    assert chosen["estimator"] == "SDR" and chosen["refusals"] == {"WDR": "few samples"}
    assert recommend({"DR": trusted}, longest_episode=1)["estimator"] == "DR"
    assert recommend({"DR": trusted}, longest_episode=3)["estimator"] is None


def test_overflowed_cumulative_weights_are_flagged_not_fatal():
    """Per-step weights of 1e19 over 40-step episodes overflow float64: the sequential estimates are NaN,
    flagged ``overflowed_weights`` with a warning that says so (not "every weight is zero"), and the
    estimators run to the end (CPE in training must not stop the run here)."""
    episodes, steps = 6, 40
    episode = torch.arange(episodes).repeat_interleave(steps)
    n = episodes * steps
    action = torch.zeros(n, dtype=torch.long)
    action[steps:] = 1  # episodes 1-5 take the action the target almost never takes, logged at 1e-25
    propensity = torch.full((n,), 0.5, dtype=torch.float64)
    propensity[steps:] = 1e-25
    last = torch.ones(n, dtype=torch.bool)
    last[:-1] = episode[1:] != episode[:-1]
    inputs = CPEInputs(reward=torch.ones(n, dtype=torch.float64), action=action, logged_propensity=propensity,
                       target_probs=torch.tensor([[1 - 1e-6, 1e-6]], dtype=torch.float64).repeat(n, 1),
                       reward_hat=torch.ones(n, 2, dtype=torch.float64), q_hat=torch.ones(n, 2, dtype=torch.float64),
                       episode=episode, not_terminal=~last)
    estimates = counterfactual_estimates(inputs, 0.9, seed=0, bootstrap=20)["estimates"]
    for name in ("SDR", "WDR", "MAGIC"):
        assert math.isnan(estimates[name]["raw"])
        assert "overflowed_weights" in estimates[name]["diagnostics"]["flags"]
        assert "exceed the largest floating-point number" in estimates[name]["warnings"][0]
