"""Discrete BCQ (Fujimoto et al. 2019, "Benchmarking Batch Deep RL Algorithms", BCQ for discrete actions).

An imitator G(s) (behaviour cloning: cross-entropy of the logged action over the possible ones)
estimates the logging policy pi_b. Q-learning then only bootstraps from, and the greedy policy only
picks, actions the data supports:

    allowed(s) = {a possible : pi_b(a|s) / max_a' pi_b(a'|s) >= drop_threshold}
    y          = r' + d * not_terminal * Q_T(s', argmax_{a' in allowed(s')} Q(s', a'))   (DQN, double Q)
    loss       = DQN loss(Q(s, a_logged), y) + cross-entropy(G(s), a_logged) + beta * mean(G(s)^2)

(beta: ``imitator_logit_penalty``, the paper's logit regularizer). drop_threshold -> 0 is DQN, 1 is
(almost) behaviour cloning. Composed from :class:`DQNTrainer` (the Q-loss, with the possible-next-action
mask narrowed to ``allowed``) and the imitator's own optimizer. With ``share_trunk`` the imitator is a
linear head on the Q-network's hidden layers (the paper's shared convolutional layers, here the MLP): one
backward of the summed loss trains the trunk with both, each head with its own optimizer.
The exported scores are Q(s, a) on allowed actions and -1e9 elsewhere
(:class:`~batchrl.models.heads.BCQScores`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from batchrl.config import BCQTrainerParameters, DiscreteBCQModel
from batchrl.data.loader import Batch
from batchrl.models.builders import build_network
from batchrl.models.heads import BCQScores, bcq_allowed
from batchrl.models.networks import hidden_trunk
from batchrl.models.policy import effective_mask
from batchrl.training.actor_losses import imitation_loss
from batchrl.training.algorithms.dqn import DQNTrainer
from batchrl.training.steps import GradientSteps, ParameterGroups, detached, eval_mode
from batchrl.training.td import autocast
from batchrl.training.trainer import BuildContext


class BCQTrainer:
    """``update(batch)``: one DQN step on the BCQ-filtered batch, one imitator step."""

    def __init__(self, q_network: nn.Module, imitator: nn.Module, params: BCQTrainerParameters, *,
                 device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None,
                 shared_head: nn.Module | None = None):
        """``shared_head``: the imitator is ``Sequential(q_network's trunk, shared_head)``; the head's
        parameters are stepped with the Q-network's, after one backward of both losses."""
        self.params = params
        imitator_group: ParameterGroups = {
            "imitator": (params.imitator_optimizer, (shared_head or imitator).parameters())}
        self.shared = shared_head is not None
        self.dqn = DQNTrainer(q_network, params, device=device, amp_dtype=amp_dtype,
                              extra_groups=imitator_group if self.shared else None)
        self.device, self.amp_dtype = self.dqn.device, self.dqn.amp_dtype
        self.imitator = imitator.to(self.device)
        self.imitator_steps = None if self.shared else GradientSteps(imitator_group, params.minibatches_per_step,
                                                                     self.amp_dtype)
        self.scores = "bcq_filtered_q_values"  # what q_network returns (export metadata "output")
        self.q_network = BCQScores(self.dqn.q_network, self.imitator, params.drop_threshold)

    @property
    def learning_rate(self) -> float:
        return self.dqn.learning_rate

    def filtered(self, batch: Batch) -> Batch:
        """``batch`` with possible next actions narrowed to the imitator-supported ones."""
        possible = effective_mask(batch.possible_next_actions_mask)
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            logits = self.imitator(batch.next_state).float()
        return replace(batch, possible_next_actions_mask=bcq_allowed(logits, self.params.drop_threshold, possible))

    def _imitator_terms(self, batch: Batch) -> dict[str, Tensor]:
        with autocast(self.device, self.amp_dtype):
            logits = self.imitator(batch.state).float()
        loss = imitation_loss(logits, batch.action, batch.possible_actions_mask, self.params.imitator_logit_penalty)
        possible = effective_mask(batch.possible_actions_mask)
        accuracy = (logits.detach().masked_fill(~possible, float("-inf")).argmax(dim=1) == batch.action).float()
        return {"imitator_loss": loss, "imitator_accuracy": accuracy.mean()}

    def update(self, batch: Batch) -> dict[str, Tensor]:
        filtered = self.filtered(batch)
        if self.imitator_steps is None:  # shared trunk: one backward of both losses
            imitator = self._imitator_terms(batch)
            terms = self.dqn.update(filtered, extra_loss=imitator["imitator_loss"])
        else:
            terms = self.dqn.update(filtered)
            imitator = self._imitator_terms(batch)
            self.imitator_steps(imitator["imitator_loss"])
        return {**terms, **detached(imitator)}

    def end_epoch(self) -> None:
        """Step the learning-rate schedules (once per epoch)."""
        self.dqn.end_epoch()
        if self.imitator_steps is not None:
            self.imitator_steps.end_epoch()

    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        terms = self.dqn.evaluate(self.filtered(batch))
        with eval_mode(self.imitator):
            return {**terms, **detached(self._imitator_terms(batch))}

    def state_dict(self) -> dict[str, Any]:
        state = {"dqn": self.dqn.state_dict(), "imitator": self.imitator.state_dict()}
        if self.imitator_steps is not None:
            state["imitator_steps"] = self.imitator_steps.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dqn.load_state_dict(state["dqn"])
        self.imitator.load_state_dict(state["imitator"])
        if self.imitator_steps is not None:
            self.imitator_steps.load_state_dict(state["imitator_steps"])


def build(model: DiscreteBCQModel, context: BuildContext) -> BCQTrainer:
    """DiscreteBCQ: the Q-network (``net_builder``), then the imitator (``imitator_net_builder``, or with
    ``share_trunk`` a linear head on the Q-network's hidden layers)."""
    q_network = build_network(model.net_builder, context.input_dim, context.action_dim)
    if not model.share_trunk:
        imitator = build_network(model.imitator_net_builder, context.input_dim, context.action_dim)
        return BCQTrainer(q_network, imitator, model.trainer_param, device=context.device,
                          amp_dtype=context.amp_dtype)
    trunk, width = hidden_trunk(q_network)
    head = nn.Linear(width, context.action_dim)
    return BCQTrainer(q_network, nn.Sequential(trunk, head), model.trainer_param, device=context.device,
                      amp_dtype=context.amp_dtype, shared_head=head)
