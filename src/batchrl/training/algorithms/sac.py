"""Soft actor-critic for continuous actions (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and
Applications", the twin-Q version without a state-value network).

Actions live in [-1, 1]^d (``Batch.action`` float32[B, d]); the actor is a tanh-squashed Gaussian.
Per minibatch, with alpha the entropy temperature:

    a', log pi(a'|s') ~ pi(.|s')                                               (no gradient)
    y        = r + gamma * not_terminal * (min_i Q_T,i(s', a') - alpha log pi(a'|s'))   soft target
    L_Q      = sum_i mean (Q_i(s, a) - y)^2
    L_pi     = mean (alpha log pi(a~|s) - min_i Q_i(s, a~)),   a~ ~ pi(.|s) reparameterized
    L_alpha  = -mean log alpha * (log pi(a~|s) + target_entropy)             (when alpha is learned)
    theta_T <- tau theta + (1 - tau) theta_T

With a state-value network V (Haarnoja et al. 2018a, ReAgent's ``value_net_builder``), V_T replaces the
sampled soft value in the target and V is regressed on it:

    y        = r + gamma * not_terminal * V_T(s')
    L_V      = mean (V(s) - (min_i Q_i(s, a~) - alpha log pi(a~|s)))^2     (target without gradient)
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from batchrl.config import SACModel, SACTrainerParameters
from batchrl.data.loader import Batch
from batchrl.models import builders
from batchrl.models.continuous import Critic, GaussianActor
from batchrl.training.optim import soft_update
from batchrl.training.steps import GradientSteps, every_update
from batchrl.training.trainer import BuildContext
from batchrl.training.twin_critic import critic_evaluation, critic_step


def soft_q_target(reward: Tensor, gamma: float, not_terminal: Tensor, q1_next: Tensor, q2_next: Tensor,
                  log_prob_next: Tensor, alpha: float | Tensor) -> Tensor:
    """y = r + gamma * not_terminal * (min(Q1_T, Q2_T)(s', a') - alpha log pi(a'|s')), all [B]."""
    soft_value = torch.minimum(q1_next, q2_next) - alpha * log_prob_next
    return reward + gamma * not_terminal.float() * soft_value


def alpha_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> Tensor:
    """-mean(log alpha * (log pi + H_target)): alpha grows when the entropy -log pi is below the target."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


class SACTrainer:
    """Owns the actor, twin critics, their targets and optimizers; ``update(batch)`` does one step.

    ``q_network`` is the serving network: the actor (state -> deterministic action tanh(mean)).
    """

    scores = "actions"  # what q_network returns (export metadata "output")

    def __init__(self, actor: GaussianActor, q1: Critic, q2: Critic, params: SACTrainerParameters,
                 action_dim: int, *, value: nn.Module | None = None, device: torch.device | str = "cpu",
                 seed: int = 0):
        self.device = torch.device(device)
        self.params, self.gamma, self.tau = params, params.rl.gamma, params.rl.target_update_rate
        self.actor, self.q1, self.q2 = actor.to(self.device), q1.to(self.device), q2.to(self.device)
        self.q1_target = copy.deepcopy(self.q1).requires_grad_(False)
        self.q2_target = copy.deepcopy(self.q2).requires_grad_(False)
        self.value = value.to(self.device) if value is not None else None
        self.value_target = copy.deepcopy(self.value).requires_grad_(False) if self.value is not None else None
        self.value_steps = (every_update(params.value_network_optimizer, self.value.parameters())
                            if self.value is not None else None)
        self.actor_steps = every_update(params.actor_network_optimizer, self.actor.parameters())
        self.critic_steps = every_update(params.q_network_optimizer, list(self.q1.parameters()) + list(self.q2.parameters()))
        self.log_alpha = torch.tensor(float(torch.log(torch.tensor(params.entropy_temperature))),
                                      device=self.device, requires_grad=params.alpha_optimizer is not None)
        self.alpha_steps = (every_update(params.alpha_optimizer, [self.log_alpha])
                            if params.alpha_optimizer is not None else None)
        self.target_entropy = params.target_entropy if params.target_entropy is not None else -float(action_dim)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    @property
    def q_network(self) -> nn.Module:
        return self.actor

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.detach().exp()

    @property
    def learning_rate(self) -> float:
        return self.critic_steps.learning_rate

    @torch.no_grad()
    def act(self, state: Tensor, explore: bool) -> Tensor:
        """Actions in [-1, 1]^d: a sample of pi(.|s) when exploring, else tanh(mean)."""
        if explore:
            return self.actor.sample(state, self.generator)[0]
        action: Tensor = self.actor(state)
        return action

    @torch.no_grad()
    def td_target(self, batch: Batch) -> Tensor:
        """The critics' regression target y [B] (soft target, or V_T(s') with a value network)."""
        if self.value_target is not None:
            value_next: Tensor = self.value_target(batch.next_state)
            return batch.reward + self.gamma * batch.not_terminal.float() * value_next.squeeze(1)
        next_action, next_log_prob = self.actor.sample(batch.next_state, self.generator)
        return soft_q_target(batch.reward, self.gamma, batch.not_terminal,
                             self.q1_target(batch.next_state, next_action),
                             self.q2_target(batch.next_state, next_action), next_log_prob, self.alpha)

    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        """Critic and policy terms on held-out data, without training."""
        return critic_evaluation(self, batch, self.td_target(batch))

    def update(self, batch: Batch) -> dict[str, Tensor]:
        alpha = self.alpha
        q1, q_loss = critic_step(self, batch, self.td_target(batch))

        action, log_prob = self.actor.sample(batch.state, self.generator)
        q_new = torch.minimum(self.q1(batch.state, action), self.q2(batch.state, action))
        actor_loss = (alpha * log_prob - q_new).mean()
        self.actor_steps(actor_loss)
        value_loss = None
        if self.value is not None and self.value_steps is not None:
            value_target = (q_new - alpha * log_prob).detach()
            value_loss = F.mse_loss(self.value(batch.state).squeeze(1), value_target)
            self.value_steps(value_loss)
        terms = {"loss": q_loss.detach(), "q_loss": q_loss.detach(), "actor_loss": actor_loss.detach(),
                 "entropy": -log_prob.detach().mean(), "alpha": alpha, "q_logged": q1.detach().mean()}
        if self.alpha_steps is not None:
            loss = alpha_loss(self.log_alpha, log_prob, self.target_entropy)
            self.alpha_steps(loss)
            terms["alpha_loss"] = loss.detach()
        if value_loss is not None and self.value is not None and self.value_target is not None:
            terms["value_loss"] = value_loss.detach()
            soft_update(self.value_target, self.value, self.tau)
        else:
            soft_update(self.q1_target, self.q1, self.tau)
            soft_update(self.q2_target, self.q2, self.tau)
        return terms

    def end_epoch(self) -> None:
        """Step the learning-rate schedules of every optimizer (their ``lr_schedulers``)."""
        for steps in self._steps():
            steps.end_epoch()

    def _steps(self) -> list[GradientSteps]:
        return [s for s in (self.critic_steps, self.actor_steps, self.value_steps, self.alpha_steps) if s is not None]

    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "q1": self.q1.state_dict(), "q2": self.q2.state_dict(),
                "q1_target": self.q1_target.state_dict(), "q2_target": self.q2_target.state_dict(),
                "critic_steps": self.critic_steps.state_dict(), "actor_steps": self.actor_steps.state_dict(),
                "log_alpha": self.log_alpha.detach().clone(),
                "alpha_steps": self.alpha_steps.state_dict() if self.alpha_steps else None,
                "generator": self.generator.get_state(),
                "value": self.value.state_dict() if self.value is not None else None,
                "value_target": self.value_target.state_dict() if self.value_target is not None else None,
                "value_steps": self.value_steps.state_dict() if self.value_steps is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("actor", "q1", "q2", "q1_target", "q2_target", "critic_steps", "actor_steps"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        if self.alpha_steps is not None:
            self.alpha_steps.load_state_dict(state["alpha_steps"])
        self.generator.set_state(state["generator"])
        if self.value is not None:
            for name in ("value", "value_target", "value_steps"):
                getattr(self, name).load_state_dict(state[name])


def build(model: SACModel, context: BuildContext) -> SACTrainer:
    """SAC: the twin critics, the Gaussian actor, then the optional value network V(s)."""
    q1, q2 = [builders.critic(model.critic_net_builder, context.input_dim, context.action_dim) for _ in range(2)]
    actor = builders.gaussian_actor(model.actor_net_builder, context.input_dim, context.action_dim)
    value = (builders.continuous_mlp(model.value_net_builder, context.input_dim, 1)
             if model.value_net_builder is not None else None)
    return SACTrainer(actor, q1, q2, model.trainer_param, context.action_dim, value=value, device=context.device,
                      seed=context.seed)
