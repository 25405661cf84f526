"""Sequential estimators of a target policy's discounted episode return.

Notation, per logged episode i (of n) and step t (of its length T_i): reward r_t, per-step weight
w_t = pi(a_t|s_t) / mu(a_t|s_t), cumulative weight rho_t = prod_{k<=t} w_k (rho_{-1} = 1), value model
Q_hat(s_t, a_t) and V_hat(s_t) = sum_a pi(a|s_t) Q_hat(s_t, a). Episodes are padded to the longest
one: after its end an episode has reward 0, Q_hat = V_hat = 0 and per-step weight 1.
The resampling unit is the episode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls
from torch import Tensor

from batchrl.evaluation.estimators.core import Terms, _safe_ratio


@dataclass(frozen=True)
class Episodes:
    """Logged episodes as padded [n, T] float64 matrices (see the module docstring)."""

    reward: Tensor
    step_weight: Tensor
    q_logged: Tensor
    v: Tensor
    mask: Tensor

    @property
    def units(self) -> int:
        return int(self.reward.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.reward.shape[1])

    def cumulative_weight(self) -> Tensor:
        """rho_t = prod_{k<=t} w_k, [n, T]."""
        return torch.cumprod(self.step_weight, dim=1)

    def previous_cumulative_weight(self) -> Tensor:
        """rho_{t-1}, [n, T] (rho_{-1} = 1)."""
        rho = self.cumulative_weight()
        return torch.cat([torch.ones_like(rho[:, :1]), rho[:, :-1]], dim=1)

    def discounts(self, gamma: float) -> Tensor:
        return gamma ** torch.arange(self.horizon, dtype=torch.float64)


def to_episodes(episode: Tensor, reward: Tensor, weights: Tensor, q_logged: Tensor, v: Tensor) -> Episodes:
    """Pad per-row [N] vectors into [n, T] matrices; rows of an episode are contiguous and in order."""
    episode = episode.long()
    starts = torch.ones(episode.shape[0], dtype=torch.bool)
    starts[1:] = episode[1:] != episode[:-1]
    index = torch.cumsum(starts.long(), dim=0) - 1  # episode number 0..n-1 in order of appearance
    n = int(index[-1]) + 1 if episode.numel() else 0
    lengths = torch.bincount(index, minlength=n)
    first = torch.cumsum(lengths, dim=0) - lengths
    position = torch.arange(episode.shape[0]) - first[index]
    horizon = int(lengths.max()) if n else 0

    def pad(values: Tensor, fill: float) -> Tensor:
        out = torch.full((n, horizon), fill, dtype=torch.float64)
        out[index, position] = values.to(torch.float64)
        return out

    mask = torch.zeros(n, horizon, dtype=torch.float64)
    mask[index, position] = 1.0
    return Episodes(pad(reward, 0.0), pad(weights, 1.0), pad(q_logged, 0.0), pad(v, 0.0), mask)


def logged_return_terms(episodes: Episodes, gamma: float) -> Terms:
    """The logging policy's value: mean discounted logged return (1/n) sum_i sum_t gamma^t r_t."""
    return Terms.mean_of((episodes.reward * episodes.discounts(gamma)).sum(dim=1))


def sequential_dr_terms(episodes: Episodes, gamma: float) -> Terms:
    """Sequential doubly robust: mean over episodes of DR_0, where
    DR_t = V_hat(s_t) + w_t (r_t + gamma DR_{t+1} - Q_hat(s_t, a_t)), DR_T = 0; unrolled,
    DR_0 = sum_t gamma^t [rho_t (r_t - Q_hat(s_t, a_t)) + rho_{t-1} V_hat(s_t)].

    Unbiased when the propensities are right; the value model reduces variance.
    Jiang & Li, "Doubly Robust Off-policy Value Evaluation for Reinforcement Learning", ICML 2016, eq. (4).
    """
    disc = episodes.discounts(gamma)
    rho = episodes.cumulative_weight()
    rho_prev = episodes.previous_cumulative_weight()
    per_episode = (disc * (rho * (episodes.reward - episodes.q_logged) + rho_prev * episodes.v)).sum(dim=1)
    return Terms.mean_of(per_episode)


def weighted_dr_terms(episodes: Episodes, gamma: float) -> Terms:
    """Weighted doubly robust: the cumulative weights are self-normalized per time step,
    WDR = sum_t gamma^t [sum_i rho_t^i (r_t^i - Q_hat_t^i) / sum_i rho_t^i
                         + sum_i rho_{t-1}^i V_hat_t^i / sum_i rho_{t-1}^i].

    Biased (consistent) but bounded and far lower variance than sequential DR.
    Thomas & Brunskill, "Data-Efficient Off-Policy Policy Evaluation for Reinforcement Learning",
    ICML 2016, eq. (9) (their w_t^i = rho_t^i / sum_j rho_t^j).
    """
    numerator, denominator = _wdr_columns(episodes, gamma)
    return Terms(numerator, denominator)


def _wdr_columns(episodes: Episodes, gamma: float) -> tuple[Tensor, Tensor]:
    disc = episodes.discounts(gamma)
    rho = episodes.cumulative_weight()
    rho_prev = episodes.previous_cumulative_weight()
    numerator = torch.cat([rho * disc * (episodes.reward - episodes.q_logged), rho_prev * disc * episodes.v], 1)
    return numerator, torch.cat([rho, rho_prev], dim=1)


def j_steps(horizon: int, count: int) -> list[int]:
    """The j-step horizons MAGIC blends: -1 (the model alone), then up to ``count - 1`` steps spread
    evenly over 0 .. T-1 (T-1 = the full weighted DR)."""
    spread = np.unique(np.round(np.linspace(0, horizon - 1, max(count - 1, 1))).astype(int))
    return [-1, *spread.tolist()]


class MagicStatistic:
    """MAGIC: the convex blend of j-step weighted DR estimates that minimizes estimated MSE.

    g^(j) = sum_i [sum_{t<=j} gamma^t (w_t^i (r_t^i - Q_hat_t^i) + w_{t-1}^i V_hat_t^i)
                   + gamma^{j+1} w_j^i V_hat(s_{j+1}^i)],   w_t^i = rho_t^i / sum_k rho_t^k,
    so g^(-1) is the model's value of the start states and g^(T-1) is weighted DR.
    x* = argmin_{x in simplex} x^T (Omega + b b^T) x, MAGIC = x*^T g, where Omega is the covariance of
    the g^(j) (n times the covariance of the per-episode terms) and b_j is the distance from g^(j) to
    a 90% bootstrap interval of g^(T-1). As a convex blend it lies within the range of the g^(j).
    Thomas & Brunskill, ICML 2016, sec. 5 (Algorithm 1).

    Args:
        episodes: the logged episodes.
        gamma: discount.
        num_j_steps: number of j-step horizons blended (ReAgent used 25).
        bias_resamples: bootstrap resamples for the 90% interval of g^(T-1).
        seed: seed of those resamples (the same stream on every call).
    """

    def __init__(self, episodes: Episodes, gamma: float, num_j_steps: int = 25, bias_resamples: int = 100,
                 seed: int = 0, chunk: int = 16):
        self.episodes, self.gamma = episodes, gamma
        self.steps = j_steps(episodes.horizon, num_j_steps)
        self.bias_resamples, self.seed, self.chunk = bias_resamples, seed, chunk
        disc = episodes.discounts(gamma)
        rho = episodes.cumulative_weight()
        rho_prev = episodes.previous_cumulative_weight()
        self._rho, self._rho_prev = rho, rho_prev
        self._model_part = rho * disc * (episodes.reward - episodes.q_logged)
        self._value_part = rho_prev * disc * episodes.v
        v_next = torch.cat([episodes.v[:, 1:], torch.zeros_like(episodes.v[:, :1])], dim=1)
        self._tail = rho * (disc * gamma) * v_next
        self._wdr = Terms(*_wdr_columns(episodes, gamma))
        self._columns = torch.tensor([j for j in self.steps if j >= 0], dtype=torch.long)
        self.last_gaps = torch.zeros(0, dtype=torch.float64)

    @property
    def units(self) -> int:
        return self.episodes.units

    def contributions(self, counts: Tensor) -> Tensor:
        """Per-episode terms c[b, i, j] of each g^(j) (g^(j) = sum_i counts[b, i] c[b, i, j]); [B, n, J]."""
        n = counts.sum(dim=1, keepdim=True)  # [B, 1]
        den = (counts @ self._rho).unsqueeze(1)  # [B, 1, T]
        den_prev = (counts @ self._rho_prev).unsqueeze(1)
        step = _safe_ratio(self._model_part.unsqueeze(0), den) + _safe_ratio(self._value_part.unsqueeze(0),
                                                                              den_prev)
        running = torch.cumsum(step, dim=2) + _safe_ratio(self._tail.unsqueeze(0), den)  # [B, n, T]
        start = (self.episodes.v[:, 0].unsqueeze(0) / n).unsqueeze(2)  # j = -1: [B, n, 1]
        return torch.cat([start, running[:, :, self._columns]], dim=2)

    def blend(self, counts: Tensor) -> tuple[Tensor, Tensor]:
        """j-step estimates g [B, J] and the MAGIC weights x [B, J] for multiplicities ``counts`` [B, n].
        The relative duality gaps of the weights are kept in ``last_gaps`` [B]."""
        rng = np.random.default_rng(self.seed)
        estimates, objectives = [], []
        for part in torch.split(counts, self.chunk):
            c = self.contributions(part)
            g = torch.einsum("bi,bij->bj", part, c)
            n = part.sum(dim=1)
            centered = c - (g / n.unsqueeze(1)).unsqueeze(1)
            weighted = centered * part.unsqueeze(2)
            cov = torch.bmm(weighted.transpose(1, 2), centered) / (n - 1).clamp(min=1).reshape(-1, 1, 1)
            omega = cov * n.reshape(-1, 1, 1)
            low, high = self._wdr_interval(part, rng)
            bias = torch.clamp(low.unsqueeze(1) - g, min=0) + torch.clamp(g - high.unsqueeze(1), min=0)
            estimates.append(g)
            objectives.append(omega + bias.unsqueeze(2) * bias.unsqueeze(1))
        weights, self.last_gaps = simplex_quadratic_min(torch.cat(objectives))
        return torch.cat(estimates), weights

    def _wdr_interval(self, counts: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """5th and 95th percentiles of weighted DR over resamples of each replicate's episodes."""
        units, draws = self.units, self.bias_resamples
        lows, highs = [], []
        for row in counts:
            members = np.repeat(np.arange(units), row.long().numpy())  # the replicate's episodes
            picks = members[rng.integers(len(members), size=(draws, len(members)))]
            flat = (picks + units * np.arange(draws)[:, None]).ravel()
            inner = np.bincount(flat, minlength=draws * units).reshape(draws, units)
            values = self._wdr.value(torch.from_numpy(inner.astype(np.float64)))
            lo, hi = torch.quantile(values, torch.tensor([0.05, 0.95], dtype=torch.float64)).tolist()
            lows.append(lo)
            highs.append(hi)
        return torch.tensor(lows, dtype=torch.float64), torch.tensor(highs, dtype=torch.float64)

    def value(self, counts: Tensor) -> Tensor:
        g, x = self.blend(counts)
        return (g * x).sum(dim=1)


#: Relative duality gap at which the MAGIC weights count as optimal: f(x) - f* <= GAP_TOLERANCE * f(x)
#: (or below GAP_FLOOR, rounding error, on the matrix scaled to largest eigenvalue 1).
GAP_TOLERANCE = 1e-8
GAP_FLOOR = 1e-15


def duality_gap(matrix: Tensor, x: Tensor) -> Tensor:
    """Frank-Wolfe gap of f(x) = x^T M x on the simplex, grad(x)^T x - min_j grad_j(x) with grad = 2 M x:
    an upper bound on f(x) - min f (Jaggi, ICML 2013, sec. 2), zero exactly at the optimum. [B]."""
    grad = 2.0 * torch.bmm(matrix, x.unsqueeze(2)).squeeze(2)
    return (grad * x).sum(dim=1) - grad.amin(dim=1)


def _objective(matrix: Tensor, x: Tensor) -> Tensor:
    return torch.einsum("bi,bij,bj->b", x, matrix, x)


def _kkt_on_support(matrix: Tensor, support: Tensor) -> tuple[Tensor, float]:
    """min x^T M x subject to sum x = 1 with x zero outside ``support``: (x on the support, multiplier nu)
    from the KKT system [[2 M_SS, -1], [1^T, 0]] [x_S; nu] = [0; 1]."""
    k = support.numel()
    system = torch.zeros(k + 1, k + 1, dtype=matrix.dtype)
    system[:k, :k] = 2.0 * matrix[support][:, support]
    system[:k, k] = -1.0
    system[k, :k] = 1.0
    rhs = torch.zeros(k + 1, 1, dtype=matrix.dtype)
    rhs[k] = 1.0
    solution = torch.linalg.lstsq(system, rhs, driver="gelsd").solution.squeeze(1)  # gelsy varied run to run
    return solution[:k], float(solution[k])


def _active_set(matrix: Tensor, x: Tensor) -> Tensor | None:
    """The exact minimizer by the primal active-set method (Nocedal & Wright, *Numerical Optimization*,
    2006, sec. 16.5), warm-started on the support of ``x`` [J]: solve the KKT system on the support, drop
    the most negative weight or add the action whose gradient most undercuts the multiplier, repeat.
    None if it has not settled after 2 J changes."""
    size = x.shape[0]
    inside = x > 1e-9 * float(x.max())
    for _ in range(2 * size):
        support = torch.nonzero(inside).squeeze(1)
        values, nu = _kkt_on_support(matrix, support)
        if not bool(torch.isfinite(values).all()):
            return None
        if float(values.min()) < 0:
            inside[support[values.argmin()]] = False
            continue
        point = torch.zeros_like(x)
        point[support] = values
        grad = 2.0 * matrix @ point
        outside = ~inside
        if bool(outside.any()) and float(grad[outside].min()) < nu - 1e-12 * max(abs(nu), 1e-300):
            inside[torch.nonzero(outside).squeeze(1)[grad[outside].argmin()]] = True
            continue
        return point / point.sum()
    return None


def _nnls_simplex(matrix: Tensor) -> Tensor | None:
    """argmin_{x in simplex} x^T M x for one PSD matrix [J, J] by non-negative least squares, or None if
    the NNLS did not finish.

    With M = F^T F (F = Lambda^{1/2} U^T from the eigendecomposition, negative rounding eigenvalues set to
    0), NNLS (Lawson & Hanson, *Solving Least Squares Problems*, 1974, ch. 23) solves
    min_{x >= 0} ||F x||^2 + (1^T x - 1)^2. Writing x = s y with y on the simplex and s = 1^T x, that is
    s^2 f(y) + (s - 1)^2, minimized over y by the simplex minimizer for every s: the NNLS solution divided
    by its sum is the exact minimizer. Lawson-Hanson works on QR factors of the active columns, so it
    stays exact where MAGIC's matrices are nearly singular (j-step estimates that are equal once every
    resampled episode has ended or its weight vanished). There the KKT solve of :func:`_active_set` lost
    accuracy: on the CartPole eval table of ``make run`` (128 episodes, effective sample size 1.2) 9 of
    200 bootstrap blends stopped 3e-8 to 3e-7 above the optimum and MAGIC was flagged
    ``magic_not_optimal``; NNLS certified every one of them to a relative gap below 1e-14.
    """
    size = matrix.shape[0]
    try:
        eigenvalues, vectors = np.linalg.eigh(matrix.numpy())
    except np.linalg.LinAlgError:  # leave it to the iterative solve
        return None
    factor = np.sqrt(np.clip(eigenvalues, 0.0, None))[:, None] * vectors.T
    design = np.vstack([factor, np.ones((1, size))])
    target = np.zeros(size + 1)
    target[-1] = 1.0
    try:
        x, _ = nnls(design, target, maxiter=50 * size)
    except RuntimeError:  # the iteration cap: leave it to the iterative solve
        return None
    total = float(x.sum())
    return torch.from_numpy(x / total).to(matrix.dtype) if total > 0 else None


def simplex_quadratic_min(matrix: Tensor, max_iterations: int = 20000, tolerance: float = GAP_TOLERANCE,
                          check_every: int = 50) -> tuple[Tensor, Tensor]:
    """argmin_{x >= 0, sum x = 1} x^T M x for a batch of PSD matrices [B, J, J], solved to optimality.

    Each problem is first solved by non-negative least squares (:func:`_nnls_simplex`); the problems its
    answer does not certify go on to accelerated projected gradient (Beck & Teboulle, FISTA, 2009) with
    adaptive restart (O'Donoghue & Candes, 2015), which finds the support; every ``check_every`` steps an
    active-set solve of the KKT system starts from each unsolved problem's current support
    (:func:`_active_set`). A problem is done when
    the Frank-Wolfe duality gap (a bound on the distance to the optimal objective) of its best point is
    at most ``tolerance`` times its objective (or below rounding, ``GAP_FLOOR``).
    Returns the weights [B, J] and the relative gaps [B] reached (<= ``tolerance`` unless
    ``max_iterations`` ran out); NaN weights and an infinite gap for a matrix with non-finite entries.
    """
    batch, size = matrix.shape[0], matrix.shape[1]
    finite = torch.isfinite(matrix).flatten(1).all(dim=1)
    if not bool(finite.all()):  # overflowed weights (e.g. a cumulative weight beyond 1e308): no blend
        weights = torch.full((batch, size), float("nan"), dtype=matrix.dtype)
        gaps = torch.full((batch,), float("inf"), dtype=matrix.dtype)
        if bool(finite.any()):
            weights[finite], gaps[finite] = simplex_quadratic_min(matrix[finite], max_iterations, tolerance,
                                                                  check_every)
        return weights, gaps
    try:
        scale = torch.linalg.eigvalsh(matrix).amax(dim=1).clamp(min=1e-300)  # [B]
    except torch.linalg.LinAlgError:  # type: ignore[attr-defined]  # no convergence: the trace bounds lambda_max
        scale = torch.diagonal(matrix, dim1=1, dim2=2).sum(dim=1).clamp(min=1e-300)
    m = matrix / scale.reshape(-1, 1, 1)  # eigenvalues in [0, 1]; the minimizer is unchanged
    x = torch.full((batch, size), 1.0 / size, dtype=matrix.dtype)
    y, t = x.clone(), torch.ones(batch, dtype=matrix.dtype)
    best, done = x.clone(), torch.zeros(batch, dtype=torch.bool)
    gaps = torch.full((batch,), float("inf"), dtype=matrix.dtype)

    def relative_gap(points: Tensor, rows: Tensor) -> Tensor:
        sub = m[rows]
        gap = duality_gap(sub, points).clamp(min=0.0)
        return torch.where(gap <= GAP_FLOOR, torch.zeros_like(gap), gap / _objective(sub, points).clamp(min=1e-300))

    for row in range(batch):
        exact = _nnls_simplex(m[row])
        if exact is not None:
            gaps[row:row + 1] = relative_gap(exact.unsqueeze(0), torch.tensor([row]))
            best[row] = exact
            done[row] = bool(gaps[row] <= tolerance)
    for step in range(max_iterations if not bool(done.all()) else 0):
        grad = 2.0 * torch.bmm(m, y.unsqueeze(2)).squeeze(2)
        x_next = project_to_simplex(y - grad / 2.0)  # step 1/L, L = 2 * largest eigenvalue = 2
        restart = _objective(m, x_next) > _objective(m, x)
        t = torch.where(restart, torch.ones_like(t), t)
        t_next = (1.0 + torch.sqrt(1.0 + 4.0 * t * t)) / 2.0
        momentum = torch.where(restart, torch.zeros_like(t), (t - 1.0) / t_next).unsqueeze(1)
        y = x_next + momentum * (x_next - x)
        x, t = x_next, t_next
        if step % check_every and step != max_iterations - 1:
            continue
        for row in torch.nonzero(~done).squeeze(1).tolist():
            candidates = [x[row]]
            exact = _active_set(m[row], x[row])
            if exact is not None:
                candidates.append(exact)
            for point in candidates:
                gap = float(relative_gap(point.unsqueeze(0), torch.tensor([row]))[0])
                if gap < float(gaps[row]):
                    gaps[row], best[row] = gap, point
            done[row] = bool(gaps[row] <= tolerance)
        if bool(done.all()):
            break
    return best, gaps


def project_to_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of each row of ``v`` [B, J] onto the probability simplex
    (Duchi, Shalev-Shwartz, Singer & Chandra, ICML 2008, Fig. 1)."""
    u, _ = torch.sort(v, dim=1, descending=True)
    css = torch.cumsum(u, dim=1) - 1.0
    k = torch.arange(1, v.shape[1] + 1, dtype=v.dtype)
    support = (u - css / k) > 0
    last = support.sum(dim=1, keepdim=True) - 1  # the support is a prefix of the sorted values
    theta = css.gather(1, last) / (last + 1).to(v.dtype)
    return torch.clamp(v - theta, min=0.0)
