"""Discrete IQL (Kostrikov et al. 2022, "Offline Reinforcement Learning with Implicit Q-Learning").

Never queries Q on actions outside the data: V(s) is an upper expectile of Q over the logged actions,
Q bootstraps from V, and the actor is advantage-weighted behaviour cloning.

    value:  u = Q_T(s, a_logged) - V(s),   L_V = mean |tau - 1[u < 0]| u^2        (tau = expectile)
    Q:      y = r' + d * not_terminal * V(s'),   L_Q = l(Q(s, a_logged) - y)
    actor:  w = min(exp(beta (Q_T(s, a_logged) - V(s))), max_weight),  L_pi = mean -w log pi(a_logged|s)

tau = 0.5 estimates the behaviour policy's value (SARSA-like); tau -> 1 approaches the best
in-data action. Q_T is a soft-updated copy of Q. The exported scores are the actor's logits.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from batchrl.config import DiscreteIQLModel, IQLTrainerParameters
from batchrl.data.loader import Batch
from batchrl.models.builders import build_network, state_value
from batchrl.training.actor_losses import exp_advantage_weight, weighted_log_likelihood_loss
from batchrl.training.optim import soft_update
from batchrl.training.steps import GradientSteps, detached, eval_mode
from batchrl.training.td import (
    autocast,
    boosted_reward,
    discount,
    expectile_loss,
    q_loss,
    reward_boost_vector,
    td_target,
)
from batchrl.training.trainer import BuildContext


class IQLTrainer:
    """Owns Q (+ target copy), V, the actor and their optimizers. ``q_network`` is the actor."""

    def __init__(self, critic: nn.Module, value: nn.Module, actor: nn.Module, params: IQLTrainerParameters, *,
                 device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None):
        self.device = torch.device(device)
        self.params, self.rl = params, params.rl
        self.critic = critic.to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = value.to(self.device)
        self.actor = actor.to(self.device)
        self.scores = "actor_logits"  # what q_network returns (export metadata "output")
        self.q_network = self.actor  # the scores that are exported and evaluated
        self.amp_dtype = amp_dtype if self.device.type == "cuda" else None
        self.steps = GradientSteps({"critic": (params.optimizer, self.critic.parameters()),
                                    "value": (params.value_optimizer, self.value.parameters()),
                                    "actor": (params.actor_optimizer, self.actor.parameters())},
                                   params.minibatches_per_step, self.amp_dtype)
        self.reward_boost = reward_boost_vector(self.rl, params.actions, self.device)

    @property
    def learning_rate(self) -> float:
        return self.steps.learning_rate

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        action = batch.action.unsqueeze(1)
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            q_target = self.critic_target(batch.state).float().gather(1, action).squeeze(1)
            v_next = self.value(batch.next_state).float()
        reward = boosted_reward(batch.reward, batch.action, self.reward_boost)
        y = td_target(reward, discount(self.rl, batch.step, batch.time_diff), batch.not_terminal, v_next)
        with autocast(self.device, self.amp_dtype):
            v = self.value(batch.state).float()
            q = self.critic(batch.state).float().gather(1, action).squeeze(1)
            logits = self.actor(batch.state).float()
        value_loss = expectile_loss(q_target - v, self.params.expectile).mean()
        critic_loss = q_loss(q, y, self.rl.q_network_loss).mean()
        advantage = (q_target - v).detach()
        weight = exp_advantage_weight(advantage * self.params.beta, 1.0, self.params.max_weight)
        actor_loss = weighted_log_likelihood_loss(logits, batch.action, batch.possible_actions_mask, weight).mean()
        return {"loss": critic_loss + value_loss + actor_loss, "td_loss": critic_loss, "value_loss": value_loss,
                "actor_loss": actor_loss, "advantage": advantage.mean(), "actor_weight": weight.mean()}

    def update(self, batch: Batch) -> dict[str, Tensor]:
        terms = self.losses(batch)
        if self.steps(terms["loss"]):
            soft_update(self.critic_target, self.critic, self.rl.target_update_rate)
        return detached(terms)

    def end_epoch(self) -> None:
        """Step the learning-rate schedules (once per epoch)."""
        self.steps.end_epoch()

    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        with eval_mode(self.critic, self.value, self.actor):
            return detached(self.losses(batch))

    def state_dict(self) -> dict[str, Any]:
        return {"critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
                "value": self.value.state_dict(), "actor": self.actor.state_dict(),
                "steps": self.steps.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.value.load_state_dict(state["value"])
        self.actor.load_state_dict(state["actor"])
        self.steps.load_state_dict(state["steps"])


def build(model: DiscreteIQLModel, context: BuildContext) -> IQLTrainer:
    """DiscreteIQL: the critic, then V(s) (``value_net_builder``), then the actor."""
    critic = build_network(model.critic, context.input_dim, context.action_dim)
    value = state_value(model.value_net_builder, context.input_dim)
    actor = build_network(model.actor_net_builder, context.input_dim, context.action_dim)
    return IQLTrainer(critic, value, actor, model.trainer_param, device=context.device, amp_dtype=context.amp_dtype)
