"""DQN on logged transitions, discrete actions (spec section 6; Mnih et al. 2015, "Human-level control
through deep RL"; double Q: van Hasselt et al. 2016).

Per minibatch, with the TD target y of :mod:`batchrl.training.td` (reward boost, three discount modes,
double-Q / max-Q / SARSA next value, possible-action masks):

    loss = mean l(Q(s, a_logged) - y),  l = squared error (mse) | Huber (delta 1)

then the target network moves toward the online one: theta_T <- tau theta + (1 - tau) theta_T.
A variant adds ``penalty_weight * mean(penalty(Q(s, .), a, mask))`` to the loss (discrete CQL,
:mod:`batchrl.training.algorithms.cql`). With ``imitation_weight`` w > 0 (:class:`AuxiliaryImitation`) a
linear head G on the Q-network's hidden layers h(s) learns the logged actions alongside:

    loss += w * (mean -log softmax(G(h(s)))[a_logged] + beta * mean(G(h(s))^2))

The head is stepped with the Q-network (same optimizer); only the shared hidden layers carry its effect
into Q, the policy stays argmax_a Q(s, a). This is what d3rlpy's DiscreteBCQ amounts to where its filter
does not bind (benchmarks/README.md, MountainCar medium): behaviour cloning as a representation
regularizer for offline DQN.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from batchrl.config import DiscreteDQNModel, DQNTrainerParameters
from batchrl.data.loader import Batch
from batchrl.models.builders import build_network
from batchrl.models.networks import hidden_trunk
from batchrl.training.actor_losses import imitation_loss
from batchrl.training.optim import soft_update
from batchrl.training.steps import GradientSteps, ParameterGroups, detached, eval_mode
from batchrl.training.td import (
    autocast,
    boosted_reward,
    discount,
    next_state_value,
    q_loss,
    reward_boost_vector,
    td_target,
)
from batchrl.training.trainer import BuildContext

Penalty = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class AuxiliaryImitation:
    """DQN's auxiliary behaviour-cloning loss: ``head`` on the Q-network's hidden layers, its loss
    (cross-entropy plus ``logit_penalty`` * mean(logits^2)) times ``weight`` added to the Q loss."""

    head: nn.Module
    weight: float
    logit_penalty: float


class DQNTrainer:
    """Owns the Q-network, its target copy and optimizer; ``update(batch)`` does one training step.

    ``amp_dtype`` (CUDA only): bfloat16 or float16 autocast; float16 uses a gradient scaler.
    """

    scores = "q_values"  # what q_network returns (export metadata "output")

    def __init__(self, q_network: nn.Module, params: DQNTrainerParameters, *, device: torch.device | str = "cpu",
                 penalty: Penalty | None = None, penalty_name: str = "penalty", penalty_weight: float = 0.0,
                 amp_dtype: torch.dtype | None = None, extra_groups: ParameterGroups | None = None,
                 imitation: AuxiliaryImitation | None = None):
        self.device = torch.device(device)
        self.params, self.rl = params, params.rl
        self.num_actions = len(params.actions)
        self.q_network = q_network.to(self.device)
        self.q_target = copy.deepcopy(self.q_network).requires_grad_(False)
        self.penalty, self.penalty_name, self.penalty_weight = penalty, penalty_name, penalty_weight
        self.imitation = imitation
        self.imitator = None if imitation is None else nn.Sequential(hidden_trunk(self.q_network)[0],
                                                                     imitation.head.to(self.device))
        self.amp_dtype = amp_dtype if self.device.type == "cuda" else None
        q_parameters = itertools.chain(self.q_network.parameters(), () if imitation is None else imitation.head.parameters())
        self.steps = GradientSteps({"q": (params.optimizer, q_parameters), **(extra_groups or {})},
                                   params.minibatches_per_step, self.amp_dtype)
        self.reward_boost = reward_boost_vector(self.rl, params.actions, self.device)

    @property
    def learning_rate(self) -> float:
        return self.steps.learning_rate

    def target_values(self, batch: Batch) -> Tensor:
        """y for each row (no gradient)."""
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            q_next_target = self.q_target(batch.next_state).float()
            q_next = self.q_network(batch.next_state).float() if self.params.double_q_learning else q_next_target
        value = next_state_value(q_next, q_next_target, batch.possible_next_actions_mask, batch.next_action,
                                 double_q=self.params.double_q_learning, maxq=self.rl.maxq_learning)
        reward = boosted_reward(batch.reward, batch.action, self.reward_boost)
        return td_target(reward, discount(self.rl, batch.step, batch.time_diff), batch.not_terminal, value)

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        """Named loss terms (with gradient); ``loss`` is what is minimized."""
        target = self.target_values(batch)
        with autocast(self.device, self.amp_dtype):
            q = self.q_network(batch.state).float()
        q_logged = q.gather(1, batch.action.unsqueeze(1)).squeeze(1)
        td = q_loss(q_logged, target, self.rl.q_network_loss).mean()
        terms = {"loss": td, "td_loss": td}
        if self.penalty is not None:
            penalty = self.penalty(q, batch.action, batch.possible_actions_mask).mean()
            terms[self.penalty_name] = penalty
            terms["loss"] = td + self.penalty_weight * penalty
        if self.imitation is not None and self.imitator is not None:
            with autocast(self.device, self.amp_dtype):
                logits = self.imitator(batch.state).float()
            imitation = imitation_loss(logits, batch.action, batch.possible_actions_mask, self.imitation.logit_penalty)
            terms["imitation_loss"] = imitation
            terms["loss"] = terms["loss"] + self.imitation.weight * imitation
        terms["q_logged"] = q_logged.mean()
        return terms

    def update(self, batch: Batch, extra_loss: Tensor | None = None) -> dict[str, Tensor]:
        """One minibatch: backward; every ``minibatches_per_step`` minibatches an optimizer step and a
        soft target update. Returns the detached loss terms (0-d tensors on the device).

        ``extra_loss``: another model's loss backpropagated with this one (its parameters are among
        ``extra_groups``, or shared with the Q-network), e.g. BCQ's imitator on a shared trunk."""
        terms = self.losses(batch)
        if self.steps(terms["loss"] if extra_loss is None else terms["loss"] + extra_loss):
            soft_update(self.q_target, self.q_network, self.rl.target_update_rate)
        return detached(terms)

    def end_epoch(self) -> None:
        """Step the learning-rate schedules (once per epoch)."""
        self.steps.end_epoch()

    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        """The loss terms on held-out data, without training (eval TD loss)."""
        with eval_mode(self.q_network):
            return detached(self.losses(batch))

    def state_dict(self) -> dict[str, Any]:
        state = {"q_network": self.q_network.state_dict(), "q_target": self.q_target.state_dict(),
                 "steps": self.steps.state_dict()}
        if self.imitation is not None:
            state["imitation_head"] = self.imitation.head.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q_network.load_state_dict(state["q_network"])
        self.q_target.load_state_dict(state["q_target"])
        self.steps.load_state_dict(state["steps"])
        if self.imitation is not None:
            self.imitation.head.load_state_dict(state["imitation_head"])


def build(model: DiscreteDQNModel, context: BuildContext) -> DQNTrainer:
    """DiscreteDQN: one Q-network from ``net_builder`` (with ``imitation_weight`` > 0 and a linear
    imitation head on its hidden layers)."""
    q_network = build_network(model.net_builder, context.input_dim, context.action_dim)
    params = model.trainer_param
    imitation = None
    if params.imitation_weight:
        head = nn.Linear(hidden_trunk(q_network)[1], context.action_dim)
        imitation = AuxiliaryImitation(head, params.imitation_weight, params.imitator_logit_penalty)
    return DQNTrainer(q_network, params, device=context.device, amp_dtype=context.amp_dtype, imitation=imitation)
