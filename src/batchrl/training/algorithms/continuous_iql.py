"""IQL for continuous actions (Kostrikov et al. 2022, "Offline Reinforcement Learning with Implicit
Q-Learning"), the ``IQL`` model block (``DiscreteIQL`` is the discrete one, :mod:`.iql`).

Actions live in [-1, 1]^d (``Batch.action`` float32[B, d]). Q is never evaluated on an action outside
the data: V(s) is an upper expectile of the twin target critics over the logged actions, Q bootstraps
from V, and the actor is advantage-weighted regression (AWR) onto the logged actions. Per minibatch:

    q_T  = min_i Q_T,i(s, a_logged)                                            (no gradient)
    L_V  = mean |tau - 1[u < 0]| u^2,   u = q_T - V(s)                         expectile regression, tau
    A    = q_T - V(s)                    (V after its step, no gradient)
    w    = min(exp(beta A), max_weight)
    L_pi = -mean w log N(a_logged; tanh(mean(s)), std(s)^2)                     AWR, Gaussian actor
    y    = r + gamma * not_terminal * V(s')
    L_Q  = sum_i mean (Q_i(s, a_logged) - y)^2;   theta_T <- rho theta + (1 - rho) theta_T (rho: target_update_rate)

The actor's Gaussian is centred on tanh(mean(s)) with draws clipped to [-1, 1] (not tanh-squashed, as in
the paper's implementation, so logged actions at the bounds keep a finite density) and its log std is
clamped to [-5, 2] (the implementation's bounds). The serving action (``q_network``) is tanh(mean(s)),
exported in the logged units like SAC's and TD3's.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from batchrl.config import ContinuousIQLTrainerParameters, IQLModel
from batchrl.data.loader import Batch
from batchrl.models import builders
from batchrl.models.continuous import GaussianActor
from batchrl.training.actor_losses import exp_advantage_weight
from batchrl.training.optim import soft_update
from batchrl.training.steps import eval_mode, every_update
from batchrl.training.td import expectile_loss
from batchrl.training.trainer import BuildContext
from batchrl.training.twin_critic import critic_evaluation, critic_step

#: Lower bound of the actor's log std (the IQL implementation's; an AWR fit would otherwise shrink it
#: without bound on the highest-weighted actions).
ACTOR_LOG_STD_MIN = -5.0


def awr_weight(advantage: Tensor, beta: float, max_weight: float) -> Tensor:
    """w = min(exp(beta A), max_weight), no gradient (IQL's inverse temperature beta)."""
    return exp_advantage_weight(advantage.detach() * beta, 1.0, max_weight)


class ContinuousIQLTrainer:
    """Owns the Gaussian actor, the twin critics and their targets, V(s) and the three optimizers;
    ``update(batch)`` does one step of V, of the actor and of the critics, then the soft target update.

    ``q_network`` is the serving network: the actor (state -> tanh(mean) in [-1, 1]^d).
    """

    scores = "actions"  # what q_network returns (export metadata "output")

    def __init__(self, actor: GaussianActor, q1: nn.Module, q2: nn.Module, value: nn.Module,
                 params: ContinuousIQLTrainerParameters, *, device: torch.device | str = "cpu", seed: int = 0):
        self.device = torch.device(device)
        self.params, self.gamma, self.tau = params, params.rl.gamma, params.rl.target_update_rate
        self.actor, self.q1, self.q2 = actor.to(self.device), q1.to(self.device), q2.to(self.device)
        self.value = value.to(self.device)
        self.q1_target = copy.deepcopy(self.q1).requires_grad_(False)
        self.q2_target = copy.deepcopy(self.q2).requires_grad_(False)
        self.critic_steps = every_update(params.q_network_optimizer,
                                         list(self.q1.parameters()) + list(self.q2.parameters()))
        self.value_steps = every_update(params.value_network_optimizer, self.value.parameters())
        self.actor_steps = every_update(params.actor_network_optimizer, self.actor.parameters())
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    @property
    def q_network(self) -> nn.Module:
        return self.actor

    @property
    def learning_rate(self) -> float:
        return self.critic_steps.learning_rate

    @torch.no_grad()
    def act(self, state: Tensor, explore: bool) -> Tensor:
        """Actions in [-1, 1]^d: a draw of the clipped Gaussian when exploring, else tanh(mean)."""
        if explore:
            return self.actor.clipped_sample(state, ACTOR_LOG_STD_MIN, self.generator)
        action: Tensor = self.actor(state)
        return action

    def _v(self, state: Tensor) -> Tensor:
        v: Tensor = self.value(state)
        return v.squeeze(1)

    @torch.no_grad()
    def _q_target_logged(self, batch: Batch) -> Tensor:
        return torch.minimum(self.q1_target(batch.state, batch.action), self.q2_target(batch.state, batch.action))

    @torch.no_grad()
    def td_target(self, batch: Batch) -> Tensor:
        """The critics' regression target y = r + gamma * not_terminal * V(s') [B]."""
        return batch.reward + self.gamma * batch.not_terminal.float() * self._v(batch.next_state)

    def _actor_loss(self, batch: Batch, advantage: Tensor) -> tuple[Tensor, Tensor]:
        weight = awr_weight(advantage, self.params.beta, self.params.max_weight)
        log_prob = self.actor.clipped_log_prob(batch.state, batch.action, ACTOR_LOG_STD_MIN)
        return -(weight * log_prob).mean(), weight

    def update(self, batch: Batch) -> dict[str, Tensor]:
        q_logged_target = self._q_target_logged(batch)
        value_loss = expectile_loss(q_logged_target - self._v(batch.state), self.params.expectile).mean()
        self.value_steps(value_loss)

        with torch.no_grad():
            advantage = q_logged_target - self._v(batch.state)
        actor_loss, weight = self._actor_loss(batch, advantage)
        self.actor_steps(actor_loss)

        q1, q_loss = critic_step(self, batch, self.td_target(batch))
        soft_update(self.q1_target, self.q1, self.tau)
        soft_update(self.q2_target, self.q2, self.tau)
        return {"loss": q_loss.detach(), "q_loss": q_loss.detach(), "value_loss": value_loss.detach(),
                "actor_loss": actor_loss.detach(), "advantage": advantage.mean(), "actor_weight": weight.mean(),
                "q_logged": q1.detach().mean()}

    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        """Critic and policy terms on held-out data (``critic_evaluation``) plus IQL's value and actor terms."""
        terms = critic_evaluation(self, batch, self.td_target(batch))
        with eval_mode(self.value, self.actor), torch.no_grad():
            q_logged_target = self._q_target_logged(batch)
            advantage = q_logged_target - self._v(batch.state)
            actor_loss, _ = self._actor_loss(batch, advantage)
            terms |= {"value_loss": expectile_loss(advantage, self.params.expectile).mean(),
                      "advantage": advantage.mean(), "actor_loss": actor_loss}
        return terms

    def end_epoch(self) -> None:
        """Step the learning-rate schedules of the three optimizers (their ``lr_schedulers``)."""
        for steps in (self.critic_steps, self.value_steps, self.actor_steps):
            steps.end_epoch()

    _STATE = ("actor", "q1", "q2", "value", "q1_target", "q2_target", "critic_steps", "value_steps", "actor_steps")

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).state_dict() for name in self._STATE} | {
            "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._STATE:
            getattr(self, name).load_state_dict(state[name])
        self.generator.set_state(state["generator"])


def build(model: IQLModel, context: BuildContext) -> ContinuousIQLTrainer:
    """IQL (continuous): the twin critics, then the Gaussian actor, then V(s)."""
    q1, q2 = [builders.critic(model.critic_net_builder, context.input_dim, context.action_dim) for _ in range(2)]
    actor = builders.gaussian_actor(model.actor_net_builder, context.input_dim, context.action_dim)
    value = builders.continuous_mlp(model.value_net_builder, context.input_dim, 1)
    return ContinuousIQLTrainer(actor, q1, q2, value, model.trainer_param, device=context.device, seed=context.seed)
