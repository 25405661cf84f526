"""Distributional RL: the quantile Huber loss (QR-DQN), the categorical projection (C51) and the
trainer both share.

The math is pure functions over tensors; :mod:`~batchrl.training.algorithms.qrdqn` and :mod:`~batchrl.training.algorithms.c51`
plug their target and loss into :class:`DistributionalDQNTrainer` (DQN's discount, reward boost,
double-Q/SARSA next action and possible-action masks).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from batchrl.config import DQNTrainerParameters
from batchrl.data.loader import Batch
from batchrl.models.distributional import CategoricalMean, QuantileMean
from batchrl.models.policy import masked_argmax
from batchrl.training.optim import soft_update
from batchrl.training.steps import GradientSteps, detached, eval_mode
from batchrl.training.td import autocast, boosted_reward, discount, reward_boost_vector


def quantile_midpoints(num_atoms: int, device: torch.device | str = "cpu") -> Tensor:
    """tau_hat_i = (2 i + 1) / (2 N), i = 0..N-1: the quantile levels QR-DQN's N outputs estimate."""
    return (2 * torch.arange(num_atoms, device=device, dtype=torch.float32) + 1) / (2 * num_atoms)


def quantile_huber_loss(predicted: Tensor, target: Tensor, tau: Tensor, kappa: float = 1.0) -> Tensor:
    """Per-row quantile Huber loss (Dabney et al. 2018, "Distributional RL with Quantile Regression", eq. 10):

        u_ij = target_j - predicted_i
        rho_ij = |tau_i - 1[u_ij < 0]| * H_kappa(u_ij) / kappa,  H_kappa(u) = u^2/2 if |u| <= kappa
                                                                            else kappa (|u| - kappa/2)
        loss = sum_i mean_j rho_ij

    Under-estimating quantile i (u > 0) costs tau_i, over-estimating it 1 - tau_i, so theta_i moves to
    the tau_i-quantile of the target distribution.

    Args:
        predicted: [B, N] quantiles theta_i(s, a) (with gradient).
        target: [B, M] target samples r + d theta_T,j(s', a*) (no gradient).
        tau: [N] quantile levels of ``predicted`` (:func:`quantile_midpoints`).
        kappa: Huber threshold (> 0).
    Returns:
        [B] loss per row.
    """
    u = target.unsqueeze(1) - predicted.unsqueeze(2)  # [B, N, M]
    abs_u = u.abs()
    huber = torch.where(abs_u <= kappa, 0.5 * u * u, kappa * (abs_u - 0.5 * kappa))
    weight = (tau.view(1, -1, 1) - (u.detach() < 0).float()).abs()
    return (weight * huber / kappa).mean(dim=2).sum(dim=1)


def categorical_projection(next_probs: Tensor, reward: Tensor, scale: Tensor, support: Tensor) -> Tensor:
    """Project the distribution of r + scale * Z onto the fixed atoms (Bellemare et al. 2017,
    "A Distributional Perspective on RL", algorithm 1).

    Each atom z_j of the next distribution (mass p_j) moves to Tz_j = clip(r + scale z_j, z_0, z_{N-1})
    and its mass is split between the two neighbouring atoms in proportion to closeness:
    b = (Tz_j - z_0) / dz, l = floor(b), u = ceil(b); m_l += p_j (u - b), m_u += p_j (b - l)
    (all of p_j to l when b is an atom). Mass is conserved.

    Args:
        next_probs: [B, N] p(s', a*) (rows sum to 1).
        reward: [B] r.
        scale: [B] discount * not_terminal (0 on terminal rows: all mass goes to r).
        support: [N] evenly spaced atoms.
    Returns:
        [B, N] the target distribution m.
    """
    num_atoms = support.shape[0]
    vmin, vmax = float(support[0]), float(support[-1])
    delta = (vmax - vmin) / (num_atoms - 1)
    tz = (reward.unsqueeze(1) + scale.unsqueeze(1) * support.unsqueeze(0)).clamp(vmin, vmax)
    b = ((tz - vmin) / delta).clamp(0, num_atoms - 1)
    lower, upper = b.floor().long(), b.ceil().long()
    on_atom = lower == upper
    lower_weight = torch.where(on_atom, torch.ones_like(b), upper.float() - b)
    upper_weight = torch.where(on_atom, torch.zeros_like(b), b - lower.float())
    next_probs = next_probs.to(b.dtype)
    projected = torch.zeros_like(b)
    projected.scatter_add_(1, lower, next_probs * lower_weight)
    projected.scatter_add_(1, upper, next_probs * upper_weight)
    return projected


def next_action_choice(q_next: Tensor, possible_next: Tensor, next_action: Tensor, *, maxq: bool
                       ) -> tuple[Tensor, Tensor]:
    """a* for the distributional target and whether the row has one.

    ``maxq``: a* = argmax over possible next actions of ``q_next`` [B, A] (the online network's mean
    for double Q, else the target network's); SARSA: the logged next action (none when it equals A).
    Returns (a* long [B], has_next bool [B]).
    """
    if maxq:
        return masked_argmax(q_next, possible_next), torch.ones_like(next_action, dtype=torch.bool)
    num_actions = q_next.shape[1]
    return next_action.clamp(max=num_actions - 1), next_action < num_actions


TargetFn = Callable[[Tensor, Tensor, Tensor], Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


class DistributionalDQNTrainer:
    """DQN over a return distribution; QR-DQN and C51 differ only in ``target_fn`` and ``loss_fn``.

    Per minibatch: a* from the mean Q-values (double Q: online network; masks honoured), the target
    network's atoms at (s', a*) become ``target_fn(atoms_T [B, N], r + boost, d * not_terminal)``, and
    ``loss_fn(atoms(s, a_logged) [B, N], target) -> [B]`` is minimized; then a soft target update.

    ``q_network`` maps states to Q-values [B, A] (:class:`~batchrl.models.distributional.QuantileMean`
    or ``CategoricalMean``; its ``atoms`` submodule gives [B, A, N]); it is what is exported and what
    the CPE models and per-epoch metrics read.
    """

    def __init__(self, q_network: QuantileMean | CategoricalMean, params: DQNTrainerParameters, target_fn: TargetFn, loss_fn: LossFn,
                 *, device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None):
        self.device = torch.device(device)
        self.params, self.rl = params, params.rl
        self.q_network = q_network.to(self.device)
        self.scores = "q_values"  # what q_network returns (export metadata "output")
        self.q_target = copy.deepcopy(self.q_network).requires_grad_(False)
        self.target_fn, self.loss_fn = target_fn, loss_fn
        self.amp_dtype = amp_dtype if self.device.type == "cuda" else None
        self.steps = GradientSteps({"q": (params.optimizer, self.q_network.parameters())},
                                   params.minibatches_per_step, self.amp_dtype)
        self.reward_boost = reward_boost_vector(self.rl, params.actions, self.device)

    @property
    def learning_rate(self) -> float:
        return self.steps.learning_rate

    def target_distribution(self, batch: Batch) -> Tensor:
        """The target for the logged action's atoms (no gradient), [B, N]."""
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            atoms_next = self.q_target.atoms(batch.next_state).float()
            online = self.q_network if self.params.double_q_learning else self.q_target
            q_next = online(batch.next_state).float()
        best, has_next = next_action_choice(q_next, batch.possible_next_actions_mask, batch.next_action,
                                            maxq=self.rl.maxq_learning)
        chosen = atoms_next[torch.arange(len(best), device=best.device), best]
        scale = discount(self.rl, batch.step, batch.time_diff) * (batch.not_terminal & has_next).float()
        reward = boosted_reward(batch.reward, batch.action, self.reward_boost)
        return self.target_fn(chosen, reward, scale)

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        target = self.target_distribution(batch)
        with autocast(self.device, self.amp_dtype):
            atoms = self.q_network.atoms(batch.state).float()
        logged = atoms[torch.arange(len(batch), device=atoms.device), batch.action]
        loss = self.loss_fn(logged, target).mean()
        with torch.no_grad():
            q_logged = self.q_network(batch.state).float().gather(1, batch.action.unsqueeze(1)).mean()
        return {"loss": loss, "td_loss": loss, "q_logged": q_logged}

    def update(self, batch: Batch) -> dict[str, Tensor]:
        terms = self.losses(batch)
        if self.steps(terms["loss"]):
            soft_update(self.q_target, self.q_network, self.rl.target_update_rate)
        return detached(terms)

    def end_epoch(self) -> None:
        """Step the learning-rate schedules (once per epoch)."""
        self.steps.end_epoch()

    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        with eval_mode(self.q_network):
            return detached(self.losses(batch))

    def state_dict(self) -> dict[str, Any]:
        return {"q_network": self.q_network.state_dict(), "q_target": self.q_target.state_dict(),
                "steps": self.steps.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q_network.load_state_dict(state["q_network"])
        self.q_target.load_state_dict(state["q_target"])
        self.steps.load_state_dict(state["steps"])
