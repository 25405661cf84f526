"""Sequential estimators: exact values on two hand-computed episodes, MAGIC's blend, FQE on a chain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from batchrl.evaluation.estimators import sequential
from batchrl.evaluation.estimators.fqe import FQEConfig, FQEInputs, fit_fqe, fqe_terms

GAMMA = 0.5
# Episode A (2 steps) then episode B (1 step): per-step weight w, reward r, Q_hat(s, a), V_hat(s).
EPISODES = sequential.to_episodes(
    episode=torch.tensor([7, 7, 3]),
    reward=torch.tensor([1.0, 0.0, 2.0]),
    weights=torch.tensor([2.0, 1.5, 0.5]),
    q_logged=torch.tensor([0.5, 0.2, 1.0]),
    v=torch.tensor([0.6, 0.3, 0.4]),
)


ONES = torch.ones(1, 2, dtype=torch.float64)


def value(stat) -> float:
    return float(stat.value(ONES)[0])


def test_padding_keeps_order_and_pads_with_neutral_values():
    assert EPISODES.reward.tolist() == [[1.0, 0.0], [2.0, 0.0]]
    assert EPISODES.step_weight.tolist() == [[2.0, 1.5], [0.5, 1.0]]
    assert EPISODES.mask.tolist() == [[1.0, 1.0], [1.0, 0.0]]
    assert EPISODES.cumulative_weight().tolist() == [[2.0, 3.0], [0.5, 0.5]]


def test_logged_return():
    # A: 1 + 0.5 * 0 = 1; B: 2
    assert value(sequential.logged_return_terms(EPISODES, GAMMA)) == pytest.approx(1.5)


def test_sequential_dr_matches_the_backward_recursion():
    # A: DR_1 = 0.3 + 1.5 (0 - 0.2) = 0; DR_0 = 0.6 + 2 (1 + 0.5 * 0 - 0.5) = 1.6. B: 0.4 + 0.5 (2 - 1) = 0.9
    assert value(sequential.sequential_dr_terms(EPISODES, GAMMA)) == pytest.approx((1.6 + 0.9) / 2)


def test_weighted_dr():
    # t=0: (2*0.5 + 0.5*1)/2.5 + (0.6 + 0.4)/2 = 1.1
    # t=1: 0.5 * [(3*(0 - 0.2) + 0.5*0)/3.5 + (2*0.3 + 0.5*0)/2.5]
    expected = 1.1 + 0.5 * (-0.6 / 3.5 + 0.6 / 2.5)
    assert value(sequential.weighted_dr_terms(EPISODES, GAMMA)) == pytest.approx(expected)


def test_magic_j_step_estimates_and_blend():
    magic = sequential.MagicStatistic(EPISODES, GAMMA, num_j_steps=25, bias_resamples=50, seed=0)
    assert magic.steps == [-1, 0, 1]
    g, x = magic.blend(ONES)
    wdr = value(sequential.weighted_dr_terms(EPISODES, GAMMA))
    # g(-1) = mean V_hat(s_0); g(0) = t=0 terms + 0.5 * (2*0.5*0.3)/2.5; g(1) = WDR
    assert g[0].tolist() == pytest.approx([0.5, 1.1 + 0.12, wdr])
    assert float(x.sum()) == pytest.approx(1.0) and bool((x >= 0).all())
    assert g.min() - 1e-9 <= value(magic) <= g.max() + 1e-9


def test_j_steps_are_spread_over_the_horizon():
    assert sequential.j_steps(200, 25) == [-1, *sorted({round(i * 199 / 23) for i in range(24)})]
    assert sequential.j_steps(1, 25) == [-1, 0]


def test_simplex_quadratic_min_inverse_variance_weights():
    matrix = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64)).unsqueeze(0)
    x, gaps = sequential.simplex_quadratic_min(matrix)
    assert x[0].tolist() == pytest.approx([0.8, 0.2], abs=1e-12) and float(gaps[0]) <= 1e-8
    # a negative unconstrained optimum is clipped to the simplex
    corr = torch.tensor([[[1.0, 1.5], [1.5, 4.0]]], dtype=torch.float64)  # f(x2) = 1 + x2 + 2 x2^2
    y = sequential.simplex_quadratic_min(corr)[0][0]
    assert y.tolist() == pytest.approx([1.0, 0.0], abs=1e-12)


def _brute_force_simplex_min(matrix: torch.Tensor) -> float:
    """min x^T M x on the simplex by trying every support (the optimum is the KKT point of one of them)."""
    import itertools

    size, best = matrix.shape[0], float("inf")
    for k in range(1, size + 1):
        for support in itertools.combinations(range(size), k):
            s = list(support)
            z = torch.linalg.solve(matrix[s][:, s], torch.ones(k, dtype=matrix.dtype))
            if bool((z >= 0).all()):
                x = torch.zeros(size, dtype=matrix.dtype)
                x[s] = z / z.sum()
                best = min(best, float(x @ matrix @ x))
    return best


def test_simplex_quadratic_min_is_optimal_on_ill_conditioned_problems():
    # MAGIC's matrices are low-rank covariances plus a bias outer product: FISTA alone used to stop early
    gen = torch.Generator().manual_seed(0)
    factor = torch.randn(20, 7, 3, generator=gen, dtype=torch.float64)
    bias = 0.3 * torch.randn(20, 7, 1, generator=gen, dtype=torch.float64)
    matrix = factor @ factor.transpose(1, 2) + bias @ bias.transpose(1, 2) + 1e-6 * torch.eye(7, dtype=torch.float64)
    x, gaps = sequential.simplex_quadratic_min(matrix)
    assert bool((gaps <= sequential.GAP_TOLERANCE).all())
    assert torch.allclose(x.sum(dim=1), torch.ones(20, dtype=torch.float64)) and bool((x >= 0).all())
    for i in range(20):
        optimum = _brute_force_simplex_min(matrix[i])
        assert float(x[i] @ matrix[i] @ x[i]) == pytest.approx(optimum, rel=1e-8)
    assert sequential.duality_gap(matrix[:1], x[:1]).item() >= -1e-12


def test_overflowed_weights_leave_magic_undefined_instead_of_failing():
    """A cumulative weight beyond float64 (long episodes of large per-step weights) makes MAGIC's matrices
    non-finite: those blends are NaN with an infinite gap, the others are still solved, and the estimators
    and their intervals run to the end (training evaluates CPE every epoch and must not die here)."""
    gen = torch.Generator().manual_seed(1)
    factor = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64)
    matrix = factor @ factor.transpose(1, 2) + 1e-6 * torch.eye(5, dtype=torch.float64)
    matrix[1, 0, 0] = float("nan")
    x, gaps = sequential.simplex_quadratic_min(matrix)
    assert bool(torch.isnan(x[1]).all()) and gaps[1] == float("inf")
    assert bool((gaps[[0, 2]] <= sequential.GAP_TOLERANCE).all())
    assert torch.allclose(x[[0, 2]].sum(dim=1), torch.ones(2, dtype=torch.float64))

    from batchrl.evaluation.estimators.core import estimate

    steps = 40
    episode = torch.arange(6).repeat_interleave(steps)
    weights = torch.full((6 * steps,), 1e20, dtype=torch.float64)  # (1e20)^40 overflows
    weights[:steps] = 1.0
    episodes = sequential.to_episodes(episode, torch.ones(6 * steps), weights, torch.ones(6 * steps),
                                      torch.ones(6 * steps))
    baseline = sequential.logged_return_terms(episodes, 0.9)
    for stat in (sequential.MagicStatistic(episodes, 0.9, num_j_steps=5, bias_resamples=10),
                 sequential.weighted_dr_terms(episodes, 0.9)):
        result = estimate(stat, baseline, replicates=20, seed=0)
        assert np.isnan(result.raw)  # inf / inf: no number, and no exception


def test_project_to_simplex():
    v = torch.tensor([[0.5, 0.5], [2.0, 0.0], [0.2, 0.1]], dtype=torch.float64)
    p = sequential.project_to_simplex(v)
    assert p.tolist()[0] == pytest.approx([0.5, 0.5])
    assert p.tolist()[1] == pytest.approx([1.0, 0.0])
    assert p.tolist()[2] == pytest.approx([0.55, 0.45])


def _random_episodes(seed: int, n: int = 40, horizon: int = 12) -> sequential.Episodes:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, horizon + 1, (n,), generator=gen)
    episode = torch.repeat_interleave(torch.arange(n), lengths)
    rows = int(lengths.sum())
    return sequential.to_episodes(episode, torch.rand(rows, generator=gen),
                                  torch.rand(rows, generator=gen) * 2, torch.rand(rows, generator=gen) * 3,
                                  torch.rand(rows, generator=gen) * 3)


def test_magic_lies_within_its_j_step_estimates_on_every_replicate():
    from batchrl.evaluation.estimators.core import bootstrap_counts

    episodes = _random_episodes(1)
    magic = sequential.MagicStatistic(episodes, 0.9, num_j_steps=6, bias_resamples=50, seed=2)
    counts = torch.cat([torch.ones(1, episodes.units, dtype=torch.float64),
                        bootstrap_counts(episodes.units, 20, seed=3)])
    g, x = magic.blend(counts)
    blended = (g * x).sum(dim=1)
    assert torch.all(blended >= g.min(dim=1).values - 1e-9)
    assert torch.all(blended <= g.max(dim=1).values + 1e-9)
    assert torch.allclose(x.sum(dim=1), torch.ones(21, dtype=torch.float64))
    assert torch.allclose(magic.value(counts), blended)


def test_magic_contributions_sum_to_the_j_step_estimates():
    episodes = _random_episodes(4, n=10, horizon=5)
    magic = sequential.MagicStatistic(episodes, 0.8, num_j_steps=25, bias_resamples=20, seed=0)
    ones = torch.ones(1, episodes.units, dtype=torch.float64)
    g, _ = magic.blend(ones)
    wdr = sequential.weighted_dr_terms(episodes, 0.8).value(ones)
    assert float(g[0, -1]) == pytest.approx(float(wdr[0]))
    assert float(g[0, 0]) == pytest.approx(float(episodes.v[:, 0].mean()))


def test_fqe_recovers_the_value_of_a_chain():
    # positions 0..4 one-hot, reward 1 per step, terminal after position 4: V(0) = sum_{t<5} 0.9^t
    gamma, length, copies = 0.9, 5, 4
    eye = torch.eye(length + 1)
    state = eye[:length].repeat(copies, 1)
    next_state = eye[1:].repeat(copies, 1)
    not_terminal = torch.tensor([True] * (length - 1) + [False]).repeat(copies)
    action = torch.zeros(length * copies, dtype=torch.long)
    inputs = FQEInputs(state, action, torch.ones(length * copies), next_state, not_terminal,
                       torch.tensor([[1.0, 0.0]]).repeat(length * copies, 1))
    model, fit = fit_fqe(inputs, gamma, FQEConfig(hidden=(32,), steps_per_iteration=25, learning_rate=1e-2,
                                                  tolerance=0.005, seed=0))
    truth = sum(gamma**t for t in range(length))
    start = fqe_terms(model, eye[:1], torch.tensor([[1.0, 0.0]]))
    assert float(start.value(torch.ones(1, 1, dtype=torch.float64))[0]) == pytest.approx(truth, rel=0.01)
    assert fit.converged and fit.relative_error_bound <= 0.005 and fit.iterations < 1000
    assert fit.fit_loss < 0.01


def test_fqe_that_runs_out_of_iterations_says_so():
    gamma, length = 0.99, 5
    eye = torch.eye(length + 1)
    inputs = FQEInputs(eye[:length], torch.zeros(length, dtype=torch.long), torch.ones(length), eye[1:],
                       torch.tensor([True] * (length - 1) + [False]), torch.tensor([[1.0, 0.0]]).repeat(length, 1))
    _, fit = fit_fqe(inputs, gamma, FQEConfig(hidden=(8,), iterations=3, seed=0))
    assert fit.iterations == 3 and not fit.converged and fit.relative_error_bound > 0.01


def test_blend_weights_are_optimal_on_nearly_singular_matrices():
    """Two of MAGIC's bootstrap matrices from the CartPole eval table of ``make run`` (128 episodes,
    effective sample size 1.2; eigenvalues down to 1e-17 of the largest, several j-step estimates equal).
    The active-set KKT solve alone stopped 1e-7 above the optimum there and the estimate was flagged
    magic_not_optimal; now the duality gap certifies them, and SLSQP finds no lower objective."""
    from scipy.optimize import minimize

    matrices = torch.from_numpy(np.load(Path(__file__).parents[1] / "resources" / "magic_singular_blend_matrices.npy"))
    weights, gaps = sequential.simplex_quadratic_min(matrices)
    assert bool((gaps <= sequential.GAP_TOLERANCE).all()), gaps
    for matrix, x in zip(matrices.numpy(), weights.numpy(), strict=True):
        m = matrix / np.linalg.eigvalsh(matrix).max()
        reference = minimize(lambda v, m=m: v @ m @ v, np.full(len(m), 1 / len(m)), jac=lambda v, m=m: 2 * m @ v,
                             method="SLSQP", bounds=[(0, 1)] * len(m), options={"ftol": 1e-16, "maxiter": 1000},
                             constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1}])
        assert x @ m @ x <= reference.fun * (1 + 1e-12)
        assert abs(x.sum() - 1) < 1e-12 and x.min() >= 0
