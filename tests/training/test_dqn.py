"""DQN targets and losses on a hand-computed batch; soft target updates; the update step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from batchrl.config import DQNTrainerParameters, OptimizerConfig, RLParameters, SGDParameters
from batchrl.training.algorithms.dqn import DQNTrainer
from batchrl.training.optim import soft_update
from batchrl.training.td import discount, q_loss
from tests.support.algorithms import ONLINE, TARGET, hand_batch, table_network


def trainer(double_q=True, maxq=True, loss="mse", optimizer=None, **rl) -> DQNTrainer:
    params = DQNTrainerParameters(
        actions=["a", "b", "c"], double_q_learning=double_q,
        rl=RLParameters(gamma=0.5, maxq_learning=maxq, q_network_loss=loss, target_update_rate=0.25, **rl),
        optimizer=optimizer or OptimizerConfig(SGD=SGDParameters(lr=0.1)))
    t = DQNTrainer(table_network(ONLINE), params)
    t.q_target.load_state_dict(table_network(TARGET).state_dict())
    return t


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, [1 + 0.5 * 5, 2 + 0.5 * 10, 3]),  # double Q with masks, terminal
    ({"double_q": False}, [1 + 0.5 * 60, 2 + 0.5 * 40, 3]),  # max Q_T over possible actions
    ({"maxq": False}, [1 + 0.5 * 60, 2 + 0.5 * 10, 3]),  # SARSA: logged next action; none on terminal
    ({"use_seq_num_diff_as_time_diff": True}, [1 + 0.25 * 5, 2 + 0.5 * 10, 3]),  # gamma ** time_diff
    ({"use_seq_num_diff_as_time_diff": True, "time_diff_unit_length": 2.0},
     [1 + 0.5 ** 1 * 5, 2 + 0.5 ** 0.5 * 10, 3]),
    ({"multi_steps": 3}, [1 + 0.125 * 5, 2 + 0.5 * 10, 3]),  # gamma ** step
    ({"reward_boost": {"a": 10.0, "c": -1.0}}, [11 + 0.5 * 5, 2 + 0.5 * 10, 2]),
])
def test_target_on_hand_computed_batch(kwargs, expected):
    assert trainer(**kwargs).target_values(hand_batch()).tolist() == pytest.approx(expected)


def test_td_loss_mse_and_huber():
    # Q(s, a_logged) = [1, 0, 9] against y = [3.5, 7, 3]
    terms = trainer().losses(hand_batch())
    assert float(terms["td_loss"].detach()) == pytest.approx((2.5 ** 2 + 7 ** 2 + 6 ** 2) / 3)
    huber = trainer(loss="huber").losses(hand_batch())
    assert float(huber["td_loss"].detach()) == pytest.approx(((2.5 - 0.5) + (7 - 0.5) + (6 - 0.5)) / 3)
    assert q_loss(torch.tensor([0.0]), torch.tensor([0.5]), "huber").item() == pytest.approx(0.125)


def test_discount_constant_mode_ignores_time_diff():
    d = discount(RLParameters(gamma=0.9), torch.tensor([5, 1]), torch.tensor([7, 1]))
    assert d.tolist() == pytest.approx([0.9, 0.9])


def test_soft_update_arithmetic():
    target, source = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.clone() for p in target.parameters()]
    soft_update(target, source, 0.1)
    for t, b, s in zip(target.parameters(), before, source.parameters(), strict=True):
        assert torch.allclose(t, 0.1 * s + 0.9 * b)
    soft_update(target, source, 1.0)
    assert all(torch.equal(t, s) for t, s in zip(target.parameters(), source.parameters(), strict=True))


def test_update_steps_sgd_then_moves_target_by_tau():
    t = trainer()
    batch = hand_batch()
    target_before = t.q_target.weight.detach().clone()
    online_before = t.q_network.weight.detach().clone()
    q = online_before.T.clone().requires_grad_(True)  # the same step by hand: d/dQ mean (Q(s,a) - y)^2
    y = torch.tensor([3.5, 7.0, 3.0])
    loss = ((torch.stack([q[0, 0], q[1, 1], q[3, 2]]) - y) ** 2).mean()
    loss.backward()
    terms = t.update(batch)
    assert float(terms["loss"]) == pytest.approx(float(loss))
    expected_online = online_before - 0.1 * q.grad.T
    assert torch.allclose(t.q_network.weight, expected_online)
    assert torch.allclose(t.q_target.weight, 0.25 * expected_online + 0.75 * target_before)


def test_minibatches_per_step_accumulates_gradients():
    params = DQNTrainerParameters(actions=["a", "b", "c"], minibatches_per_step=2,
                                  rl=RLParameters(gamma=0.5, target_update_rate=0.5),
                                  optimizer=OptimizerConfig(SGD=SGDParameters(lr=0.1)))
    t = DQNTrainer(table_network(ONLINE), params)
    before = t.q_network.weight.detach().clone()
    t.update(hand_batch())
    assert torch.equal(t.q_network.weight, before)  # no step after the first of two minibatches
    t.update(hand_batch())
    assert not torch.equal(t.q_network.weight, before)


def test_state_dict_round_trip():
    a, b = trainer(), trainer()
    a.update(hand_batch())
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.q_network.weight, b.q_network.weight)
    assert torch.equal(a.q_target.weight, b.q_target.weight)
    assert float(a.update(hand_batch())["loss"]) == float(b.update(hand_batch())["loss"])
