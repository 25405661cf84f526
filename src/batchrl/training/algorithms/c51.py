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
from torch import Tensor

from batchrl.config import C51TrainerParameters, DiscreteC51DQNModel
from batchrl.models.builders import categorical_network
from batchrl.models.distributional import CategoricalMean
from batchrl.training.algorithms.distributional import DistributionalDQNTrainer, categorical_projection
from batchrl.training.trainer import BuildContext


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


def build(model: DiscreteC51DQNModel, context: BuildContext) -> DistributionalDQNTrainer:
    """DiscreteC51DQN: a categorical network from ``net_builder`` (``num_atoms`` atoms on [qmin, qmax])."""
    params = model.trainer_param
    network = categorical_network(model.net_builder, context.input_dim, context.action_dim, params.qmin,
                                  params.qmax, params.num_atoms)
    return c51_trainer(network, params, device=context.device, amp_dtype=context.amp_dtype)
