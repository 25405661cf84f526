"""Models for counterfactual policy evaluation, trained in the same step as the Q-network (spec §6.5).

- reward model r_hat(s, a): regression of the logged reward on (s, a_logged), squared error;
- CPE value model Q_hat(s, a) of the *target* policy pi = masked softmax(Q(s)/temperature) (the policy
  being trained), fitted like SARSA toward its expected next value (Jiang & Li 2016 need it for
  sequential doubly robust):

      y = r + d * not_terminal * sum_a' pi(a'|s') Q_hat_T(s', a'),   loss = mean (Q_hat(s, a) - y)^2

  with a soft-updated target copy Q_hat_T, the same discount d as the Q-network (logged reward, no boost).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from batchrl.config import DQNTrainerParameters
from batchrl.data.loader import Batch
from batchrl.models.policy import masked_softmax
from batchrl.training.optim import build_optimizer, build_schedulers, soft_update
from batchrl.training.td import autocast, discount, td_target


class CPETrainer:
    """Trains the reward model and the CPE value model for the policy of ``policy_network``."""

    def __init__(self, reward_network: nn.Module, value_network: nn.Module, policy_network: nn.Module,
                 params: DQNTrainerParameters, *, device: torch.device | str = "cpu",
                 amp_dtype: torch.dtype | None = None):
        self.device = torch.device(device)
        self.params, self.rl = params, params.rl
        self.reward_network = reward_network.to(self.device)
        self.value_network = value_network.to(self.device)
        self.value_target = copy.deepcopy(self.value_network).requires_grad_(False)
        self.policy_network = policy_network
        self.reward_optimizer = build_optimizer(params.optimizer, self.reward_network.parameters())
        self.value_optimizer = build_optimizer(params.optimizer, self.value_network.parameters())
        self.schedulers = build_schedulers(params.optimizer, self.reward_optimizer) + \
            build_schedulers(params.optimizer, self.value_optimizer)
        self.amp_dtype = amp_dtype if self.device.type == "cuda" else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self._minibatches = 0

    def target_probs(self, state: Tensor, possible: Tensor) -> Tensor:
        """pi(.|s) of the policy being trained (no gradient)."""
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            q = self.policy_network(state).float()
        return masked_softmax(q, possible, self.rl.temperature)

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        action = batch.action.unsqueeze(1)
        with autocast(self.device, self.amp_dtype):
            r_hat = self.reward_network(batch.state).float().gather(1, action).squeeze(1)
            q_hat = self.value_network(batch.state).float().gather(1, action).squeeze(1)
        pi_next = self.target_probs(batch.next_state, batch.possible_next_actions_mask)
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            v_next = (pi_next * self.value_target(batch.next_state).float()).sum(dim=1)
        y = td_target(batch.reward, discount(self.rl, batch.step, batch.time_diff), batch.not_terminal, v_next)
        return {"reward_loss": F.mse_loss(r_hat, batch.reward), "cpe_q_loss": F.mse_loss(q_hat, y)}

    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One minibatch for both models (optimizer steps every ``minibatches_per_step``)."""
        terms = self.losses(batch)
        k = self.params.minibatches_per_step
        loss = self.scaler.scale((terms["reward_loss"] + terms["cpe_q_loss"]) / k)
        loss.backward()  # type: ignore[no-untyped-call]  # torch.Tensor.backward is unannotated
        self._minibatches += 1
        if self._minibatches % k == 0:
            for optimizer in (self.reward_optimizer, self.value_optimizer):
                self.scaler.step(optimizer)
            self.scaler.update()
            self.reward_optimizer.zero_grad(set_to_none=True)
            self.value_optimizer.zero_grad(set_to_none=True)
            soft_update(self.value_target, self.value_network, self.rl.target_update_rate)
        return {name: value.detach() for name, value in terms.items()}

    def end_epoch(self) -> None:
        for scheduler in self.schedulers:
            scheduler.step()

    @torch.no_grad()
    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        nets = (self.reward_network, self.value_network)
        modes = [n.training for n in nets]
        for n in nets:
            n.eval()
        try:
            return {name: value.detach() for name, value in self.losses(batch).items()}
        finally:
            for n, mode in zip(nets, modes, strict=True):
                n.train(mode)

    def state_dict(self) -> dict[str, Any]:
        return {"reward_network": self.reward_network.state_dict(), "value_network": self.value_network.state_dict(),
                "value_target": self.value_target.state_dict(),
                "reward_optimizer": self.reward_optimizer.state_dict(),
                "value_optimizer": self.value_optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "schedulers": [s.state_dict() for s in self.schedulers], "minibatches": self._minibatches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reward_network.load_state_dict(state["reward_network"])
        self.value_network.load_state_dict(state["value_network"])
        self.value_target.load_state_dict(state["value_target"])
        self.reward_optimizer.load_state_dict(state["reward_optimizer"])
        self.value_optimizer.load_state_dict(state["value_optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        self._minibatches = int(state["minibatches"])
