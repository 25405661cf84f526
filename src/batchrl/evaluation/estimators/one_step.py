"""One-step (contextual-bandit) estimators of a target policy's expected immediate reward.

Notation, per eval row i of n: context x_i, logged action a_i, logged reward r_i, logging propensity
mu_i = mu(a_i|x_i), target policy pi(.|x_i) (shape [A]), reward model r_hat(x_i, .) (shape [A]),
importance weight w_i = pi(a_i|x_i) / mu_i and direct-method term DM_i = sum_a pi(a|x_i) r_hat(x_i, a).
Each function returns per-row :class:`~batchrl.evaluation.estimators.core.Terms`; the value, the
normalization by the mean logged reward and the bootstrap interval come from shared code.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from batchrl.evaluation.estimators.core import ALPHA, Pivots, Terms


def importance_weights(target_probs: Tensor, action: Tensor, propensity: Tensor) -> Tensor:
    """w_i = pi(a_i|x_i) / mu(a_i|x_i); [N] float64 from ``target_probs`` [N, A], ``action`` [N],
    ``propensity`` [N]."""
    pi_logged = target_probs.to(torch.float64).gather(1, action.long().reshape(-1, 1)).squeeze(1)
    return pi_logged / propensity.to(torch.float64)


def direct_method_values(target_probs: Tensor, reward_hat: Tensor) -> Tensor:
    """DM_i = sum_a pi(a|x_i) r_hat(x_i, a); [N]."""
    return (target_probs.to(torch.float64) * reward_hat.to(torch.float64)).sum(dim=1)


def logged_reward_terms(reward: Tensor) -> Terms:
    """The logging policy's value: mean_i r_i (the baseline of every one-step normalization)."""
    return Terms.mean_of(reward)


def direct_method_terms(target_probs: Tensor, reward_hat: Tensor) -> Terms:
    """Direct Method: V = (1/n) sum_i sum_a pi(a|x_i) r_hat(x_i, a).

    Low variance; biased by whatever the reward model gets wrong, and blind to it.
    Dudik, Langford & Li, "Doubly Robust Policy Evaluation and Learning", ICML 2011, sec. 2.
    """
    return Terms.mean_of(direct_method_values(target_probs, reward_hat))


def ips_terms(weights: Tensor, reward: Tensor) -> Terms:
    """Inverse propensity scoring: V = (1/n) sum_i w_i r_i.

    Unbiased when mu_i > 0 wherever pi puts mass; variance grows with the weights.
    Horvitz & Thompson, JASA 1952; for policies: Precup, Sutton & Singh, ICML 2000.
    """
    return Terms.mean_of(weights * reward.to(torch.float64))


def ips_design_variance(target_probs: Tensor, logging_probs: Tensor, reward_hat: Tensor, reward: Tensor,
                        action: Tensor) -> float:
    """Var(w r) of one IPS term over the logging policy's draws, from mu of every action (design-based).

    With the logged contexts x_i fixed and the action drawn from mu(.|x_i):
    E[(w r)^2 | x] = sum_a pi(a|x)^2 / mu(a|x) E[r^2 | x, a] and E[w r | x] = sum_a pi(a|x) r_bar(x, a), so

        Var(w r) = (1/n) sum_i sum_a pi_ia^2 / mu_ia (r_hat_ia^2 + s^2) - ((1/n) sum_i sum_a pi_ia r_hat_ia)^2,

    with E[r^2 | x, a] estimated by r_hat^2 plus the mean squared residual s^2 = (1/n) sum_i (r_i -
    r_hat(x_i, a_i))^2; for binary rewards (every logged reward 0 or 1, r_hat in [0, 1]) E[r^2 | x, a] =
    E[r | x, a] = r_hat exactly (a pooled s^2 would charge the target's actions, whose click probabilities
    are often near 0 or 1, the logged actions' larger Bernoulli variance). The sample variance of the w_i r_i sees only the actions that were drawn: where
    the weights are heavy-tailed a dataset that missed the rare large weights has a small sample variance
    and an IPS estimate that is too low, and a t-interval on it misses (the Horvitz-Thompson estimator's
    design-based variance, Horvitz & Thompson 1952, uses the known inclusion probabilities for the same
    reason). Infinite where pi puts mass on an action mu never takes.
    """
    pi = target_probs.to(torch.float64)
    mu = logging_probs.to(torch.float64)
    r_hat = reward_hat.to(torch.float64)
    if bool(((mu <= 0) & (pi > 0)).any()):
        return float("inf")
    r = reward.to(torch.float64)
    if bool(((r == 0) | (r == 1)).all()) and bool(((r_hat >= 0) & (r_hat <= 1)).all()):
        reward_square = r_hat  # Bernoulli: r^2 = r
    else:
        r_hat_logged = r_hat.gather(1, action.long().reshape(-1, 1)).squeeze(1)
        reward_square = r_hat * r_hat + float(((r - r_hat_logged) ** 2).mean())
    ratio = torch.where(pi > 0, pi * pi / torch.where(mu > 0, mu, torch.ones_like(mu)), torch.zeros_like(pi))
    second_moment = float((ratio * reward_square).sum(dim=1).mean())
    value = float((pi * r_hat).sum(dim=1).mean())
    return max(second_moment - value * value, 0.0)


def ips_design_pivots(target_probs: Tensor, logging_probs: Tensor, reward_hat: Tensor, reward: Tensor,
                      action: Tensor, replicates: int, seed: int, chunk: int = 16) -> Pivots:
    """Quantiles of IPS's studentized error over the logging policy's draws (a design-based bootstrap-t).

    The logged contexts x_i stay fixed; each of ``replicates`` replicate logs draws a_i* ~ mu(.|x_i) and
    r_i* from the reward model: Bernoulli(r_hat(x_i, a_i*)) for binary rewards (every logged reward 0 or 1,
    r_hat in [0, 1]), else r_hat(x_i, a_i*) plus a logged residual r_j - r_hat(x_j, a_j) drawn at random. On
    each, with terms x_i* = w_i* r_i* and the logged reward b_i* = r_i*,

        T* = (mean x* - v) / (sd x* / sqrt n),   v = (1/n) sum_i sum_a pi_ia r_hat_ia,
        T_R* = (R* - v / b) / (sd z* / sqrt n),  R* = mean x* / mean b*,  z_i* = (x_i* - R* b_i*) / mean b*,
        b = (1/n) sum_i sum_a mu_ia r_hat_ia,

    and the 2.5% and 97.5% quantiles of T* and T_R* replace Student's -t and +t in
    :func:`.core.t_interval` (the interval is x_bar - q_hi se .. x_bar - q_lo se). Where the weights are
    heavy-tailed, a log that misses the rare large weights has both a low estimate and a small sample
    spread, which a t-interval takes at face value; the replicates show how often and by how much, and
    the interval stretches upwards accordingly (the bootstrap-t, Efron & Tibshirani, *An Introduction to
    the Bootstrap*, 1993, ch. 12, with replicates drawn from the known design as in Horvitz-Thompson
    estimation). Infinite quantiles where pi puts mass on an action mu never takes.
    """
    pi = target_probs.to(torch.float64)
    mu = logging_probs.to(torch.float64)
    r_hat = reward_hat.to(torch.float64)
    r = reward.to(torch.float64)
    n, actions = pi.shape
    if bool(((mu <= 0) & (pi > 0)).any()):
        return Pivots((-float("inf"), float("inf")), (-float("inf"), float("inf")))
    binary = bool(((r == 0) | (r == 1)).all()) and bool(((r_hat >= 0) & (r_hat <= 1)).all())
    residuals = r - r_hat.gather(1, action.long().reshape(-1, 1)).squeeze(1)
    value = float((pi * r_hat).sum(dim=1).mean())
    base = float((mu * r_hat).sum(dim=1).mean())
    generator = torch.Generator().manual_seed(seed)
    cumulative = torch.cumsum(mu, dim=1)
    rows = torch.arange(n)
    raw, ratio = [], []
    for start in range(0, replicates, chunk):
        size = min(chunk, replicates - start)
        u = torch.rand(n, size, generator=generator, dtype=torch.float64)
        drawn = torch.searchsorted(cumulative, u).clamp(max=actions - 1).T  # [B, n]: first a with F(a) >= u
        mean_reward = r_hat[rows.unsqueeze(0), drawn]
        if binary:
            rewards = (torch.rand(size, n, generator=generator, dtype=torch.float64) < mean_reward).double()
        else:
            noise = residuals[torch.randint(n, (size, n), generator=generator)]
            rewards = mean_reward + noise
        terms = pi[rows.unsqueeze(0), drawn] / mu[rows.unsqueeze(0), drawn] * rewards
        x_bar, b_bar = terms.mean(dim=1), rewards.mean(dim=1)
        raw.append((x_bar - value) / (terms.std(dim=1) / n ** 0.5))
        r_star = x_bar / b_bar
        z = (terms - r_star.unsqueeze(1) * rewards) / b_bar.unsqueeze(1)
        ratio.append((r_star - value / base) / (z.std(dim=1) / n ** 0.5))
    return Pivots(_quantiles(torch.cat(raw)), _quantiles(torch.cat(ratio)))


def _quantiles(pivots: Tensor) -> tuple[float, float]:
    """The ALPHA/2 and 1 - ALPHA/2 quantiles of the finite pivots (NaN where none is finite)."""
    finite = pivots[torch.isfinite(pivots)].numpy()
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [ALPHA / 2, 1 - ALPHA / 2])
    return float(low), float(high)


def snips_terms(weights: Tensor, reward: Tensor) -> Terms:
    """Self-normalized IPS: V = sum_i w_i r_i / sum_i w_i.

    Biased (consistent), bounded by the range of the rewards, usually far lower variance than IPS.
    Swaminathan & Joachims, "The Self-Normalized Estimator for Counterfactual Learning", NeurIPS 2015.
    """
    return Terms(weights.reshape(-1, 1) * reward.to(torch.float64).reshape(-1, 1), weights.reshape(-1, 1))


def doubly_robust_terms(weights: Tensor, reward: Tensor, action: Tensor, target_probs: Tensor,
                        reward_hat: Tensor) -> Terms:
    """Doubly robust: V = (1/n) sum_i [w_i (r_i - r_hat(x_i, a_i)) + DM_i].

    Unbiased if either the propensities or the reward model are right; variance of IPS on the
    reward model's residuals. Dudik, Langford & Li, ICML 2011, eq. (2).
    """
    r_hat_logged = reward_hat.to(torch.float64).gather(1, action.long().reshape(-1, 1)).squeeze(1)
    residual = reward.to(torch.float64) - r_hat_logged
    return Terms.mean_of(weights * residual + direct_method_values(target_probs, reward_hat))


def switch_terms(weights: Tensor, reward: Tensor, action: Tensor, target_probs: Tensor, reward_hat: Tensor,
                 logging_probs: Tensor, threshold: float) -> Terms:
    """Switch: IPS on the actions whose weight is small, the reward model on the rest.

    V = (1/n) sum_i [w_i r_i 1(a_i not in S_i) + sum_{a in S_i} pi(a|x_i) r_hat(x_i, a)],
    S_i = {a : pi(a|x_i) / mu(a|x_i) > tau}. tau trades the variance of large weights for the reward
    model's bias. The rule S_i is evaluated with ``logging_probs`` [N, A] for every action, the logged
    one included, so the two parts split the actions the same way whatever was logged: the estimate is
    unbiased up to the reward model's error on S, even when ``logging_probs`` is a model of mu (from
    :mod:`batchrl.evaluation.logging_policy`); the weight w_i itself uses the logged propensity.
    Wang, Agarwal & Dudik, "Optimal and Adaptive Off-policy Evaluation in Contextual Bandits",
    ICML 2017, sec. 4.
    """
    pi = target_probs.to(torch.float64)
    mu = logging_probs.to(torch.float64)
    ratio = torch.where(mu > 0, pi / torch.where(mu > 0, mu, torch.ones_like(mu)),
                        torch.where(pi > 0, torch.full_like(pi, float("inf")), torch.zeros_like(pi)))
    switched = ratio > threshold
    model_part = (pi * reward_hat.to(torch.float64) * switched).sum(dim=1)
    logged_switched = switched.gather(1, action.long().reshape(-1, 1)).squeeze(1)
    ips_part = weights * reward.to(torch.float64) * ~logged_switched
    return Terms.mean_of(ips_part + model_part)


def switch_dr_terms(weights: Tensor, reward: Tensor, action: Tensor, target_probs: Tensor,
                    reward_hat: Tensor, threshold: float) -> Terms:
    """Switch-DR: doubly robust where the weight is small, the reward model where it is large.

    V = (1/n) sum_i [DM_i + 1(w_i <= tau) w_i (r_i - r_hat(x_i, a_i))], which equals the DR term on
    actions with pi/mu <= tau plus the DM term on the rest. Wang, Agarwal & Dudik, ICML 2017, sec. 4.
    """
    r_hat_logged = reward_hat.to(torch.float64).gather(1, action.long().reshape(-1, 1)).squeeze(1)
    correction = (weights <= threshold) * weights * (reward.to(torch.float64) - r_hat_logged)
    return Terms.mean_of(direct_method_values(target_probs, reward_hat) + correction)
