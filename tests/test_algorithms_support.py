"""Helpers for the algorithm tests: table networks over one-hot states and a hand-made batch."""

from __future__ import annotations

import torch
from torch import nn

from batchrl.data.loader import Batch


def table_network(values: list[list[float]]) -> nn.Linear:
    """A linear layer whose output for one-hot state s is ``values[s]`` (a flat row per state)."""
    net = nn.Linear(len(values), len(values[0]), bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor(values, dtype=torch.float32).T)
    return net


def one_hot(indices: list[int], n: int = 3) -> torch.Tensor:
    return torch.eye(n)[indices]


def batch(state: list[int], action: list[int], reward: list[float], next_state: list[int], *, num_actions: int = 2,
          not_terminal: list[bool] | None = None, possible_next: list[list[int]] | None = None,
          possible: list[list[int]] | None = None, next_action: list[int] | None = None, n: int = 3) -> Batch:
    rows = len(state)
    return Batch(
        state=one_hot(state, n), state_presence=None, next_state=one_hot(next_state, n), next_state_presence=None,
        action=torch.tensor(action), next_action=torch.tensor(next_action or [0] * rows),
        reward=torch.tensor(reward, dtype=torch.float32),
        possible_actions_mask=torch.tensor(possible, dtype=torch.bool) if possible
        else torch.ones(rows, num_actions, dtype=torch.bool),
        possible_next_actions_mask=torch.tensor(possible_next, dtype=torch.bool) if possible_next
        else torch.ones(rows, num_actions, dtype=torch.bool),
        not_terminal=torch.tensor(not_terminal if not_terminal is not None else [True] * rows),
        action_probability=torch.full((rows,), 1.0 / num_actions), step=torch.ones(rows, dtype=torch.long),
        time_diff=torch.ones(rows, dtype=torch.long))
