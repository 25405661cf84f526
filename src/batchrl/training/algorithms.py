"""Build the trainer a model block names: networks from its builders, then the algorithm's trainer.

Every trainer has the same interface (``update``, ``evaluate``, ``state_dict``/``load_state_dict``,
``learning_rate``, ``q_network``: state -> scores [B, A] that are exported, evaluated greedily and fed
to CPE), so the loop, checkpoints, CPE and export do not depend on the algorithm.
"""

from __future__ import annotations

import torch

from batchrl.config import (
    DiscreteBCQModel,
    DiscreteC51DQNModel,
    DiscreteCRRModel,
    DiscreteIQLModel,
    DiscreteQRDQNModel,
)
from batchrl.models.builders import build_network
from batchrl.models.heads import StateValue
from batchrl.training.bcq import BCQTrainer
from batchrl.training.c51 import c51_trainer, categorical_network
from batchrl.training.crr import CRRTrainer
from batchrl.training.iql import IQLTrainer
from batchrl.training.qrdqn import qrdqn_trainer, quantile_network

AlgorithmModel = DiscreteQRDQNModel | DiscreteC51DQNModel | DiscreteBCQModel | DiscreteCRRModel | DiscreteIQLModel


def build_algorithm_trainer(model: AlgorithmModel, input_dim: int, *, device: torch.device | str = "cpu",
                            amp_dtype: torch.dtype | None = None):
    """The trainer of ``model`` with freshly initialized networks (seed torch before calling)."""
    params = model.trainer_param
    num_actions = len(params.actions)
    if isinstance(model, DiscreteQRDQNModel):
        body = build_network(model.net_builder, input_dim, num_actions * params.num_atoms)
        return qrdqn_trainer(quantile_network(body, num_actions, params.num_atoms), params, device=device,
                             amp_dtype=amp_dtype)
    if isinstance(model, DiscreteC51DQNModel):
        body = build_network(model.net_builder, input_dim, num_actions * params.num_atoms)
        return c51_trainer(categorical_network(body, num_actions, params), params, device=device,
                           amp_dtype=amp_dtype)
    if isinstance(model, DiscreteBCQModel):
        return BCQTrainer(build_network(model.net_builder, input_dim, num_actions),
                          build_network(model.imitator_net_builder, input_dim, num_actions), params,
                          device=device, amp_dtype=amp_dtype)
    if isinstance(model, DiscreteCRRModel):
        return CRRTrainer(build_network(model.critic, input_dim, num_actions),
                          build_network(model.actor_net_builder, input_dim, num_actions), params,
                          device=device, amp_dtype=amp_dtype)
    if isinstance(model, DiscreteIQLModel):
        return IQLTrainer(build_network(model.critic, input_dim, num_actions),
                          StateValue(build_network(model.value_net_builder, input_dim, 1)),
                          build_network(model.actor_net_builder, input_dim, num_actions), params,
                          device=device, amp_dtype=amp_dtype)
    raise TypeError(f"no trainer for {type(model).__name__}")
