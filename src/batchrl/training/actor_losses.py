"""Advantage-weighted policy extraction shared by discrete CRR and IQL.

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
