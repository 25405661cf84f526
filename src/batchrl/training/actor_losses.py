"""Policy losses on logged actions: advantage-weighted extraction (discrete CRR and IQL) and plain
behaviour cloning (BCQ's imitator, DQN's auxiliary imitation head).

Both fit an actor pi(a|s) = softmax over possible actions of its logits by weighted behaviour cloning
(Peng et al. 2019, "Advantage-Weighted Regression"):

    loss = mean_rows -w(s, a) log pi(a_logged | s),   w = f(A(s, a_logged)) >= 0, no gradient

so the actor imitates the logged actions that the critic rates above the state's value and never
puts weight on actions the data does not contain.
"""

from __future__ import annotations

import torch
from torch import Tensor

from batchrl.models.policy import effective_mask


def masked_log_policy(logits: Tensor, possible: Tensor, action: Tensor | None = None) -> Tensor:
    """log pi(.|s) [B, A] over the possible actions (the logged ``action`` always counts as possible)."""
    mask = effective_mask(possible)
    if action is not None:
        mask = mask.scatter(1, action.unsqueeze(1), True)
    return torch.log_softmax(logits.float().masked_fill(~mask, float("-inf")), dim=1)


def imitation_loss(logits: Tensor, action: Tensor, possible: Tensor, logit_penalty: float = 0.0) -> Tensor:
    """Behaviour cloning of the logged actions (BCQ's imitator, DQN's auxiliary imitation head):

        mean_rows -log pi(a_logged | s) + logit_penalty * mean(logits^2)

    with pi the softmax of ``logits`` over the possible actions; the penalty keeps the logits small
    (a flatter pi)."""
    loss = -masked_log_policy(logits, possible, action).gather(1, action.unsqueeze(1)).mean()
    return loss + logit_penalty * logits.float().pow(2).mean() if logit_penalty else loss


def exp_advantage_weight(advantage: Tensor, beta: float, max_weight: float) -> Tensor:
    """w = min(exp(A / beta), max_weight) (CRR "exp"; IQL with beta = 1 / its inverse temperature)."""
    return torch.exp(advantage / beta).clamp(max=max_weight)


def binary_advantage_weight(advantage: Tensor) -> Tensor:
    """w = 1[A > 0] (CRR "binary": filtered behaviour cloning)."""
    return (advantage > 0).float()


def weighted_log_likelihood_loss(logits: Tensor, action: Tensor, possible: Tensor, weight: Tensor) -> Tensor:
    """Per-row -w log pi(a_logged|s) ([B]); ``weight`` [B] carries no gradient."""
    log_pi = masked_log_policy(logits, possible, action).gather(1, action.unsqueeze(1)).squeeze(1)
    return -weight.detach() * log_pi
