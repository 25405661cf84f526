"""The 95% intervals of the estimators: the t-interval formulas, which estimator gets which interval,
and coverage on simulated bandits whose value is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from batchrl.evaluation.estimators import one_step, sequential
from batchrl.evaluation.estimators.core import (
    Pivots,
    Terms,
    bootstrap_counts,
    estimate,
    is_plain_mean,
    linearized_terms,
)


def test_plain_mean_gets_the_student_t_interval_and_delta_method_ratio():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(40, generator=gen, dtype=torch.float64) * 3
    b = 1.0 + torch.rand(40, generator=gen, dtype=torch.float64)
    result = estimate(Terms.mean_of(x), Terms.mean_of(b), replicates=100, seed=0)
    t = stats.t.ppf(0.975, 39)
    se = float(x.std()) / math.sqrt(40)
    assert result.std_error == pytest.approx(se, rel=1e-12)
    assert (result.ci_low, result.ci_high) == pytest.approx((float(x.mean()) - t * se, float(x.mean()) + t * se),
                                                            rel=1e-12)
    ratio = float(x.mean() / b.mean())
    ratio_se = float(((x - ratio * b) / b.mean()).std()) / math.sqrt(40)
    assert result.normalized == pytest.approx(ratio, rel=1e-12)
    assert (result.normalized_ci_low, result.normalized_ci_high) == pytest.approx(
        (ratio - t * ratio_se, ratio + t * ratio_se), rel=1e-12)
    assert result.baseline_std_error == pytest.approx(float(b.std()) / math.sqrt(40), rel=1e-12)


def test_self_normalized_estimators_keep_the_bootstrap_interval_within_their_range():
    """SNIPS lies within the range of the rewards; its bootstrap interval does too, on a sample where a
    t-interval would poke out of [0, 1]."""
    weights = torch.tensor([20.0] + [0.05] * 19, dtype=torch.float64)
    reward = torch.tensor([1.0] + [0.0] * 19, dtype=torch.float64)
    snips = one_step.snips_terms(weights, reward)
    assert not is_plain_mean(snips) and is_plain_mean(one_step.ips_terms(weights, reward))
    result = estimate(snips, Terms.mean_of(reward), replicates=300, seed=0)
    assert 0.0 <= result.ci_low <= result.raw <= result.ci_high <= 1.0


def test_linearized_terms_are_the_delta_method_pseudo_values_of_snips():
    """SNIPS = sum w r / sum w: f_i = w_i (r_i - SNIPS) / mean(w), so x_i = SNIPS + f_i, mean x = SNIPS."""
    gen = torch.Generator().manual_seed(5)
    w = torch.rand(50, generator=gen, dtype=torch.float64) * 4
    r = torch.rand(50, generator=gen, dtype=torch.float64)
    snips = float((w * r).sum() / w.sum())
    x = linearized_terms(one_step.snips_terms(w, r))
    assert torch.allclose(x, snips + w * (r - snips) / w.mean(), rtol=0, atol=1e-12)
    assert float(x.mean()) == pytest.approx(snips, abs=1e-12)


def _wdr_episodes(seed: int, n: int = 60) -> sequential.Episodes:
    """Episodes of 2-9 steps whose per-step weights are 0 or 2 (a greedy target over 50/50 logging), so
    most cumulative weights vanish within a few steps, as on CartPole."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 10, (n,), generator=gen)
    episode = torch.repeat_interleave(torch.arange(n), lengths)
    rows = int(lengths.sum())
    weights = 2.0 * (torch.rand(rows, generator=gen) < 0.5).double()
    return sequential.to_episodes(episode, torch.rand(rows, generator=gen), weights,
                                  torch.rand(rows, generator=gen) * 3, torch.rand(rows, generator=gen) * 3)


def test_weighted_dr_interval_is_the_hull_of_the_percentile_and_delta_method_intervals():
    episodes = _wdr_episodes(seed=2)
    wdr, baseline = sequential.weighted_dr_terms(episodes, 0.9), sequential.logged_return_terms(episodes, 0.9)
    x = linearized_terms(wdr)
    assert float(x.mean()) == pytest.approx(float(wdr.value(torch.ones(1, episodes.units, dtype=torch.float64))[0]),
                                            abs=1e-12)
    plain = estimate(wdr, baseline, replicates=200, seed=0)
    hull = estimate(wdr, baseline, replicates=200, seed=0, hull_with_delta=True)
    delta = estimate(Terms.mean_of(x), baseline, replicates=200, seed=0)  # the t-interval on the pseudo-values
    assert hull.raw == plain.raw and hull.normalized == plain.normalized
    for h, parts in (((hull.ci_low, hull.ci_high), [(plain.ci_low, plain.ci_high), (delta.ci_low, delta.ci_high)]),
                     ((hull.normalized_ci_low, hull.normalized_ci_high),
                      [(plain.normalized_ci_low, plain.normalized_ci_high),
                       (delta.normalized_ci_low, delta.normalized_ci_high)])):
        assert h == pytest.approx((min(p[0] for p in parts), max(p[1] for p in parts)), abs=1e-12)
    values = wdr.value(bootstrap_counts(episodes.units, 200, 0))
    assert hull.std_error == pytest.approx(float(values.std()), rel=1e-12)  # still the bootstrap's


def test_hull_with_delta_needs_a_ratio_of_sums_statistic_and_a_plain_mean_baseline():
    episodes = _wdr_episodes(seed=3)
    magic = sequential.MagicStatistic(episodes, 0.9)
    with pytest.raises(ValueError, match="hull_with_delta"):
        estimate(magic, sequential.logged_return_terms(episodes, 0.9), 50, 0, hull_with_delta=True)


def _bandit(rows: int, seed: int) -> tuple[dict[str, Terms], Terms]:
    """3 actions, context x ~ N(0, 1), logging (softmax(x v) + 1/3) / 2 (so every weight is below 6: the
    regime where a 95% interval can hold; heavy-tailed weights are benchmarks/cpe_accuracy.py's), target
    softmax(x u), Bernoulli rewards of mean sigmoid(x w + c) per action; a reward model that is off by 0.1
    on every action (DR must still cover)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, rows)
    logging, target, mean = _policies(x)
    action = (rng.random((rows, 1)) > np.cumsum(logging, axis=1)).sum(axis=1).clip(max=2)
    reward = (rng.random(rows) < mean[np.arange(rows), action]).astype(np.float64)
    t = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
    a = torch.as_tensor(action)
    w = one_step.importance_weights(t(target), a, t(logging[np.arange(rows), action]))
    r_hat = t(np.clip(mean + 0.1, 0, 1))
    return ({"IPS": one_step.ips_terms(w, t(reward)), "SNIPS": one_step.snips_terms(w, t(reward)),
             "DR": one_step.doubly_robust_terms(w, t(reward), a, t(target), r_hat)},
            one_step.logged_reward_terms(t(reward)))


def _policies(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    col = x[:, None]
    logging = (softmax(col * np.array([0.8, 0.0, -0.8])) + 1.0 / 3.0) / 2.0
    target = softmax(col * np.array([-1.0, 0.5, 1.5]))
    mean = 1.0 / (1.0 + np.exp(-(col * np.array([1.0, -0.5, 0.7]) + np.array([0.2, 0.0, -0.3]))))
    return logging, target, mean


def test_intervals_cover_the_known_value_about_95_percent_of_the_time():
    """200 datasets of 300 rows; truth = the target's expected reward over 10^6 contexts (its expected
    reward per context is exact, so the truth's own error is about 2e-4). A 95% interval should hold it
    in 90-98% of datasets (the binomial standard error of the share is 1.5 points)."""
    x = np.random.default_rng(99).normal(0, 1, 10**6)
    _, target, mean = _policies(x)
    truth = float((target * mean).sum(axis=1).mean())
    covered: dict[str, int] = {"IPS": 0, "SNIPS": 0, "DR": 0}
    for d in range(200):
        terms, baseline = _bandit(300, seed=d)
        for name, stat in terms.items():
            result = estimate(stat, baseline, replicates=200, seed=d)
            covered[name] += result.ci_low <= truth <= result.ci_high
    shares = {name: count / 200 for name, count in covered.items()}
    assert all(0.90 <= share <= 0.98 for share in shares.values()), shares


def test_ips_design_variance_is_the_variance_over_the_logging_policys_draws():
    """Contexts fixed, rewards = mean + N(0, 0.3^2) noise (the same noise for every action, as the formula
    assumes) and r_hat = the mean: the formula equals Var(w r) of 500,000 simulated draws of action and
    reward to Monte Carlo precision."""
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, 50)
    logging, target, mean = _policies(x)
    t = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
    draws = 500_000
    row = rng.integers(0, 50, draws)
    action = (rng.random((draws, 1)) > np.cumsum(logging[row], axis=1)).sum(axis=1).clip(max=2)
    reward = mean[row, action] + rng.normal(0, 0.3, draws)
    simulated = float(np.var(target[row, action] / logging[row, action] * reward))
    design = one_step.ips_design_variance(t(target[row]), t(logging[row]), t(mean[row]), t(reward),
                                          torch.as_tensor(action))
    assert design == pytest.approx(simulated, rel=0.02)


def test_ips_design_variance_of_binary_rewards_uses_their_bernoulli_second_moment():
    """Clicks (r in {0, 1}) with r_hat = the click probability: E[r^2 | x, a] = r_hat, and the formula equals
    Var(w r) of 500,000 simulated draws; the pooled residual (r_hat^2 + s^2) misstates it where the
    actions' click probabilities differ (here by 13%)."""
    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, 50)
    logging, target, _ = _policies(x)
    mean = np.stack([np.full(50, 0.5), np.full(50, 0.97), np.full(50, 0.5)], axis=1)
    t = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
    draws = 500_000
    row = rng.integers(0, 50, draws)
    action = (rng.random((draws, 1)) > np.cumsum(logging[row], axis=1)).sum(axis=1).clip(max=2)
    reward = (rng.random(draws) < mean[row, action]).astype(np.float64)
    w = target[row, action] / logging[row, action]
    simulated = float(np.var(w * reward))
    design = one_step.ips_design_variance(t(target[row]), t(logging[row]), t(mean[row]), t(reward),
                                          torch.as_tensor(action))
    assert design == pytest.approx(simulated, rel=0.02)
    pooled = one_step.ips_design_variance(t(target[row]), t(logging[row]), t(mean[row]), t(reward + 1e-9),
                                          torch.as_tensor(action))  # not binary: the pooled residual
    assert abs(pooled / simulated - 1) > 0.05


def test_ips_design_variance_is_infinite_without_support():
    pi = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    mu = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    value = one_step.ips_design_variance(pi, mu, torch.ones(1, 2, dtype=torch.float64),
                                         torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.long))
    assert value == float("inf")


def test_ips_interval_from_the_logging_policys_draws_holds_where_students_t_misses():
    """Peaked logging (two 1-in-200 actions the target prefers; weights of 80): datasets that miss the rare
    actions have a small sample variance and a low IPS; the t-interval misses the truth far more often than
    5% (measured: 77% coverage), the design-based bootstrap-t interval (pivots from 200 replicate logs drawn
    from mu) holds it 90-98% of the time, raw and normalized (measured: 93% and 92.5%; 200 datasets of 400
    rows)."""
    mu = np.array([0.99, 0.005, 0.005])
    pi = np.array([0.2, 0.4, 0.4])
    means = np.array([0.3, 0.9, 0.6])
    truth, logged_value = float(pi @ means), float(mu @ means)
    covered = {"student": 0, "design": 0, "design_normalized": 0}
    rows = 400
    t = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
    for d in range(200):
        rng = np.random.default_rng(d)
        action = rng.choice(3, size=rows, p=mu)
        reward = (rng.random(rows) < means[action]).astype(np.float64)
        w = t(pi[action] / mu[action])
        ips = one_step.ips_terms(w, t(reward))
        pivots = one_step.ips_design_pivots(t(np.tile(pi, (rows, 1))), t(np.tile(mu, (rows, 1))),
                                            t(np.tile(means, (rows, 1))), t(reward), torch.as_tensor(action),
                                            replicates=200, seed=d)
        baseline = one_step.logged_reward_terms(t(reward))
        student = estimate(ips, baseline, replicates=10, seed=d)
        design = estimate(ips, baseline, replicates=10, seed=d, pivots=pivots)
        covered["student"] += student.ci_low <= truth <= student.ci_high
        covered["design"] += design.ci_low <= truth <= design.ci_high
        covered["design_normalized"] += (design.normalized_ci_low <= truth / logged_value
                                         <= design.normalized_ci_high)
    assert covered["student"] / 200 < 0.85, covered
    assert 0.90 <= covered["design"] / 200 <= 0.98, covered
    assert 0.90 <= covered["design_normalized"] / 200 <= 0.98, covered


def test_ips_design_pivots_are_seeded_and_infinite_without_support():
    """The same seed gives the same pivots; a residual-resampling draw for non-binary rewards; infinite
    pivots (an unbounded interval) where pi puts mass on an action mu never takes."""
    rng = np.random.default_rng(3)
    pi = torch.as_tensor(np.tile([0.5, 0.5], (300, 1)), dtype=torch.float64)
    mu = torch.as_tensor(np.tile([0.8, 0.2], (300, 1)), dtype=torch.float64)
    action = torch.as_tensor(rng.choice(2, size=300, p=[0.8, 0.2]))
    r_hat = torch.as_tensor(np.tile([1.0, 2.0], (300, 1)), dtype=torch.float64)
    reward = r_hat.gather(1, action.reshape(-1, 1)).squeeze(1) + torch.as_tensor(rng.normal(0, 0.5, 300))
    first = one_step.ips_design_pivots(pi, mu, r_hat, reward, action, replicates=100, seed=4)
    assert first == one_step.ips_design_pivots(pi, mu, r_hat, reward, action, replicates=100, seed=4)
    assert first != one_step.ips_design_pivots(pi, mu, r_hat, reward, action, replicates=100, seed=5)
    assert first.raw[0] < -1.0 < 1.0 < first.raw[1] < 4.0  # about Student's +-1.97 on these light weights
    blind = torch.as_tensor(np.tile([1.0, 0.0], (300, 1)), dtype=torch.float64)
    unbounded = one_step.ips_design_pivots(pi, blind, r_hat, reward, torch.zeros(300, dtype=torch.long),
                                           replicates=10, seed=0)
    result = estimate(one_step.ips_terms(torch.ones(300, dtype=torch.float64), reward), Terms.mean_of(reward),
                      replicates=10, seed=0, pivots=unbounded)
    assert (result.ci_low, result.ci_high) == (-float("inf"), float("inf"))


def test_pivots_are_for_plain_means_only():
    w = torch.ones(10, dtype=torch.float64)
    r = torch.rand(10, dtype=torch.float64)
    with pytest.raises(ValueError, match="plain means"):
        estimate(one_step.snips_terms(w, r), Terms.mean_of(r), replicates=10, seed=0,
                 pivots=Pivots((-2.0, 2.0), (-2.0, 2.0)))
