"""Q(s, a) over state and item features, scored for a whole candidate set at once (parametric actions)."""

from __future__ import annotations

import torch
from torch import nn


class ParametricQNetwork(nn.Module):
    """Q(s, a_k) = body([x_s, x_{a_k}]) for each candidate k: state input float32[B, S] and candidate inputs
    float32[B, K, A] -> float32[B, K]. ``body`` maps [..., S + A] to [..., 1] (an MLP)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        k = items.shape[1]
        pairs = torch.cat([state.unsqueeze(1).expand(-1, k, -1), items], dim=2)
        b = pairs.shape[0]
        out: torch.Tensor = self.body(pairs.reshape(b * k, -1)).reshape(b, k)
        return out

    def single(self, state: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Q(s, a) for one item per row: float32[B, S], float32[B, A] -> float32[B]."""
        return self.forward(state, item.unsqueeze(1)).squeeze(1)
