"""Distributional Q-network heads and the scoring wrappers exported for serving.

``AtomNetwork`` reshapes a body's ``[B, A * N]`` output into ``[B, A, N]``: N quantiles per action
(QR-DQN) or N logits of a categorical distribution over fixed atoms (C51). ``QuantileMean`` and
``CategoricalMean`` turn it into Q-values ``[B, A]`` (mean of the quantiles; expectation over the
atoms), which is what is exported (spec section 8) and what greedy evaluation and CPE read. All
script with TorchScript.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn


def categorical_support(qmin: float, qmax: float, num_atoms: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The atoms z_k = qmin + k (qmax - qmin) / (N - 1), k = 0..N-1 (float [N])."""
    return torch.linspace(qmin, qmax, num_atoms, device=device, dtype=torch.float32)


class AtomNetwork(nn.Module):
    """body(x) ``[B, A * N]`` -> ``[B, A, N]``."""

    def __init__(self, body: nn.Module, num_actions: int, num_atoms: int):
        super().__init__()
        self.body = body
        self.num_actions = num_actions
        self.num_atoms = num_atoms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat: torch.Tensor = self.body(x)
        return flat.reshape(x.shape[0], self.num_actions, self.num_atoms)


class QuantileMean(nn.Module):
    """Q(s, a) = (1/N) sum_i theta_i(s, a) over the N quantiles of ``atoms``."""

    def __init__(self, atoms: AtomNetwork):
        super().__init__()
        self.atoms = atoms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        atoms: torch.Tensor = self.atoms(x)
        return atoms.float().mean(dim=2)


class CategoricalMean(nn.Module):
    """Q(s, a) = sum_k softmax(logits(s, a))_k z_k over the fixed atoms z (``support``, float [N])."""

    if TYPE_CHECKING:  # a buffer, declared for the type checker (TorchScript infers it)
        support: torch.Tensor

    def __init__(self, atoms: AtomNetwork, support: torch.Tensor):
        super().__init__()
        self.atoms = atoms
        self.register_buffer("support", support.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.atoms(x).float(), dim=2)
        return (probs * self.support).sum(dim=2)
