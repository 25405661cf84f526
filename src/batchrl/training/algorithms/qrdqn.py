"""QR-DQN (Dabney et al. 2018, "Distributional RL with Quantile Regression"), discrete actions.

The network outputs N quantiles theta_i(s, a) at levels tau_i = (2i + 1) / (2N); Q(s, a) = mean_i theta_i.

    a*      = argmax_{a' possible} Q(s', a')            (online network with double Q, else target)
    T theta = r' + d * not_terminal * theta_T(s', a*)   N target samples
    loss    = mean_rows quantile_huber(theta(s, a_logged), T theta, tau, kappa)

The quantile regression loss is less sensitive to the reward scale than the squared TD error; the
exported model returns the mean over quantiles (spec section 8).
"""

from __future__ import annotations

import torch
from torch import Tensor

from batchrl.config import DiscreteQRDQNModel, QRDQNTrainerParameters
from batchrl.models.builders import quantile_network
from batchrl.models.distributional import QuantileMean
from batchrl.training.algorithms.distributional import (
    DistributionalDQNTrainer,
    quantile_huber_loss,
    quantile_midpoints,
)
from batchrl.training.trainer import BuildContext


def qrdqn_trainer(q_network: QuantileMean, params: QRDQNTrainerParameters, *, device: torch.device | str = "cpu",
                  amp_dtype: torch.dtype | None = None) -> DistributionalDQNTrainer:
    """A :class:`DistributionalDQNTrainer` with the quantile target and loss."""
    tau = quantile_midpoints(params.num_atoms, device)

    def target(next_quantiles: Tensor, reward: Tensor, scale: Tensor) -> Tensor:
        return reward.unsqueeze(1) + scale.unsqueeze(1) * next_quantiles

    def loss(quantiles: Tensor, target_samples: Tensor) -> Tensor:
        return quantile_huber_loss(quantiles, target_samples, tau, params.huber_kappa)

    return DistributionalDQNTrainer(q_network, params, target, loss, device=device, amp_dtype=amp_dtype)


def build(model: DiscreteQRDQNModel, context: BuildContext) -> DistributionalDQNTrainer:
    """DiscreteQRDQN: a quantile network from ``net_builder`` (``num_atoms`` quantiles per action)."""
    params = model.trainer_param
    network = quantile_network(model.net_builder, context.input_dim, context.action_dim, params.num_atoms)
    return qrdqn_trainer(network, params, device=context.device, amp_dtype=context.amp_dtype)
