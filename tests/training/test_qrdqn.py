"""QR-DQN: the quantile Huber loss and the quantile target on hand-computed batches."""

from __future__ import annotations

import pytest
import torch

from batchrl.config import OptimizerConfig, QRDQNTrainerParameters, RLParameters, SGDParameters
from batchrl.models.distributional import AtomNetwork, QuantileMean
from batchrl.training.algorithms.distributional import quantile_huber_loss, quantile_midpoints
from batchrl.training.algorithms.qrdqn import qrdqn_trainer
from tests.support.algorithms import batch, table_network


def test_quantile_midpoints():
    assert quantile_midpoints(2).tolist() == [0.25, 0.75]
    assert quantile_midpoints(4).tolist() == [0.125, 0.375, 0.625, 0.875]


def test_quantile_huber_loss_hand_computed():
    tau = quantile_midpoints(2)
    # u = 1 for both quantiles (target above): Huber 0.5, weights tau = 0.25, 0.75
    assert quantile_huber_loss(torch.zeros(1, 2), torch.tensor([[1.0]]), tau).item() == pytest.approx(0.5)
    # u = -2 (target below): Huber 1 * (2 - 0.5) = 1.5, weights 1 - tau = 0.75, 0.25
    assert quantile_huber_loss(torch.zeros(1, 2), torch.tensor([[-2.0]]), tau).item() == pytest.approx(1.5)
    # two target samples are averaged; quantile 0 at 0 vs samples {1, -2}: (0.25*0.5 + 0.75*1.5) / 2
    # quantile 1 at 1 vs {1, -2}: (0 + 0.25 * 1.5 ... u = -3 -> Huber 2.5) / 2
    loss = quantile_huber_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, -2.0]]), tau)
    assert loss.item() == pytest.approx((0.25 * 0.5 + 0.75 * 1.5) / 2 + (0.0 + 0.25 * 2.5) / 2)
    # kappa scales the quadratic zone and divides the loss: u = 1, kappa = 2 -> 0.5 / 2 per quantile weight
    assert quantile_huber_loss(torch.zeros(1, 2), torch.tensor([[1.0]]), tau, kappa=2.0).item() == \
        pytest.approx(0.25)


def test_quantile_loss_is_minimized_at_the_quantiles():
    samples = torch.arange(100, dtype=torch.float32).unsqueeze(0)  # uniform on 0..99
    theta = torch.zeros(1, 4, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=1.0)
    for _ in range(800):
        optimizer.zero_grad()
        quantile_huber_loss(theta, samples, quantile_midpoints(4)).sum().backward()
        optimizer.step()
    assert theta.detach()[0].tolist() == pytest.approx([12.5, 37.5, 62.5, 87.5], abs=1.5)


# 3 one-hot states, 2 actions, 2 quantiles; rows: [a0 q0, a0 q1, a1 q0, a1 q1]
ONLINE = [[0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 1.0, 5.0], [0.0, 0.0, 0.0, 0.0]]  # Q(s1) = [1, 3]
TARGET = [[0.0, 0.0, 0.0, 0.0], [10.0, 10.0, 4.0, 8.0], [0.0, 0.0, 0.0, 0.0]]  # Q_T(s1) = [10, 6]


def trainer(double_q: bool = True) -> object:
    params = QRDQNTrainerParameters(actions=["a", "b"], num_atoms=2, double_q_learning=double_q,
                                    rl=RLParameters(gamma=0.5, target_update_rate=0.5),
                                    optimizer=OptimizerConfig(SGD=SGDParameters(lr=0.1)))
    t = qrdqn_trainer(QuantileMean(AtomNetwork(table_network(ONLINE), 2, 2)), params)
    t.q_target.atoms.body.load_state_dict(table_network(TARGET).state_dict())
    return t


def test_quantile_targets_double_q_masks_and_terminal():
    b = batch([0, 0, 0, 0], [0, 1, 0, 0], [1.0, 1.0, 1.0, 2.0], [1, 1, 1, 1],
              possible_next=[[1, 1], [1, 1], [1, 0], [1, 1]], not_terminal=[True, True, True, False])
    targets = trainer().target_distribution(b).tolist()
    assert targets[0] == pytest.approx([1 + 0.5 * 4, 1 + 0.5 * 8])  # double Q: online argmax a1, target atoms
    assert targets[2] == pytest.approx([6.0, 6.0])  # a1 impossible -> a0
    assert targets[3] == pytest.approx([2.0, 2.0])  # terminal: all quantiles = r
    assert trainer(double_q=False).target_distribution(b).tolist()[0] == pytest.approx([6.0, 6.0])  # max Q_T: a0


def test_quantile_trainer_loss_and_update_moves_toward_target():
    t = trainer()
    b = batch([1], [1], [1.0], [1], not_terminal=[False])  # target: quantiles of a1 at s1 -> 1
    terms = t.losses(b)
    # theta(s1, a1) = [1, 5] vs target 1: u = [0, -4]: quantile 1 costs (1 - 0.75) * (4 - 0.5)
    assert terms["td_loss"].item() == pytest.approx(0.25 * 3.5)
    assert terms["q_logged"].item() == pytest.approx(3.0)
    before = t.q_network(b.state)[0, 1].item()
    t.update(b)
    assert t.q_network(b.state)[0, 1].item() < before
