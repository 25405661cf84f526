"""Helpers for the algorithm tests: table networks over one-hot states, hand-made batches, and one valid
config block per discrete algorithm (``MODELS``)."""

from __future__ import annotations

import torch
from torch import nn

from batchrl.config import (
    DiscreteBCQModel,
    DiscreteC51DQNModel,
    DiscreteCRRModel,
    DiscreteIQLModel,
    DiscreteQRDQNModel,
)
from batchrl.data.loader import Batch

NET = {"FullyConnected": {"sizes": [16], "activations": ["relu"]}}
TRAINER = {"actions": [0, 1, 2], "rl": {"gamma": 0.9, "target_update_rate": 0.1},
           "minibatch_size": 32,
           "optimizer": {"Adam": {"lr": 0.01, "lr_schedulers": [{"StepLR": {"step_size": 1, "gamma": 0.5}}]}}}
MODELS = {
    "DiscreteQRDQN": (DiscreteQRDQNModel, {"trainer_param": {**TRAINER, "num_atoms": 5}, "net_builder": NET}),
    "DiscreteC51DQN": (DiscreteC51DQNModel, {"trainer_param": {**TRAINER, "num_atoms": 11, "qmin": -5, "qmax": 15},
                                              "net_builder": NET}),
    "DiscreteBCQ": (DiscreteBCQModel, {"trainer_param": {**TRAINER, "drop_threshold": 0.3}, "net_builder": NET,
                                       "imitator_net_builder": NET}),
    "DiscreteCRR": (DiscreteCRRModel, {"trainer_param": {**TRAINER, "beta": 1.0, "actor_optimizer":
                                                         {"Adam": {"lr": 0.01}}},
                                       "actor_net_builder": NET, "critic_net_builder": NET}),
    "DiscreteIQL": (DiscreteIQLModel, {"trainer_param": {**TRAINER, "expectile": 0.8},
                                       "actor_net_builder": NET, "critic_net_builder": NET, "value_net_builder": NET}),
}

ONLINE = [[1.0, 2.0, 3.0], [4.0, 0.0, 1.0], [0.0, 5.0, 2.0], [2.0, 2.0, 9.0]]
TARGET = [[10.0, 20.0, 30.0], [4.0, 40.0, 10.0], [60.0, 5.0, 20.0], [20.0, 20.0, 90.0]]


def table_network(values: list[list[float]]) -> nn.Linear:
    """A linear layer whose output for one-hot state s is ``values[s]`` (a flat row per state)."""
    net = nn.Linear(len(values), len(values[0]), bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor(values, dtype=torch.float32).T)
    return net


def one_hot(indices: list[int], n: int = 3) -> torch.Tensor:
    return torch.eye(n)[indices]


def batch(state: list[int], action: list[int], reward: list[float], next_state: list[int], *, num_actions: int = 2,
          not_terminal: list[bool] | None = None, possible_next: list[list[int]] | None = None,
          possible: list[list[int]] | None = None, next_action: list[int] | None = None, n: int = 3) -> Batch:
    rows = len(state)
    return Batch(
        state=one_hot(state, n), state_presence=None, next_state=one_hot(next_state, n), next_state_presence=None,
        action=torch.tensor(action), next_action=torch.tensor(next_action or [0] * rows),
        reward=torch.tensor(reward, dtype=torch.float32),
        possible_actions_mask=torch.tensor(possible, dtype=torch.bool) if possible
        else torch.ones(rows, num_actions, dtype=torch.bool),
        possible_next_actions_mask=torch.tensor(possible_next, dtype=torch.bool) if possible_next
        else torch.ones(rows, num_actions, dtype=torch.bool),
        not_terminal=torch.tensor(not_terminal if not_terminal is not None else [True] * rows),
        action_probability=torch.full((rows,), 1.0 / num_actions), step=torch.ones(rows, dtype=torch.long),
        time_diff=torch.ones(rows, dtype=torch.long))


def hand_batch() -> Batch:
    """Three hand-computed transitions over the 4-state tables ``ONLINE``/``TARGET`` (see the DQN tests)."""
    # row 0: s0 -a0-> s2, every next action possible; double Q picks argmax Q(s2) = a1 -> Q_T = 5, max Q_T = 60
    # row 1: s1 -a1-> s1, next a0 impossible: double Q argmax of [-, 0, 1] = a2 -> Q_T = 10; max Q_T = 40
    # row 2: s3 -a2-> terminal
    return Batch(
        state=one_hot([0, 1, 3], 4), state_presence=None, next_state=one_hot([2, 1, 1], 4), next_state_presence=None,
        action=torch.tensor([0, 1, 2]), next_action=torch.tensor([0, 2, 3]),
        reward=torch.tensor([1.0, 2.0, 3.0]),
        possible_actions_mask=torch.ones(3, 3, dtype=torch.bool),
        possible_next_actions_mask=torch.tensor([[1, 1, 1], [0, 1, 1], [0, 0, 0]], dtype=torch.bool),
        not_terminal=torch.tensor([True, True, False]),
        action_probability=torch.full((3,), 1 / 3), step=torch.tensor([3, 1, 1]), time_diff=torch.tensor([2, 1, 1]))
