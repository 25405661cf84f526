"""The twin-critic step shared by SAC and TD3 (clipped double Q, Fujimoto et al. 2018), and the held-out
evaluation of their critics and policy.

    L_Q = sum_i mean (Q_i(s, a) - y)^2,   i = 1, 2,   y the algorithm's TD target (no gradient)

A trainer here has ``q1``, ``q2`` (Q(s, a) -> [B]), ``actor`` (s -> deterministic action in [-1, 1]^d)
and ``critic_steps`` (:class:`~batchrl.training.steps.GradientSteps` over both critics).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from batchrl.data.loader import Batch
from batchrl.training.steps import GradientSteps, eval_mode


class TwinCritics(Protocol):
    """What the shared critic step reads from a trainer (read-only, so any module subclass fits)."""

    @property
    def q1(self) -> nn.Module: ...
    @property
    def q2(self) -> nn.Module: ...
    @property
    def actor(self) -> nn.Module: ...
    @property
    def critic_steps(self) -> GradientSteps: ...


def critic_step(trainer: TwinCritics, batch: Batch, target: Tensor) -> tuple[Tensor, Tensor]:
    """One optimizer step of the twin critics toward ``target``. Returns (Q1 of the logged actions, L_Q)."""
    q1, q2 = trainer.q1(batch.state, batch.action), trainer.q2(batch.state, batch.action)
    loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
    trainer.critic_steps(loss)
    return q1, loss


def critic_evaluation(trainer: TwinCritics, batch: Batch, target: Tensor) -> dict[str, Tensor]:
    """Held-out terms against the TD ``target``: ``td_loss`` (both critics' MSE), ``q_logged`` (Q1 of the
    logged actions), ``q_policy`` (min Q at the deterministic policy's action) and
    ``policy_logged_distance`` (mean ||pi(s) - a||^2, normalized units)."""
    with eval_mode(trainer.q1, trainer.q2, trainer.actor):
        q1, q2 = trainer.q1(batch.state, batch.action), trainer.q2(batch.state, batch.action)
        policy = trainer.actor(batch.state)
        q_policy = torch.minimum(trainer.q1(batch.state, policy), trainer.q2(batch.state, policy))
        return {"td_loss": F.mse_loss(q1, target) + F.mse_loss(q2, target), "q_logged": q1.mean(),
                "q_policy": q_policy.mean(),
                "policy_logged_distance": (policy - batch.action).pow(2).sum(dim=1).mean()}
