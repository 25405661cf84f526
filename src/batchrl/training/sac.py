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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from batchrl.config import SACTrainerParameters
from batchrl.data.loader import Batch
from batchrl.training.continuous import critic_evaluation, critic_step
from batchrl.training.optim import build_optimizer, build_schedulers, soft_update


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

    def __init__(self, actor: nn.Module, q1: nn.Module, q2: nn.Module, params: SACTrainerParameters,
                 action_dim: int, *, value: nn.Module | None = None, device: torch.device | str = "cpu",
                 seed: int = 0):
        self.device = torch.device(device)
        self.params, self.gamma, self.tau = params, params.rl.gamma, params.rl.target_update_rate
        self.actor, self.q1, self.q2 = actor.to(self.device), q1.to(self.device), q2.to(self.device)
        self.q1_target = copy.deepcopy(self.q1).requires_grad_(False)
        self.q2_target = copy.deepcopy(self.q2).requires_grad_(False)
        self.value = value.to(self.device) if value is not None else None
        self.value_target = copy.deepcopy(self.value).requires_grad_(False) if value is not None else None
        self.value_optimizer = (build_optimizer(params.value_network_optimizer, self.value.parameters())
                                if value is not None else None)
        self.actor_optimizer = build_optimizer(params.actor_network_optimizer, self.actor.parameters())
        self.q_optimizer = build_optimizer(params.q_network_optimizer,
                                           list(self.q1.parameters()) + list(self.q2.parameters()))
        self.log_alpha = torch.tensor(float(torch.log(torch.tensor(params.entropy_temperature))),
                                      device=self.device, requires_grad=params.alpha_optimizer is not None)
        self.alpha_optimizer = (build_optimizer(params.alpha_optimizer, [self.log_alpha])
                                if params.alpha_optimizer is not None else None)
        self.target_entropy = params.target_entropy if params.target_entropy is not None else -float(action_dim)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.schedulers = [*build_schedulers(params.q_network_optimizer, self.q_optimizer),
                           *build_schedulers(params.actor_network_optimizer, self.actor_optimizer)]

    @property
    def q_network(self) -> nn.Module:
        return self.actor

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.detach().exp()

    @property
    def learning_rate(self) -> float:
        return float(self.q_optimizer.param_groups[0]["lr"])

    @torch.no_grad()
    def act(self, state: Tensor, explore: bool) -> Tensor:
        """Actions in [-1, 1]^d: a sample of pi(.|s) when exploring, else tanh(mean)."""
        return self.actor.sample(state, self.generator)[0] if explore else self.actor(state)

    @torch.no_grad()
    def td_target(self, batch: Batch) -> Tensor:
        """The critics' regression target y [B] (soft target, or V_T(s') with a value network)."""
        if self.value_target is not None:
            return batch.reward + self.gamma * batch.not_terminal.float() * \
                self.value_target(batch.next_state).squeeze(1)
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
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()

        if self.value is not None:
            value_target = (q_new - alpha * log_prob).detach()
            value_loss = F.mse_loss(self.value(batch.state).squeeze(1), value_target)
            self.value_optimizer.zero_grad(set_to_none=True)
            value_loss.backward()
            self.value_optimizer.step()
        terms = {"loss": q_loss.detach(), "q_loss": q_loss.detach(), "actor_loss": actor_loss.detach(),
                 "entropy": -log_prob.detach().mean(), "alpha": alpha, "q_logged": q1.detach().mean()}
        if self.alpha_optimizer is not None:
            loss = alpha_loss(self.log_alpha, log_prob, self.target_entropy)
            self.alpha_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.alpha_optimizer.step()
            terms["alpha_loss"] = loss.detach()
        if self.value is not None:
            terms["value_loss"] = value_loss.detach()
            soft_update(self.value_target, self.value, self.tau)
        else:
            soft_update(self.q1_target, self.q1, self.tau)
            soft_update(self.q2_target, self.q2, self.tau)
        return terms

    def end_epoch(self) -> None:
        """Step the learning-rate schedules (``lr_schedulers`` of the critic and actor optimizers)."""
        for scheduler in self.schedulers:
            scheduler.step()

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "q1": self.q1.state_dict(), "q2": self.q2.state_dict(),
                "q1_target": self.q1_target.state_dict(), "q2_target": self.q2_target.state_dict(),
                "actor_optimizer": self.actor_optimizer.state_dict(), "q_optimizer": self.q_optimizer.state_dict(),
                "log_alpha": self.log_alpha.detach().clone(),
                "alpha_optimizer": self.alpha_optimizer.state_dict() if self.alpha_optimizer else None,
                "generator": self.generator.get_state(), "schedulers": [x.state_dict() for x in self.schedulers],
                "value": self.value.state_dict() if self.value is not None else None,
                "value_target": self.value_target.state_dict() if self.value is not None else None,
                "value_optimizer": self.value_optimizer.state_dict() if self.value is not None else None}

    def load_state_dict(self, state: dict) -> None:
        for name in ("actor", "q1", "q2", "q1_target", "q2_target", "actor_optimizer", "q_optimizer"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        if self.alpha_optimizer is not None:
            self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self.generator.set_state(state["generator"])
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        if self.value is not None:
            for name in ("value", "value_target", "value_optimizer"):
                getattr(self, name).load_state_dict(state[name])
