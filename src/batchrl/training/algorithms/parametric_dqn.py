"""Parametric DQN over candidate sets, and its conservative variant (items described by features; ReAgent's
ParametricDQN, which trained online only; CQL: Kumar et al. 2020, "Conservative Q-Learning for Offline RL").

One network scores a (state, item) pair, Q(s, a) = f([x_s, x_a]) (:class:`~batchrl.models.parametric.ParametricQNetwork`).
Per minibatch, with C(s') the next state's candidates and the discount d of :func:`batchrl.training.td.discount`:

    v(s') = Q_T(s', argmax_{a' in C(s')} Q(s', a'))     double Q
          | max_{a' in C(s')} Q_T(s', a')                max-Q
          | Q_T(s', a'_logged)                           SARSA (rl.maxq_learning: false)
    y     = r + d * not_terminal * v(s')
    loss  = mean l(Q(s, a_logged) - y)                   l = squared error | Huber
          + alpha * mean(logsumexp_{a in C(s)} Q(s, a) - Q(s, a_logged))     ParametricCQL only

then theta_T <- tau theta + (1 - tau) theta_T. The penalty pushes Q down on the candidates the logging
policy did not choose, so the greedy policy stays where the data says something; alpha = 0 is DQN.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from batchrl.config import ParametricCQLModel, ParametricDQNModel, ParametricDQNTrainerParameters
from batchrl.data.loader import Batch
from batchrl.models.builders import build_network
from batchrl.models.parametric import ParametricQNetwork
from batchrl.models.policy import effective_mask
from batchrl.training.optim import soft_update
from batchrl.training.steps import GradientSteps, detached, eval_mode
from batchrl.training.td import autocast, discount, next_state_value, q_loss, td_target
from batchrl.training.trainer import BuildContext


def conservative_penalty(q_candidates: Tensor, mask: Tensor, q_logged: Tensor) -> Tensor:
    """Per-row logsumexp_{a in C(s)} Q(s, a) - Q(s, a_logged); ``q_candidates`` [B, K], ``mask`` bool [B, K]
    (an all-False row counts every position), ``q_logged`` [B]."""
    masked = q_candidates.masked_fill(~effective_mask(mask), float("-inf"))
    return torch.logsumexp(masked, dim=1) - q_logged


class ParametricDQNTrainer:
    """Owns Q(s, a), its target copy and optimizer; ``update(batch)`` does one step (module docstring).

    Batches are preprocessed: ``state`` [B, S], ``action`` [B, A] (the chosen item's input), ``candidates`` /
    ``next_candidates`` [B, K, A] with ``possible_(next_)actions_mask`` [B, K].
    """

    scores = "q_values"  # one per candidate

    def __init__(self, q_network: ParametricQNetwork, params: ParametricDQNTrainerParameters, *,
                 device: torch.device | str = "cpu", alpha: float | None = None,
                 amp_dtype: torch.dtype | None = None):
        self.device = torch.device(device)
        self.params, self.rl, self.alpha = params, params.rl, alpha
        self.q_network = q_network.to(self.device)
        self.q_target = copy.deepcopy(self.q_network).requires_grad_(False)
        self.amp_dtype = amp_dtype if self.device.type == "cuda" else None
        self.steps = GradientSteps({"q": (params.optimizer, self.q_network.parameters())},
                                   params.minibatches_per_step, self.amp_dtype)

    @property
    def learning_rate(self) -> float:
        return self.steps.learning_rate

    def target_values(self, batch: Batch) -> Tensor:
        """y for each row (no gradient)."""
        assert batch.next_candidates is not None, "parametric batches carry candidate sets"
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            if self.rl.maxq_learning:
                q_next_target = self.q_target(batch.next_state, batch.next_candidates).float()
                q_next = (self.q_network(batch.next_state, batch.next_candidates).float()
                          if self.params.double_q_learning else q_next_target)
                value = next_state_value(q_next, q_next_target, batch.possible_next_actions_mask,
                                         batch.not_terminal.long(), double_q=self.params.double_q_learning, maxq=True)
            else:
                value = self.q_target.single(batch.next_state, batch.next_action).float()
        return td_target(batch.reward, discount(self.rl, batch.step, batch.time_diff), batch.not_terminal,
                         value.float())

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        """Named loss terms (with gradient); ``loss`` is what is minimized."""
        target = self.target_values(batch)
        with autocast(self.device, self.amp_dtype):
            q_logged = self.q_network.single(batch.state, batch.action).float()
        td = q_loss(q_logged, target, self.rl.q_network_loss).mean()
        terms = {"loss": td, "td_loss": td, "q_logged": q_logged.mean()}
        if self.alpha is not None:
            assert batch.candidates is not None, "parametric batches carry candidate sets"
            with autocast(self.device, self.amp_dtype):
                q_all = self.q_network(batch.state, batch.candidates).float()
            penalty = conservative_penalty(q_all, batch.possible_actions_mask, q_logged).mean()
            terms["cql_penalty"] = penalty
            terms["loss"] = td + self.alpha * penalty
        return terms

    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One minibatch: backward; every ``minibatches_per_step`` minibatches an optimizer step and a soft
        target update. Returns the detached loss terms."""
        terms = self.losses(batch)
        if self.steps(terms["loss"]):
            soft_update(self.q_target, self.q_network, self.rl.target_update_rate)
        return detached(terms)

    def end_epoch(self) -> None:
        self.steps.end_epoch()

    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        """The loss terms on held-out data, plus ``q_policy`` (mean of max Q over each row's candidates) and
        ``policy_agrees`` (the share of rows where the greedy choice is the logged item)."""
        assert batch.candidates is not None and batch.action_index is not None, "parametric batches"
        with eval_mode(self.q_network):
            terms = self.losses(batch)
            with torch.no_grad():
                q_all = self.q_network(batch.state, batch.candidates).float()
        q_all = q_all.masked_fill(~effective_mask(batch.possible_actions_mask), float("-inf"))
        terms["q_policy"] = q_all.max(dim=1).values.mean()
        terms["policy_agrees"] = (q_all.argmax(dim=1) == batch.action_index).float().mean()
        return detached(terms)

    def state_dict(self) -> dict[str, Any]:
        return {"q_network": self.q_network.state_dict(), "q_target": self.q_target.state_dict(),
                "steps": self.steps.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q_network.load_state_dict(state["q_network"])
        self.q_target.load_state_dict(state["q_target"])
        self.steps.load_state_dict(state["steps"])


def _network(model: ParametricDQNModel | ParametricCQLModel, context: BuildContext) -> ParametricQNetwork:
    """``context.input_dim``: the state input; ``context.action_dim``: the item input."""
    return ParametricQNetwork(build_network(model.net_builder, context.input_dim + context.action_dim, 1))


def build(model: ParametricDQNModel, context: BuildContext) -> ParametricDQNTrainer:
    """ParametricDQN: Q(s, a) from ``net_builder`` over the concatenated inputs."""
    return ParametricDQNTrainer(_network(model, context), model.trainer_param, device=context.device,
                                amp_dtype=context.amp_dtype)


def build_conservative(model: ParametricCQLModel, context: BuildContext) -> ParametricDQNTrainer:
    """ParametricCQL: the same with the conservative penalty weighted by ``trainer_param.alpha``."""
    return ParametricDQNTrainer(_network(model, context), model.trainer_param, device=context.device,
                                alpha=model.trainer_param.alpha, amp_dtype=context.amp_dtype)
