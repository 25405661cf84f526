"""What batch training and the online harness share for continuous actions (SAC, TD3, TD3+BC): building
the trainer from its model block, held-out evaluation of the critics and the policy, and the export of
the actor in the environment's units.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from batchrl.config import SACModel, TD3Model
from batchrl.data.loader import Batch
from batchrl.models.continuous import ActionScaler, Critic, DeterministicActor, GaussianActor, ScaledActor
from batchrl.models.networks import FullyConnected
from batchrl.serving.export import export_model


def build_continuous_trainer(model: SACModel | TD3Model, input_dim: int, action_dim: int, *,
                             device: torch.device | str = "cpu", seed: int = 0):
    """The SAC or TD3 trainer of ``model`` with fresh networks (seed torch before calling)."""
    from batchrl.training.sac import SACTrainer
    from batchrl.training.td3 import TD3Trainer

    actor_p, critic_p = model.actor_net_builder.params, model.critic_net_builder.params
    critics = [Critic(input_dim, action_dim, list(critic_p.sizes), list(critic_p.activations)) for _ in range(2)]
    if isinstance(model, SACModel):
        actor = GaussianActor(input_dim, action_dim, list(actor_p.sizes), list(actor_p.activations))
        value = None
        if model.value_net_builder is not None:
            value_p = model.value_net_builder.params
            value = FullyConnected(input_dim, 1, list(value_p.sizes), list(value_p.activations))
        return SACTrainer(actor, *critics, model.trainer_param, action_dim, value=value, device=device, seed=seed)
    actor = DeterministicActor(input_dim, action_dim, list(actor_p.sizes), list(actor_p.activations))
    return TD3Trainer(actor, *critics, model.trainer_param, device=device, seed=seed)


def critic_step(trainer, batch: Batch, target: Tensor) -> tuple[Tensor, Tensor]:
    """One optimizer step of the twin critics (``q1``, ``q2``, ``q_optimizer``) toward ``target``:
    L_Q = sum_i mean (Q_i(s, a) - y)^2. Returns (Q1 of the logged actions, L_Q)."""
    q1, q2 = trainer.q1(batch.state, batch.action), trainer.q2(batch.state, batch.action)
    loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
    trainer.q_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.q_optimizer.step()
    return q1, loss


@torch.no_grad()
def critic_evaluation(trainer, batch: Batch, target: Tensor) -> dict[str, Tensor]:
    """Held-out terms of an actor-critic trainer (``q1``, ``q2``, ``actor``) against the TD ``target``:
    ``td_loss`` (both critics' MSE), ``q_logged`` (Q1 of the logged actions), ``q_policy`` (min Q at the
    deterministic policy's action) and ``policy_logged_distance`` (mean ||pi(s) - a||^2, normalized units)."""
    nets = (trainer.q1, trainer.q2, trainer.actor)
    modes = [net.training for net in nets]
    for net in nets:
        net.eval()
    try:
        q1, q2 = trainer.q1(batch.state, batch.action), trainer.q2(batch.state, batch.action)
        policy = trainer.actor(batch.state)
        q_policy = torch.minimum(trainer.q1(batch.state, policy), trainer.q2(batch.state, policy))
        return {"td_loss": F.mse_loss(q1, target) + F.mse_loss(q2, target), "q_logged": q1.mean(),
                "q_policy": q_policy.mean(),
                "policy_logged_distance": (policy - batch.action).pow(2).sum(dim=1).mean()}
    finally:
        for net, mode in zip(nets, modes, strict=True):
            net.train(mode)


def continuous_epoch_metrics(trainer, eval_batch: Batch, action_names: list[str]) -> dict[str, Any]:
    """Per-epoch metrics on the (preprocessed) eval batch: the held-out terms and the mean action per
    dimension of the policy and of the logged data (normalized units, [-1, 1])."""
    terms = {name: float(value) for name, value in trainer.evaluate(eval_batch).items()}
    with torch.no_grad():
        policy = trainer.actor(eval_batch.state).float().cpu()
    logged = eval_batch.action.float().cpu()
    return {"eval": terms,
            "policy_action_mean": {a: float(policy[:, i].mean()) for i, a in enumerate(action_names)},
            "logged_action_mean": {a: float(logged[:, i].mean()) for i, a in enumerate(action_names)}}


def export_actor(uri: str, preprocessor: nn.Module, actor: nn.Module, low: list[float], high: list[float],
                 action_names: list[str], feature_ids: list[int], normalization: dict,
                 metadata: dict[str, Any]) -> None:
    """Write the serving policy: ``(values, presence) -> (action names, actions float32[B, d])`` with the
    deterministic action scaled from [-1, 1] to ``[low, high]`` per dimension (the environment's units)."""
    export_model(uri, preprocessor, ScaledActor(actor, ActionScaler(low, high)), action_names, feature_ids,
                 normalization, {**metadata, "output": "actions", "action_space": "continuous", "action_low": low,
                                 "action_high": high})
