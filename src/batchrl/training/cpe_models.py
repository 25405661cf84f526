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
from batchrl.training.optim import soft_update
from batchrl.training.steps import GradientSteps, detached, eval_mode
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
        self.amp_dtype = amp_dtype if self.device.type == "cuda" else None
        # The Q-network's optimizer config, one optimizer per model, stepped with the Q-network's cadence.
        self.steps = GradientSteps({"reward": (params.optimizer, self.reward_network.parameters()),
                                    "value": (params.optimizer, self.value_network.parameters())},
                                   params.minibatches_per_step, self.amp_dtype)

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
        """One minibatch for both models (optimizer steps every ``minibatches_per_step``; then a soft
        update of the value model's target)."""
        terms = self.losses(batch)
        if self.steps(terms["reward_loss"] + terms["cpe_q_loss"]):
            soft_update(self.value_target, self.value_network, self.rl.target_update_rate)
        return detached(terms)

    def end_epoch(self) -> None:
        self.steps.end_epoch()

    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        with eval_mode(self.reward_network, self.value_network):
            return detached(self.losses(batch))

    def state_dict(self) -> dict[str, Any]:
        return {"reward_network": self.reward_network.state_dict(), "value_network": self.value_network.state_dict(),
                "value_target": self.value_target.state_dict(), "steps": self.steps.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reward_network.load_state_dict(state["reward_network"])
        self.value_network.load_state_dict(state["value_network"])
        self.value_target.load_state_dict(state["value_target"])
        self.steps.load_state_dict(state["steps"])
