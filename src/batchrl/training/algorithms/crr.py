"""Discrete CRR (Wang et al. 2020, "Critic Regularized Regression"), with possible-action masks.

A critic Q and an actor pi (softmax of its logits over the possible actions) train together:

    critic: y = r' + d * not_terminal * sum_{a'} pi(a'|s') Q_T(s', a'),  loss = l(Q(s, a_logged) - y)
    actor:  A(s, a) = Q(s, a) - sum_a' pi(a'|s) Q(s, a')   ("mean")  |  Q(s, a) - max_a' Q(s, a')  ("max")
            w = min(exp(A / beta), max_weight)  ("exp")  |  1[A > 0]  ("binary")
            loss = mean -w log pi(a_logged|s)

The actor only re-weights logged actions, so it stays on the data's support; the critic evaluates
that actor (no max over unseen actions). The exported scores are the actor's logits (greedy = argmax).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from batchrl.config import CRRTrainerParameters, DiscreteCRRModel
from batchrl.data.loader import Batch
from batchrl.models.builders import build_network
from batchrl.models.policy import masked_softmax
from batchrl.training.actor_losses import (
    binary_advantage_weight,
    exp_advantage_weight,
    weighted_log_likelihood_loss,
)
from batchrl.training.optim import soft_update
from batchrl.training.steps import GradientSteps, detached, eval_mode
from batchrl.training.td import autocast, boosted_reward, discount, q_loss, reward_boost_vector, td_target
from batchrl.training.trainer import BuildContext


def crr_advantage(q: Tensor, pi: Tensor, action: Tensor, possible: Tensor, mode: str) -> Tensor:
    """A(s, a_logged) [B] from Q(s, .) [B, A] and pi(.|s) [B, A] (0 on impossible actions)."""
    q_logged = q.gather(1, action.unsqueeze(1)).squeeze(1)
    if mode == "max":
        return q_logged - q.masked_fill(~possible, float("-inf")).max(dim=1).values
    return q_logged - (pi * q).sum(dim=1)


def crr_weight(advantage: Tensor, params: CRRTrainerParameters) -> Tensor:
    if params.weight == "binary":
        return binary_advantage_weight(advantage)
    return exp_advantage_weight(advantage, params.beta, params.max_weight)


class CRRTrainer:
    """Owns the critic (+ target copy), the actor and their optimizers. ``q_network`` is the actor."""

    def __init__(self, critic: nn.Module, actor: nn.Module, params: CRRTrainerParameters, *,
                 device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None):
        self.device = torch.device(device)
        self.params, self.rl = params, params.rl
        self.critic = critic.to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor = actor.to(self.device)
        self.scores = "actor_logits"  # what q_network returns (export metadata "output")
        self.q_network = self.actor  # the scores that are exported and evaluated
        self.amp_dtype = amp_dtype if self.device.type == "cuda" else None
        self.steps = GradientSteps({"critic": (params.optimizer, self.critic.parameters()),
                                    "actor": (params.actor_optimizer, self.actor.parameters())},
                                   params.minibatches_per_step, self.amp_dtype)
        self.reward_boost = reward_boost_vector(self.rl, params.actions, self.device)

    @property
    def learning_rate(self) -> float:
        return self.steps.learning_rate

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        temperature = 1.0  # the actor's own policy
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            pi_next = masked_softmax(self.actor(batch.next_state).float(), batch.possible_next_actions_mask,
                                     temperature)
            v_next = (pi_next * self.critic_target(batch.next_state).float()).sum(dim=1)
        reward = boosted_reward(batch.reward, batch.action, self.reward_boost)
        y = td_target(reward, discount(self.rl, batch.step, batch.time_diff), batch.not_terminal, v_next)
        with autocast(self.device, self.amp_dtype):
            q = self.critic(batch.state).float()
            logits = self.actor(batch.state).float()
        critic_loss = q_loss(q.gather(1, batch.action.unsqueeze(1)).squeeze(1), y, self.rl.q_network_loss).mean()
        with torch.no_grad():
            pi = masked_softmax(logits, batch.possible_actions_mask, temperature)
            possible = pi > 0
            advantage = crr_advantage(q, pi, batch.action, possible, self.params.advantage)
            weight = crr_weight(advantage, self.params)
        actor_loss = weighted_log_likelihood_loss(logits, batch.action, batch.possible_actions_mask, weight).mean()
        return {"loss": critic_loss + actor_loss, "td_loss": critic_loss, "actor_loss": actor_loss,
                "advantage": advantage.mean(), "actor_weight": weight.mean()}

    def update(self, batch: Batch) -> dict[str, Tensor]:
        terms = self.losses(batch)
        if self.steps(terms["loss"]):
            soft_update(self.critic_target, self.critic, self.rl.target_update_rate)
        return detached(terms)

    def end_epoch(self) -> None:
        """Step the learning-rate schedules (once per epoch)."""
        self.steps.end_epoch()

    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        with eval_mode(self.critic, self.actor):
            return detached(self.losses(batch))

    def state_dict(self) -> dict[str, Any]:
        return {"critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
                "actor": self.actor.state_dict(), "steps": self.steps.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor.load_state_dict(state["actor"])
        self.steps.load_state_dict(state["steps"])


def build(model: DiscreteCRRModel, context: BuildContext) -> CRRTrainer:
    """DiscreteCRR: the critic (``critic_net_builder`` or ``net_builder``), then the actor."""
    critic = build_network(model.critic, context.input_dim, context.action_dim)
    actor = build_network(model.actor_net_builder, context.input_dim, context.action_dim)
    return CRRTrainer(critic, actor, model.trainer_param, device=context.device, amp_dtype=context.amp_dtype)
