"""DQN targets and losses on a hand-computed batch; soft target updates; the update step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from batchrl.config import (
    DiscreteDQNModel,
    DiscreteDQNTrainerParameters,
    DQNTrainerParameters,
    OptimizerConfig,
    RLParameters,
    SGDParameters,
)
from batchrl.training.actor_losses import imitation_loss
from batchrl.training.algorithms.dqn import DQNTrainer, build
from batchrl.training.optim import soft_update
from batchrl.training.td import discount, q_loss
from batchrl.training.trainer import BuildContext
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


def imitation_trainer(weight: float = 2.0, penalty: float = 0.0) -> DQNTrainer:
    model = DiscreteDQNModel.model_validate({
        "trainer_param": {"actions": ["a", "b", "c"], "imitation_weight": weight, "imitator_logit_penalty": penalty,
                          "optimizer": {"SGD": {"lr": 0.1}}},
        "net_builder": {"FullyConnected": {"sizes": [8, 8], "activations": ["relu", "relu"]}}})
    torch.manual_seed(0)
    return build(model, BuildContext(input_dim=4, action_dim=3))


def test_imitation_head_shares_the_hidden_layers_and_adds_its_weighted_loss():
    t = imitation_trainer(weight=2.0, penalty=0.5)
    assert t.imitation is not None and t.imitator is not None
    trunk, head = t.imitator
    assert trunk[0] is t.q_network.layers[0] and head is t.imitation.head and head.out_features == 3
    batch = hand_batch()
    terms = t.losses(batch)
    logits = t.imitator(batch.state)
    expected = imitation_loss(logits, batch.action, batch.possible_actions_mask, 0.5)
    assert float(terms["imitation_loss"]) == pytest.approx(float(expected))
    assert float(terms["loss"]) == pytest.approx(float(terms["td_loss"] + 2.0 * expected))
    head_before = head.weight.detach().clone()
    t.update(batch)  # one SGD step moves the head with the Q-network's optimizer
    assert not torch.equal(head.weight, head_before)
    assert float(t.losses(batch)["imitation_loss"]) < float(expected)
    # checkpoints carry the head; a fresh trainer restored from one scores the same
    fresh = imitation_trainer(weight=2.0, penalty=0.5)
    fresh.load_state_dict(t.state_dict())
    assert torch.equal(fresh.imitation.head.weight, head.weight)  # type: ignore[union-attr]
    assert float(fresh.losses(batch)["loss"]) == pytest.approx(float(t.losses(batch)["loss"]))


def test_no_imitation_head_by_default_and_the_penalty_needs_the_head():
    t = imitation_trainer(weight=0.0)
    assert t.imitation is None and "imitation_loss" not in t.losses(hand_batch())
    assert "imitation_head" not in t.state_dict()
    with pytest.raises(ValueError, match="imitator_logit_penalty needs imitation_weight"):
        DiscreteDQNTrainerParameters(actions=["a"], imitator_logit_penalty=0.5)
