"""Heads used by the offline actor-critic and BCQ trainers; all script with TorchScript.

- ``StateValue``: V(s) ``[B]`` from a body with one output (IQL's value network).
- ``BCQScores``: discrete BCQ's greedy scores (Fujimoto et al. 2019): Q(s, a) where the imitator
  (behaviour cloning) probability is at least ``threshold`` times the most likely action's, and
  ``FILTERED_SCORE`` elsewhere, so argmax (and a softmax over the scores) only picks supported actions.
"""

from __future__ import annotations

import torch
from torch import nn

#: Score of actions BCQ filters out (the same value DQN gives impossible actions).
FILTERED_SCORE = -1e9


class StateValue(nn.Module):
    """V(s) = body(x)[:, 0]."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value: torch.Tensor = self.body(x)
        return value.float()[:, 0]


def bcq_allowed(imitator_logits: torch.Tensor, threshold: float, possible: torch.Tensor | None = None) -> torch.Tensor:
    """bool [B, A]: pi_b(a|s) / max_a' pi_b(a'|s) >= threshold, pi_b = softmax of the imitator logits over
    the ``possible`` actions (all when None); the most likely possible action is always allowed."""
    logits = imitator_logits.float()
    if possible is not None:
        logits = logits.masked_fill(~possible, float("-inf"))
    probs = torch.softmax(logits, dim=1)
    allowed = probs >= threshold * probs.max(dim=1, keepdim=True).values
    if possible is not None:
        allowed = allowed & possible
    return allowed


class BCQScores(nn.Module):
    """Q(s, a) for allowed actions, ``FILTERED_SCORE`` for the others (float32 [B, A])."""

    def __init__(self, q_network: nn.Module, imitator: nn.Module, threshold: float):
        super().__init__()
        self.q_network = q_network
        self.imitator = imitator
        self.threshold = threshold
        self.filtered_score = FILTERED_SCORE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q: torch.Tensor = self.q_network(x)
        q = q.float()
        allowed = bcq_allowed(self.imitator(x), self.threshold)
        return q.masked_fill(~allowed, self.filtered_score)
