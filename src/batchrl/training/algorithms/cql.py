"""Discrete conservative Q-learning (Kumar et al. 2020, "Conservative Q-Learning for Offline RL", CQL(H)).

The DQN loss plus ``alpha`` times a penalty that pushes Q down on all (possible) actions and up on
the logged one, so actions the data does not cover are not over-estimated:

    penalty(s, a) = log sum_{a' possible} exp Q(s, a') - Q(s, a_logged)     (>= 0 when a is possible)

alpha = 0 is plain DQN; larger alpha stays closer to the logging policy's support.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from batchrl.config import CQLTrainerParameters, DiscreteCQLModel
from batchrl.models.builders import build_network
from batchrl.models.policy import effective_mask
from batchrl.training.algorithms.dqn import DQNTrainer
from batchrl.training.trainer import BuildContext


def conservative_penalty(q: Tensor, action: Tensor, possible: Tensor) -> Tensor:
    """Per-row CQL(H) penalty. ``q`` [B, A] online Q(s, .), ``action`` [B] logged, ``possible`` [B, A]."""
    logits = q.masked_fill(~effective_mask(possible), float("-inf"))
    return torch.logsumexp(logits, dim=1) - q.gather(1, action.unsqueeze(1)).squeeze(1)


def cql_trainer(q_network: nn.Module, params: CQLTrainerParameters, *, device: torch.device | str = "cpu",
                amp_dtype: torch.dtype | None = None) -> DQNTrainer:
    """A :class:`DQNTrainer` whose loss adds ``params.alpha * mean(conservative_penalty)``."""
    return DQNTrainer(q_network, params, device=device, penalty=conservative_penalty, penalty_name="cql_penalty",
                      penalty_weight=params.alpha, amp_dtype=amp_dtype)


def build(model: DiscreteCQLModel, context: BuildContext) -> DQNTrainer:
    """DiscreteCQL: one Q-network from ``net_builder``."""
    return cql_trainer(build_network(model.net_builder, context.input_dim, context.action_dim), model.trainer_param,
                       device=context.device, amp_dtype=context.amp_dtype)
