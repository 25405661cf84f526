"""Discrete CRR: advantage weights, the critic target and the actor update on hand-computed batches."""

from __future__ import annotations

import math

import pytest
import torch

from batchrl.config import CRRTrainerParameters, OptimizerConfig, RLParameters, SGDParameters
from batchrl.training.actor_losses import masked_log_policy, weighted_log_likelihood_loss
from batchrl.training.algorithms.crr import CRRTrainer, crr_advantage, crr_weight
from tests.support.algorithms import batch, table_network

Q = torch.tensor([[1.0, 3.0], [2.0, 0.0]])
PI = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
ALL = torch.ones(2, 2, dtype=torch.bool)


def params(**kw) -> CRRTrainerParameters:
    return CRRTrainerParameters(actions=["a", "b"], rl=RLParameters(gamma=0.5, target_update_rate=0.5),
                                optimizer=OptimizerConfig(SGD=SGDParameters(lr=0.1)),
                                actor_optimizer=OptimizerConfig(SGD=SGDParameters(lr=0.5)), **kw)


def test_advantage_mean_and_max():
    action = torch.tensor([0, 0])
    # mean: 1 - (0.5 + 1.5) = -1; 2 - (0.5 + 0) = 1.5.  max: 1 - 3 = -2; 2 - 2 = 0
    assert crr_advantage(Q, PI, action, ALL, "mean").tolist() == pytest.approx([-1.0, 1.5])
    assert crr_advantage(Q, PI, action, ALL, "max").tolist() == pytest.approx([-2.0, 0.0])
    # max over possible actions only: a1 impossible in row 0 -> 1 - 1 = 0
    possible = torch.tensor([[True, False], [True, True]])
    assert crr_advantage(Q, PI, action, possible, "max").tolist() == pytest.approx([0.0, 0.0])


def test_advantage_weights():
    a = torch.tensor([-1.0, 1.5, 10.0])
    assert crr_weight(a, params(beta=1.0, max_weight=20.0)).tolist() == \
        pytest.approx([math.exp(-1), math.exp(1.5), 20.0])  # exp(10) clipped at max_weight
    assert crr_weight(a, params(beta=2.0)).tolist()[:2] == pytest.approx([math.exp(-0.5), math.exp(0.75)])
    assert crr_weight(a, params(weight="binary")).tolist() == [0.0, 1.0, 1.0]


def test_weighted_log_likelihood_with_masks():
    logits = torch.log(torch.tensor([[0.2, 0.8], [0.5, 0.5]]))
    loss = weighted_log_likelihood_loss(logits, torch.tensor([0, 1]), ALL, torch.tensor([2.0, 0.0]))
    assert loss.tolist() == pytest.approx([-2 * math.log(0.2), 0.0])
    # impossible actions get no probability; the logged action always counts
    log_pi = masked_log_policy(torch.zeros(1, 3), torch.tensor([[True, False, True]]))
    assert log_pi.exp()[0].tolist() == pytest.approx([0.5, 0.0, 0.5])
    log_pi = masked_log_policy(torch.zeros(1, 3), torch.tensor([[True, False, False]]), torch.tensor([1]))
    assert log_pi.exp()[0].tolist() == pytest.approx([0.5, 0.5, 0.0])


def test_critic_target_is_the_actors_expected_next_value():
    critic = table_network([[0.0, 0.0], [4.0, 8.0], [0.0, 0.0]])
    actor = table_network([[0.0, 0.0], [0.0, math.log(3.0)], [0.0, 0.0]])  # pi(s1) = [0.25, 0.75]
    t = CRRTrainer(critic, actor, params())
    b = batch([0, 0], [0, 0], [1.0, 1.0], [1, 1], possible_next=[[1, 1], [1, 0]])
    terms = t.losses(b)
    # y = 1 + 0.5 * (0.25 * 4 + 0.75 * 8) = 4.5;  a1 impossible: y = 1 + 0.5 * 4 = 3;  Q(s0, a0) = 0
    assert terms["td_loss"].item() == pytest.approx((4.5 ** 2 + 3 ** 2) / 2)


def test_actor_moves_toward_the_action_with_positive_advantage():
    critic = table_network([[0.0, 2.0], [0.0, 0.0], [0.0, 0.0]])  # at s0, a1 is better
    actor = table_network([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    t = CRRTrainer(critic, actor, params(weight="binary"))
    b = batch([0, 0], [0, 1], [0.0, 2.0], [2, 2], not_terminal=[False, False])  # both actions logged
    for _ in range(10):
        terms = t.update(b)
    assert terms["actor_weight"].item() == pytest.approx(0.5)  # only the a1 row has A > 0
    assert t.q_network(torch.eye(3)[[0]]).argmax().item() == 1
