"""One-step estimators: exact values on a hand-computed dataset, and the shared bootstrap."""

from __future__ import annotations

import pytest
import torch

from batchrl.evaluation.estimators import one_step
from batchrl.evaluation.estimators.core import Terms, bootstrap_counts, estimate

# Three decisions, two actions (values worked by hand in the comments).
ACTION = torch.tensor([0, 1, 0])
REWARD = torch.tensor([1.0, 0.0, 2.0])
PROPENSITY = torch.tensor([0.5, 0.25, 1.0])
PI = torch.tensor([[0.8, 0.2], [0.5, 0.5], [0.25, 0.75]])
R_HAT = torch.tensor([[0.9, 0.1], [0.6, 0.2], [1.5, 0.5]])
MU = torch.tensor([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])
ONES = torch.ones(1, 3, dtype=torch.float64)
W = one_step.importance_weights(PI, ACTION, PROPENSITY)  # [1.6, 2.0, 0.25]


def value(terms: Terms) -> float:
    return float(terms.value(ONES)[0])


def test_importance_weights():
    assert W.tolist() == pytest.approx([1.6, 2.0, 0.25])


def test_ips_is_mean_of_weighted_rewards():
    assert value(one_step.ips_terms(W, REWARD)) == pytest.approx((1.6 + 0.0 + 0.5) / 3)


def test_snips_self_normalizes():
    assert value(one_step.snips_terms(W, REWARD)) == pytest.approx(2.1 / 3.85)


def test_direct_method():
    # DM_i = 0.74, 0.4, 0.75
    assert value(one_step.direct_method_terms(PI, R_HAT)) == pytest.approx(1.89 / 3)


def test_doubly_robust():
    # w (r - r_hat(a)) = 0.16, -0.4, 0.125; plus DM_i -> 0.9, 0.0, 0.875
    assert value(one_step.doubly_robust_terms(W, REWARD, ACTION, PI, R_HAT)) == pytest.approx(1.775 / 3)


def test_switch_dr_drops_corrections_above_threshold():
    # row 1 has w = 2 > 1.8: DM only -> 0.9, 0.4, 0.875
    got = value(one_step.switch_dr_terms(W, REWARD, ACTION, PI, R_HAT, threshold=1.8))
    assert got == pytest.approx(2.175 / 3)


def test_switch_uses_the_model_for_actions_with_large_weights():
    # IPS part 1.6, 0, 0.5; model part for (row 1, action 1: 0.5*0.2) and (row 2, action 1, mu = 0: 0.75*0.5)
    got = value(one_step.switch_terms(W, REWARD, ACTION, PI, R_HAT, MU, threshold=1.8))
    assert got == pytest.approx((1.6 + 0.1 + 0.875) / 3)


def test_switch_with_huge_threshold_is_ips_plus_the_model_where_logging_has_no_support():
    # row 2, action 1: pi = 0.75 but mu = 0 (weight infinite): only the model can value it
    assert value(one_step.switch_terms(W, REWARD, ACTION, PI, R_HAT, MU, 1e9)) == pytest.approx(
        value(one_step.ips_terms(W, REWARD)) + 0.75 * 0.5 / 3)
    assert value(one_step.switch_dr_terms(W, REWARD, ACTION, PI, R_HAT, 1e9)) == pytest.approx(value(
        one_step.doubly_robust_terms(W, REWARD, ACTION, PI, R_HAT)))


def test_bootstrap_recomputes_the_ratio_on_each_resample():
    terms = one_step.snips_terms(W, REWARD)
    counts = bootstrap_counts(3, 50, seed=7)
    got = terms.value(counts)
    for row, expected in zip(counts, got, strict=True):
        idx = torch.repeat_interleave(torch.arange(3), row.long())
        direct = float((W[idx] * REWARD[idx].double()).sum() / W[idx].sum())
        assert float(expected) == pytest.approx(direct)


def test_bootstrap_counts_are_size_n_and_seeded():
    a = bootstrap_counts(10, 100, seed=3)
    assert torch.equal(a, bootstrap_counts(10, 100, seed=3))
    assert not torch.equal(a, bootstrap_counts(10, 100, seed=4))
    assert torch.all(a.sum(dim=1) == 10)


def test_estimate_interval_and_normalization():
    gen = torch.Generator().manual_seed(0)
    reward = torch.rand(400, generator=gen) * 2
    doubled = Terms.mean_of(2 * reward)
    result = estimate(doubled, Terms.mean_of(reward), replicates=300, seed=1)
    assert result.ci_low < result.raw < result.ci_high
    # paired resamples: the ratio is exactly 2 on every replicate
    assert result.normalized == pytest.approx(2.0)
    assert result.normalized_ci_low == pytest.approx(2.0) and result.normalized_ci_high == pytest.approx(2.0)
    # the interval of a mean of uniform(0, 2) draws: about +-1.96 * 0.577 * 2 / sqrt(400)
    assert result.ci_high - result.ci_low == pytest.approx(2 * 1.96 * 2 * 0.5774 / 20, rel=0.25)
    again = estimate(doubled, Terms.mean_of(reward), replicates=300, seed=1)
    assert again == result
