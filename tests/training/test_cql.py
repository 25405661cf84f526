"""Discrete CQL: the conservative penalty on a toy batch and its place in the loss."""

from __future__ import annotations

import math

import pytest
import torch

from batchrl.config import CQLTrainerParameters, OptimizerConfig, RLParameters, SGDParameters
from batchrl.training.algorithms.cql import conservative_penalty, cql_trainer
from batchrl.training.algorithms.dqn import DQNTrainer
from tests.support.algorithms import ONLINE, TARGET, hand_batch, table_network


def test_penalty_on_toy_batch():
    q = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [5.0, -1.0, 2.0]])
    action = torch.tensor([2, 1, 1])
    possible = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 0, 1]], dtype=torch.bool)
    expected = [
        math.log(math.e ** 1 + math.e ** 2 + math.e ** 3) - 3.0,
        math.log(3.0) - 0.0,
        math.log(math.e ** 5 + math.e ** 2) - (-1.0),  # impossible actions do not enter the logsumexp
    ]
    assert conservative_penalty(q, action, possible).tolist() == pytest.approx(expected, rel=1e-6)


def test_penalty_is_positive_and_shrinks_when_logged_action_dominates():
    action = torch.tensor([0])
    possible = torch.ones(1, 2, dtype=torch.bool)
    close = conservative_penalty(torch.tensor([[1.0, 1.0]]), action, possible)
    dominant = conservative_penalty(torch.tensor([[10.0, 1.0]]), action, possible)
    assert float(close) == pytest.approx(math.log(2.0))
    assert 0 < float(dominant) < float(close)


def _cql(alpha: float) -> DQNTrainer:
    params = CQLTrainerParameters(actions=["a", "b", "c"], alpha=alpha, rl=RLParameters(gamma=0.5),
                                  optimizer=OptimizerConfig(SGD=SGDParameters(lr=0.1)))
    t = cql_trainer(table_network(ONLINE), params)
    t.q_target.load_state_dict(table_network(TARGET).state_dict())
    return t


def test_cql_loss_is_td_plus_alpha_penalty():
    batch = hand_batch()
    terms = {k: float(v.detach()) for k, v in _cql(0.5).losses(batch).items()}
    q = torch.tensor(ONLINE)[[0, 1, 3]]
    penalty = float(conservative_penalty(q, batch.action, batch.possible_actions_mask).mean())
    assert terms["cql_penalty"] == pytest.approx(penalty)
    assert terms["td_loss"] == pytest.approx((2.5 ** 2 + 7 ** 2 + 6 ** 2) / 3)
    assert terms["loss"] == pytest.approx(terms["td_loss"] + 0.5 * penalty)
    assert {k: float(v.detach()) for k, v in _cql(0.0).losses(batch).items()}["loss"] == \
        pytest.approx(terms["td_loss"])


def test_cql_lowers_unlogged_actions_more_than_dqn():
    batch = hand_batch()
    cql, plain = _cql(5.0), _cql(0.0)
    for _ in range(20):
        cql.update(batch)
        plain.update(batch)
    # state s0, logged action a0: the penalty pushes the unlogged actions a1, a2 down
    with torch.no_grad():
        q_cql = cql.q_network(torch.eye(4)[[0]])[0]
        q_plain = plain.q_network(torch.eye(4)[[0]])[0]
    assert float(q_cql[1]) < float(q_plain[1]) and float(q_cql[2]) < float(q_plain[2])
