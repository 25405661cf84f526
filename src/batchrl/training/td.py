"""Temporal-difference math shared by the discrete trainers (DQN, CQL, QR-DQN, C51, BCQ, CRR, IQL) and
the CPE models (spec section 6), with possible-action masks (impossible next actions get -1e9):

    r'    = r + boost[a]                                      reward boost per action (optional)
    d     = gamma | gamma ** (time_diff / unit) | gamma ** step   the three discount modes
    v(s') = Q_T(s', argmax_{a' possible} Q(s', a'))           double Q (van Hasselt et al. 2016)
          | max_{a' possible} Q_T(s', a')                      max-Q (Mnih et al. 2015)
          | Q_T(s', a'_logged)                                 SARSA (maxq_learning: false)
    y     = r' + d * not_terminal * v(s')
    loss  = l(Q(s, a_logged) - y),  l = squared error (mse) | Huber (delta 1)
    L_tau(u) = |tau - 1[u < 0]| u^2                            expectile regression (IQL's value, both kinds)

An all-False possible-actions row means "not recorded" (every action). Pure functions over tensors.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from batchrl.config import RLParameters
from batchrl.models.policy import effective_mask

#: Value given to impossible actions before the max/argmax over next actions.
IMPOSSIBLE_ACTION_VALUE = -1e9


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """Per-row asymmetric squared loss |tau - 1[u < 0]| u^2 of u = ``diff`` [B] (tau = ``expectile``): its
    minimizer over a constant V is the tau-expectile of the targets (tau = 0.5: the mean)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff * diff


def discount(rl: RLParameters, step: Tensor, time_diff: Tensor) -> Tensor:
    """Per-row discount: gamma ** (time_diff / time_diff_unit_length) with
    ``use_seq_num_diff_as_time_diff``, gamma ** step with ``multi_steps``, else gamma."""
    if rl.use_seq_num_diff_as_time_diff:
        exponent = time_diff.double() / rl.time_diff_unit_length
    elif rl.multi_steps is not None:
        exponent = step.double()
    else:
        return torch.full(step.shape, rl.gamma, dtype=torch.float32, device=step.device)
    return torch.pow(torch.tensor(rl.gamma, dtype=torch.float64, device=step.device), exponent).float()


def reward_boost_vector(rl: RLParameters, actions: list[str], device: torch.device) -> Tensor | None:
    """``rl.reward_boost`` (action name -> boost) as a float [A] tensor in action order; None if unset."""
    boost = rl.reward_boost or {}
    return torch.tensor([boost.get(a, 0.0) for a in actions], device=device) if boost else None


def boosted_reward(reward: Tensor, action: Tensor, boost: Tensor | None) -> Tensor:
    """r + boost[a] (``boost`` float [A], or None for no boost)."""
    return reward if boost is None else reward + boost[action]


def next_state_value(q_next: Tensor, q_next_target: Tensor, possible_next: Tensor, next_action: Tensor,
                     *, double_q: bool, maxq: bool) -> Tensor:
    """v(s') of the module docstring, before the not_terminal factor.

    Args:
        q_next: [B, A] online Q(s', .) (used by double Q to pick a*).
        q_next_target: [B, A] target Q_T(s', .).
        possible_next: [B, A] bool possible next actions.
        next_action: [B] long logged next action (SARSA); A = none.
    """
    num_actions = q_next_target.shape[1]
    if not maxq:
        has_next = next_action < num_actions
        chosen = next_action.clamp(max=num_actions - 1).unsqueeze(1)
        return torch.where(has_next, q_next_target.gather(1, chosen).squeeze(1), 0.0)
    mask = effective_mask(possible_next)
    if double_q:
        best = q_next.masked_fill(~mask, IMPOSSIBLE_ACTION_VALUE).argmax(dim=1, keepdim=True)
        return q_next_target.gather(1, best).squeeze(1)
    return q_next_target.masked_fill(~mask, IMPOSSIBLE_ACTION_VALUE).max(dim=1).values


def td_target(reward: Tensor, gamma_d: Tensor, not_terminal: Tensor, value: Tensor) -> Tensor:
    """y = r + d * not_terminal * v(s')."""
    return reward + gamma_d * not_terminal.float() * value


def q_loss(predicted: Tensor, target: Tensor, kind: str) -> Tensor:
    """Per-row loss: squared error (``mse``) or Huber with delta 1 (``huber``)."""
    if kind == "huber":
        return F.huber_loss(predicted, target, reduction="none", delta=1.0)
    return F.mse_loss(predicted, target, reduction="none")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[None]:
    """Mixed precision on CUDA when ``dtype`` is set; a no-op otherwise."""
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)
