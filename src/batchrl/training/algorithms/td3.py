"""TD3 for continuous actions (Fujimoto et al. 2018, "Addressing Function Approximation Error in
Actor-Critic Methods").

Actions live in [-1, 1]^d (``Batch.action`` float32[B, d]); the actor is deterministic (tanh). Per
minibatch:

    a'   = clip(mu_T(s') + clip(eps, -c, c), -1, 1),  eps ~ N(0, sigma^2)      target policy smoothing
    y    = r + gamma * not_terminal * min_i Q_T,i(s', a')                        clipped double Q
    L_Q  = sum_i mean (Q_i(s, a) - y)^2
    every ``delayed_policy_update`` critic steps (delayed updates):
    L_mu = -mean Q_1(s, mu(s));  then all targets: theta_T <- tau theta + (1 - tau) theta_T

TD3+BC (Fujimoto & Gu 2021, "A Minimalist Approach to Offline RL", with ``bc_alpha``):
    L_mu = -lambda mean Q_1(s, mu(s)) + mean ||mu(s) - a||^2,  lambda = bc_alpha / mean |Q_1(s, a)| (no grad)
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from batchrl.config import TD3Model, TD3TrainerParameters
from batchrl.data.loader import Batch
from batchrl.models import builders
from batchrl.models.continuous import Critic, DeterministicActor
from batchrl.training.optim import soft_update
from batchrl.training.steps import every_update
from batchrl.training.trainer import BuildContext
from batchrl.training.twin_critic import critic_evaluation, critic_step


def smoothed_target_action(target_action: Tensor, noise: Tensor, noise_clip: float) -> Tensor:
    """clip(mu_T(s') + clip(noise, -c, c), -1, 1); ``noise`` already scaled by sigma."""
    return (target_action + noise.clamp(-noise_clip, noise_clip)).clamp(-1.0, 1.0)


def td3_bc_actor_loss(q_of_actor: Tensor, actor_action: Tensor, logged_action: Tensor, q_logged: Tensor,
                      bc_alpha: float) -> Tensor:
    """-lambda mean Q(s, mu(s)) + mean over rows of ||mu(s) - a||^2 (summed over action dimensions),
    lambda = bc_alpha / mean |Q(s, a)| (detached)."""
    lam = bc_alpha / q_logged.detach().abs().mean().clamp(min=1e-6)
    return -lam * q_of_actor.mean() + (actor_action - logged_action).pow(2).sum(dim=1).mean()


def clipped_double_q_target(reward: Tensor, gamma: float, not_terminal: Tensor, q1_next: Tensor,
                            q2_next: Tensor) -> Tensor:
    """y = r + gamma * not_terminal * min(Q1_T(s', a'), Q2_T(s', a'))."""
    return reward + gamma * not_terminal.float() * torch.minimum(q1_next, q2_next)


class TD3Trainer:
    """Owns the actor, twin critics, their targets and optimizers; ``update(batch)`` does one critic
    step and, every ``delayed_policy_update`` calls, one actor step and the target updates.

    ``q_network`` is the serving network: the actor (state -> action in [-1, 1]^d).
    """

    scores = "actions"  # what q_network returns (export metadata "output")

    def __init__(self, actor: DeterministicActor, q1: Critic, q2: Critic, params: TD3TrainerParameters, *,
                 device: torch.device | str = "cpu", seed: int = 0):
        self.device = torch.device(device)
        self.params, self.gamma, self.tau = params, params.rl.gamma, params.rl.target_update_rate
        self.actor, self.q1, self.q2 = actor.to(self.device), q1.to(self.device), q2.to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.q1_target = copy.deepcopy(self.q1).requires_grad_(False)
        self.q2_target = copy.deepcopy(self.q2).requires_grad_(False)
        self.actor_steps = every_update(params.actor_network_optimizer, self.actor.parameters())
        self.critic_steps = every_update(params.q_network_optimizer,
                                         list(self.q1.parameters()) + list(self.q2.parameters()))
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.updates = 0
        self._last_actor_loss = torch.zeros((), device=self.device)

    @property
    def q_network(self) -> nn.Module:
        return self.actor

    @property
    def learning_rate(self) -> float:
        return self.critic_steps.learning_rate

    def _noise(self, like: Tensor, std: float) -> Tensor:
        return std * torch.randn(like.shape, generator=self.generator, device=like.device, dtype=like.dtype)

    @torch.no_grad()
    def act(self, state: Tensor, explore: bool) -> Tensor:
        """mu(s), plus N(0, exploration_noise^2) clipped to [-1, 1] when exploring."""
        action: Tensor = self.actor(state)
        if explore and self.params.exploration_noise > 0:
            action = (action + self._noise(action, self.params.exploration_noise)).clamp(-1.0, 1.0)
        return action

    @torch.no_grad()
    def td_target(self, batch: Batch) -> Tensor:
        """The critics' regression target y [B] (clipped double Q at the smoothed target action)."""
        mu_next = self.actor_target(batch.next_state)
        next_action = smoothed_target_action(mu_next, self._noise(mu_next, self.params.noise_variance),
                                             self.params.noise_clip)
        return clipped_double_q_target(batch.reward, self.gamma, batch.not_terminal,
                                       self.q1_target(batch.next_state, next_action),
                                       self.q2_target(batch.next_state, next_action))

    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        """Critic and policy terms on held-out data, without training."""
        return critic_evaluation(self, batch, self.td_target(batch))

    def update(self, batch: Batch) -> dict[str, Tensor]:
        q1, q_loss = critic_step(self, batch, self.td_target(batch))
        self.updates += 1
        if self.updates % self.params.delayed_policy_update == 0:
            mu = self.actor(batch.state)
            if self.params.bc_alpha is None:
                actor_loss = -self.q1(batch.state, mu).mean()
            else:
                actor_loss = td3_bc_actor_loss(self.q1(batch.state, mu), mu, batch.action, q1, self.params.bc_alpha)
            self.actor_steps(actor_loss)
            self._last_actor_loss = actor_loss.detach()
            soft_update(self.actor_target, self.actor, self.tau)
            soft_update(self.q1_target, self.q1, self.tau)
            soft_update(self.q2_target, self.q2, self.tau)
        return {"loss": q_loss.detach(), "q_loss": q_loss.detach(), "actor_loss": self._last_actor_loss,
                "q_logged": q1.detach().mean()}

    def end_epoch(self) -> None:
        """Step the learning-rate schedules (``lr_schedulers`` of the critic and actor optimizers)."""
        self.critic_steps.end_epoch()
        self.actor_steps.end_epoch()

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).state_dict() for name in (
            "actor", "q1", "q2", "actor_target", "q1_target", "q2_target", "critic_steps", "actor_steps")
                } | {"generator": self.generator.get_state(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("actor", "q1", "q2", "actor_target", "q1_target", "q2_target", "critic_steps", "actor_steps"):
            getattr(self, name).load_state_dict(state[name])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])


def build(model: TD3Model, context: BuildContext) -> TD3Trainer:
    """TD3 / TD3+BC: the twin critics, then the deterministic actor."""
    q1, q2 = [builders.critic(model.critic_net_builder, context.input_dim, context.action_dim) for _ in range(2)]
    actor = builders.deterministic_actor(model.actor_net_builder, context.input_dim, context.action_dim)
    return TD3Trainer(actor, q1, q2, model.trainer_param, device=context.device, seed=context.seed)
