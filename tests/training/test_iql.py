"""Discrete IQL: the expectile loss, the V-bootstrapped Q-target and the advantage-weighted actor."""

from __future__ import annotations

import math

import pytest
import torch

from batchrl.config import IQLTrainerParameters, OptimizerConfig, RLParameters, SGDParameters
from batchrl.models.heads import StateValue
from batchrl.training.algorithms.iql import IQLTrainer, expectile_loss
from tests.support.algorithms import batch, table_network


def test_expectile_loss_hand_computed():
    assert expectile_loss(torch.tensor([2.0, -2.0, 0.0]), 0.7).tolist() == pytest.approx([2.8, 1.2, 0.0])
    assert expectile_loss(torch.tensor([2.0, -2.0]), 0.5).tolist() == pytest.approx([2.0, 2.0])


def test_expectile_regression_recovers_the_expectile():
    samples = torch.tensor([0.0, 10.0])
    v = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([v], lr=0.05)
    for _ in range(500):
        optimizer.zero_grad()
        expectile_loss(samples - v, 0.9).mean().backward()
        optimizer.step()
    # 0.9-expectile of {0, 10}: 0.9 (10 - v) = 0.1 v -> v = 9
    assert v.item() == pytest.approx(9.0, abs=1e-3)


def sgd(lr: float = 0.1) -> OptimizerConfig:
    return OptimizerConfig(SGD=SGDParameters(lr=lr))


def trainer(**kw) -> IQLTrainer:
    params = IQLTrainerParameters(actions=["a", "b"], rl=RLParameters(gamma=0.5, target_update_rate=0.5),
                                  optimizer=sgd(), value_optimizer=sgd(), actor_optimizer=sgd(0.5), **kw)
    critic = table_network([[1.0, 3.0], [0.0, 0.0], [0.0, 0.0]])
    value = StateValue(table_network([[2.0], [6.0], [0.0]]))
    actor = table_network([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    return IQLTrainer(critic, value, actor, params)


def test_losses_on_a_hand_computed_batch():
    t = trainer(expectile=0.7, beta=2.0, max_weight=5.0)
    b = batch([0, 0], [0, 1], [1.0, 1.0], [1, 1], not_terminal=[True, False])
    terms = t.losses(b)
    # y = 1 + 0.5 * V(s1) = 4 and 1 (terminal); Q(s0) = [1, 3]: (1 - 4)^2, (3 - 1)^2
    assert terms["td_loss"].item() == pytest.approx((9 + 4) / 2)
    # u = Q_T(s0, a) - V(s0) = -1, 1: weights 0.3 and 0.7
    assert terms["value_loss"].item() == pytest.approx((0.3 + 0.7) / 2)
    # actor weights min(exp(2 u), 5) = e^-2, 5; log pi = log 0.5 for both
    assert terms["actor_weight"].item() == pytest.approx((math.exp(-2) + 5.0) / 2)
    assert terms["actor_loss"].item() == pytest.approx((math.exp(-2) + 5.0) * math.log(2) / 2)


def test_updates_prefer_the_better_logged_action():
    t = trainer()
    b = batch([0, 0], [0, 1], [1.0, 1.0], [1, 1], not_terminal=[True, False])
    for _ in range(5):
        t.update(b)
    assert t.q_network(torch.eye(3)[[0]]).argmax().item() == 1
