"""DQN on logged transitions, discrete actions (spec section 6).

Per minibatch (Mnih et al. 2015, "Human-level control through deep RL"; double Q: van Hasselt et al.
2016, "Deep RL with Double Q-learning"), with possible-action masks (impossible next actions get -1e9):

    r'    = r + boost[a]                                      reward boost per action (optional)
    d     = gamma | gamma ** (time_diff / unit) | gamma ** step   the three discount modes
    v(s') = Q_T(s', argmax_{a' possible} Q(s', a'))           double Q
          | max_{a' possible} Q_T(s', a')                      max-Q
          | Q_T(s', a'_logged)                                 SARSA (maxq_learning: false)
    y     = r' + d * not_terminal * v(s')
    loss  = mean l(Q(s, a_logged) - y),  l = squared error (mse) | Huber (delta 1)

then the target network moves toward the online one: theta_T <- tau theta + (1 - tau) theta_T.
A variant adds ``penalty_weight * mean(penalty(Q(s, .), a, mask))`` to the loss (discrete CQL,
:mod:`batchrl.training.cql`). An all-False possible-actions row means "not recorded" (every action).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from batchrl.config import DQNTrainerParameters, RLParameters
from batchrl.data.loader import Batch
from batchrl.models.policy import effective_mask
from batchrl.training.optim import build_optimizer, build_schedulers, soft_update

#: Value given to impossible actions before the max/argmax over next actions.
IMPOSSIBLE_ACTION_VALUE = -1e9

Penalty = Callable[[Tensor, Tensor, Tensor], Tensor]


def discount(rl: RLParameters, step: Tensor, time_diff: Tensor) -> Tensor:
    """Per-row discount: gamma ** (time_diff / time_diff_unit_length) with
    ``use_seq_num_diff_as_time_diff``, gamma ** step with ``multi_steps``, else gamma."""
    if rl.use_seq_num_diff_as_time_diff:
        exponent = time_diff.double() / rl.time_diff_unit_length
    elif rl.multi_steps is not None:
        exponent = step.double()
    else:
        return torch.full(step.shape, rl.gamma, dtype=torch.float32, device=step.device)
    return torch.pow(torch.tensor(rl.gamma, dtype=torch.float64, device=step.device), exponent).float()


def reward_boost_vector(rl: RLParameters, actions: list[str], device: torch.device) -> Tensor | None:
    """``rl.reward_boost`` (action name -> boost) as a float [A] tensor in action order; None if unset."""
    boost = rl.reward_boost or {}
    return torch.tensor([boost.get(a, 0.0) for a in actions], device=device) if boost else None


def boosted_reward(reward: Tensor, action: Tensor, boost: Tensor | None) -> Tensor:
    """r + boost[a] (``boost`` float [A], or None for no boost)."""
    return reward if boost is None else reward + boost[action]


def next_state_value(q_next: Tensor, q_next_target: Tensor, possible_next: Tensor, next_action: Tensor,
                     *, double_q: bool, maxq: bool) -> Tensor:
    """v(s') of the module docstring, before the not_terminal factor.

    Args:
        q_next: [B, A] online Q(s', .) (used by double Q to pick a*).
        q_next_target: [B, A] target Q_T(s', .).
        possible_next: [B, A] bool possible next actions.
        next_action: [B] long logged next action (SARSA); A = none.
    """
    num_actions = q_next_target.shape[1]
    if not maxq:
        has_next = next_action < num_actions
        chosen = next_action.clamp(max=num_actions - 1).unsqueeze(1)
        return torch.where(has_next, q_next_target.gather(1, chosen).squeeze(1), 0.0)
    mask = effective_mask(possible_next)
    if double_q:
        best = q_next.masked_fill(~mask, IMPOSSIBLE_ACTION_VALUE).argmax(dim=1, keepdim=True)
        return q_next_target.gather(1, best).squeeze(1)
    return q_next_target.masked_fill(~mask, IMPOSSIBLE_ACTION_VALUE).max(dim=1).values


def td_target(reward: Tensor, gamma_d: Tensor, not_terminal: Tensor, value: Tensor) -> Tensor:
    """y = r + d * not_terminal * v(s')."""
    return reward + gamma_d * not_terminal.float() * value


def q_loss(predicted: Tensor, target: Tensor, kind: str) -> Tensor:
    """Per-row loss: squared error (``mse``) or Huber with delta 1 (``huber``)."""
    if kind == "huber":
        return F.huber_loss(predicted, target, reduction="none", delta=1.0)
    return F.mse_loss(predicted, target, reduction="none")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA when ``dtype`` is set; a no-op otherwise."""
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


class DQNTrainer:
    """Owns the Q-network, its target copy and optimizer; ``update(batch)`` does one training step.

    Batches hold preprocessed states (``Batch.state`` = network input). ``amp_dtype`` (CUDA only):
    bfloat16 or float16 autocast; float16 uses a gradient scaler.
    """

    def __init__(self, q_network: nn.Module, params: DQNTrainerParameters, *, device: torch.device | str = "cpu",
                 penalty: Penalty | None = None, penalty_name: str = "penalty", penalty_weight: float = 0.0,
                 amp_dtype: torch.dtype | None = None):
        self.device = torch.device(device)
        self.params, self.rl = params, params.rl
        self.num_actions = len(params.actions)
        self.q_network = q_network.to(self.device)
        self.q_target = copy.deepcopy(self.q_network).requires_grad_(False)
        self.optimizer = build_optimizer(params.optimizer, self.q_network.parameters())
        self.schedulers = build_schedulers(params.optimizer, self.optimizer)
        self.penalty, self.penalty_name, self.penalty_weight = penalty, penalty_name, penalty_weight
        self.amp_dtype = amp_dtype if self.device.type == "cuda" else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.reward_boost = reward_boost_vector(self.rl, params.actions, self.device)
        self._minibatches = 0

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def target_values(self, batch: Batch) -> Tensor:
        """y for each row (no gradient)."""
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            q_next_target = self.q_target(batch.next_state).float()
            q_next = self.q_network(batch.next_state).float() if self.params.double_q_learning else q_next_target
        value = next_state_value(q_next, q_next_target, batch.possible_next_actions_mask, batch.next_action,
                                 double_q=self.params.double_q_learning, maxq=self.rl.maxq_learning)
        reward = boosted_reward(batch.reward, batch.action, self.reward_boost)
        return td_target(reward, discount(self.rl, batch.step, batch.time_diff), batch.not_terminal, value)

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        """Named loss terms (with gradient); ``loss`` is what is minimized."""
        target = self.target_values(batch)
        with autocast(self.device, self.amp_dtype):
            q = self.q_network(batch.state).float()
        q_logged = q.gather(1, batch.action.unsqueeze(1)).squeeze(1)
        td = q_loss(q_logged, target, self.rl.q_network_loss).mean()
        terms = {"loss": td, "td_loss": td}
        if self.penalty is not None:
            penalty = self.penalty(q, batch.action, batch.possible_actions_mask).mean()
            terms[self.penalty_name] = penalty
            terms["loss"] = td + self.penalty_weight * penalty
        terms["q_logged"] = q_logged.mean()
        return terms

    def update(self, batch: Batch) -> dict[str, Tensor]:
        """One minibatch: backward; every ``minibatches_per_step`` minibatches an optimizer step and a
        soft target update. Returns the detached loss terms (0-d tensors on the device)."""
        terms = self.losses(batch)
        k = self.params.minibatches_per_step
        self.scaler.scale(terms["loss"] / k).backward()
        self._minibatches += 1
        if self._minibatches % k == 0:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            soft_update(self.q_target, self.q_network, self.rl.target_update_rate)
        return {name: value.detach() for name, value in terms.items()}

    def end_epoch(self) -> None:
        """Step the learning-rate schedules (once per epoch)."""
        for scheduler in self.schedulers:
            scheduler.step()

    @torch.no_grad()
    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        """The loss terms on held-out data, without training (eval TD loss)."""
        was_training = self.q_network.training
        self.q_network.eval()
        try:
            return {name: value.detach() for name, value in self.losses(batch).items()}
        finally:
            self.q_network.train(was_training)

    def state_dict(self) -> dict:
        return {"q_network": self.q_network.state_dict(), "q_target": self.q_target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "schedulers": [s.state_dict() for s in self.schedulers], "minibatches": self._minibatches}

    def load_state_dict(self, state: dict) -> None:
        self.q_network.load_state_dict(state["q_network"])
        self.q_target.load_state_dict(state["q_target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        self._minibatches = int(state["minibatches"])
