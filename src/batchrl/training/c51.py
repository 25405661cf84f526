"""C51 (Bellemare et al. 2017, "A Distributional Perspective on Reinforcement Learning"), discrete actions.

The network outputs logits of a categorical distribution over N fixed atoms z (qmin..qmax) per
action; Q(s, a) = sum_k p_k(s, a) z_k.

    a*   = argmax_{a' possible} Q(s', a')                 (online network with double Q, else target)
    m    = Phi(r' + d * not_terminal * Z_T(s', a*))        projection onto the atoms
    loss = mean_rows -sum_k m_k log p_k(s, a_logged)       cross-entropy

Returns outside [qmin, qmax] are clipped to the end atoms, so the support must cover the returns
(CartPole with gamma 0.99: 0..100). The exported model returns the expectation over atoms.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from batchrl.config import C51TrainerParameters
from batchrl.models.distributional import AtomNetwork, CategoricalMean
from batchrl.training.distributional import (
    DistributionalDQNTrainer,
    categorical_projection,
    categorical_support,
)


def categorical_network(body: nn.Module, num_actions: int, params: C51TrainerParameters) -> CategoricalMean:
    """Q-values [B, A] as the expectation of ``body``'s [B, A * N] logits over the configured atoms."""
    support = categorical_support(params.qmin, params.qmax, params.num_atoms)
    return CategoricalMean(AtomNetwork(body, num_actions, params.num_atoms), support)


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """-sum_k target_k log softmax(logits)_k per row ([B, N] each -> [B])."""
    return -(target * torch.log_softmax(logits, dim=1)).sum(dim=1)


def c51_trainer(q_network: CategoricalMean, params: C51TrainerParameters, *, device: torch.device | str = "cpu",
                amp_dtype: torch.dtype | None = None) -> DistributionalDQNTrainer:
    """A :class:`DistributionalDQNTrainer` with the projected categorical target and cross-entropy."""
    support = q_network.support

    def target(next_logits: Tensor, reward: Tensor, scale: Tensor) -> Tensor:
        return categorical_projection(torch.softmax(next_logits, dim=1), reward, scale, support.to(reward.device))

    return DistributionalDQNTrainer(q_network, params, target, cross_entropy, device=device, amp_dtype=amp_dtype)
