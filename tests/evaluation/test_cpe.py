"""estimate_all: wiring, skipping, validation, and the invariants that recover a known truth."""

from __future__ import annotations

import pytest
import torch

from batchrl.errors import BatchRLError
from batchrl.evaluation.cpe import (
    ONE_STEP,
    CPEInputs,
    counterfactual_estimates,
    estimate_all,
    logging_policy_values,
    target_policy_probs,
)
from tests.support.evaluation import bandit

NUMBERS = {"raw", "normalized", "ci_low", "ci_high", "normalized_ci_low", "normalized_ci_high", "std_error",
           "units"}


def test_estimate_all_returns_every_estimator_with_intervals():
    inputs, _ = bandit(0, 300, on_policy=False, exact_model=False, episode_length=5)
    results = estimate_all(inputs, gamma=0.9, seed=1, bootstrap=100)
    assert list(results) == [*ONE_STEP, "SDR", "WDR", "MAGIC"]
    for name, result in results.items():
        assert set(result) == NUMBERS | {"diagnostics", "warnings"}, name
        assert all(isinstance(result[k], float) for k in NUMBERS), name
        assert result["diagnostics"]["effective_sample_size"] > 0, name
        assert isinstance(result["diagnostics"]["trusted"], bool) and isinstance(result["warnings"], list)
        assert result["ci_low"] <= result["raw"] <= result["ci_high"], name
        assert result["normalized_ci_low"] <= result["normalized"] <= result["normalized_ci_high"], name
    assert results["IPS"]["units"] == 300 and results["WDR"]["units"] == 60
    baseline = logging_policy_values(inputs, 0.9)
    assert results["IPS"]["normalized"] == pytest.approx(results["IPS"]["raw"] / baseline["mean_logged_reward"])
    assert results["SDR"]["normalized"] == pytest.approx(
        results["SDR"]["raw"] / baseline["mean_discounted_logged_return"])
    assert estimate_all(inputs, gamma=0.9, seed=1, bootstrap=100) == results


def test_missing_models_skip_the_estimators_that_need_them():
    inputs, _ = bandit(1, 50, on_policy=False, exact_model=False)
    inputs.reward_hat = None
    inputs.q_hat = None
    result = counterfactual_estimates(inputs, gamma=0.9, seed=0, bootstrap=20)
    assert list(result["estimates"]) == ["IPS", "SNIPS"]
    assert set(result["skipped"]) == {"DM", "DR", "Switch", "SwitchDR", "SDR", "WDR", "MAGIC"}
    assert "reward model" in result["skipped"]["DR"] and "value model" in result["skipped"]["WDR"]


def test_switch_without_the_logging_distribution_is_skipped_never_guessed():
    inputs, _ = bandit(1, 50, on_policy=False, exact_model=False)
    inputs.logging_probs = None
    result = counterfactual_estimates(inputs, gamma=0.9, seed=0, bootstrap=20)
    assert "Switch" not in result["estimates"] and "SwitchDR" in result["estimates"]
    assert "every action" in result["skipped"]["Switch"]


def test_on_policy_logs_give_ips_and_dr_equal_to_the_logged_mean():
    inputs, _ = bandit(2, 3000, on_policy=True, exact_model=False, noise=0.3)
    inputs.q_hat = None  # one-step only
    results = estimate_all(inputs, gamma=0.9, seed=0, bootstrap=200)
    logged = float(inputs.reward.mean())
    assert results["IPS"]["raw"] == pytest.approx(logged)  # every weight is exactly 1
    assert results["SNIPS"]["normalized"] == pytest.approx(1.0)
    dr = results["DR"]
    assert abs(dr["raw"] - logged) < 3 * dr["std_error"]
    assert dr["normalized_ci_low"] < 1.0 < dr["normalized_ci_high"]


def test_on_policy_episodes_give_sequential_dr_equal_to_the_logged_return():
    inputs, _ = bandit(3, 1800, on_policy=True, exact_model=False, noise=0.3, episode_length=6)
    results = estimate_all(inputs, gamma=0.9, seed=0, bootstrap=200)
    for name in ("SDR", "WDR"):
        assert results[name]["normalized_ci_low"] < 1.0 < results[name]["normalized_ci_high"], name
    assert results["SDR"]["raw"] == pytest.approx(results["WDR"]["raw"])  # equal weights: identical


def test_exact_reward_model_gives_dm_equal_dr_equal_truth():
    inputs, truth = bandit(4, 500, on_policy=False, exact_model=True)
    results = estimate_all(inputs, gamma=0.9, seed=0, bootstrap=50)
    for name in ("DM", "DR", "SwitchDR"):
        assert results[name]["raw"] == pytest.approx(truth, rel=1e-9), name


def test_exact_value_model_gives_sequential_dr_equal_truth():
    # A deterministic 4-step chain: reward 1 per step whatever the action, so Q(s_t, a) = V(s_t) =
    # sum_{k < 4-t} gamma^k; the target policy differs from the logging one.
    gamma, length, episodes = 0.9, 4, 30
    gen = torch.Generator().manual_seed(5)
    t = torch.arange(length).repeat(episodes)
    value = torch.tensor([sum(gamma**k for k in range(length - s)) for s in range(length)],
                         dtype=torch.float64)[t]
    n = length * episodes
    action = torch.randint(2, (n,), generator=gen)
    inputs = CPEInputs(reward=torch.ones(n), action=action, logged_propensity=torch.full((n,), 0.5),
                       target_probs=torch.tensor([[0.9, 0.1]], dtype=torch.float64).repeat(n, 1), reward_hat=None,
                       q_hat=value.unsqueeze(1).repeat(1, 2), episode=torch.arange(n) // length,
                       not_terminal=(t != length - 1))
    results = estimate_all(inputs, gamma=gamma, seed=0, bootstrap=50)
    for name in ("SDR", "WDR", "MAGIC"):
        assert results[name]["raw"] == pytest.approx(float(value[0]), rel=1e-9), name


def test_off_policy_estimators_recover_the_truth_within_their_intervals():
    inputs, truth = bandit(6, 3000, on_policy=False, exact_model=False, noise=0.2)
    inputs.q_hat = None  # one-step only
    results = estimate_all(inputs, gamma=0.9, seed=0, bootstrap=200)
    for name in ("IPS", "SNIPS", "DR"):
        # the truth is on the sampled contexts; allow the interval plus a little slack
        assert results[name]["ci_low"] - 0.02 < truth < results[name]["ci_high"] + 0.02, name


def test_bad_propensities_are_a_user_error():
    inputs, _ = bandit(7, 20, on_policy=False, exact_model=False)
    inputs.logged_propensity[3] = 0.0
    with pytest.raises(BatchRLError, match="action_probability"):
        estimate_all(inputs, gamma=0.9, seed=0, bootstrap=10)


def test_target_policy_probs_masks_and_tempers():
    q = torch.tensor([[1.0, 2.0, 3.0], [5.0, 0.0, 1.0]])
    possible = torch.tensor([[True, True, False], [True, True, True]])
    greedy = target_policy_probs(q, possible, temperature=0.0)
    assert greedy.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    soft = target_policy_probs(q, possible, temperature=1.0)
    assert soft[0, 2] == 0.0
    assert soft[0, 1] / soft[0, 0] == pytest.approx(torch.e)
    assert torch.allclose(soft.sum(dim=1), torch.ones(2, dtype=torch.float64))
