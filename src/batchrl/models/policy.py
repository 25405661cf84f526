"""Policies from Q-values over possible actions: masked greedy and masked softmax.

A mask row with no possible action at all means "not recorded" and is read as "every action".
"""

from __future__ import annotations

import torch


def effective_mask(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` (bool [B, A]) with all-False rows replaced by all-True rows."""
    mask = mask.bool()
    return mask | ~mask.any(dim=1, keepdim=True)


def masked_argmax(q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Greedy action index per row among possible actions: argmax_a {Q(s, a) : mask(a)} (long [B])."""
    return q.masked_fill(~effective_mask(mask), float("-inf")).argmax(dim=1)


def masked_softmax(q: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """pi(a|s) = exp(Q(s,a)/T) / sum_{a' possible} exp(Q(s,a')/T) over possible actions, 0 elsewhere."""
    logits = (q.float() / temperature).masked_fill(~effective_mask(mask), float("-inf"))
    return torch.softmax(logits, dim=1)
