"""C51: the categorical projection and the distributional target on hand-computed batches."""

from __future__ import annotations

import math

import pytest
import torch

from batchrl.config import C51TrainerParameters, OptimizerConfig, RLParameters, SGDParameters
from batchrl.models.distributional import AtomNetwork, CategoricalMean, categorical_support
from batchrl.training.algorithms.c51 import c51_trainer, cross_entropy
from batchrl.training.algorithms.distributional import categorical_projection
from tests.support.algorithms import batch, table_network

SUPPORT = torch.tensor([0.0, 1.0, 2.0])


def project(probs, reward, scale):
    return categorical_projection(torch.tensor([probs]), torch.tensor([reward]), torch.tensor([scale]),
                                  SUPPORT)[0].tolist()


def test_support():
    assert categorical_support(-1.0, 1.0, 5).tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]


@pytest.mark.parametrize(("probs", "reward", "scale", "expected"), [
    ([0, 1, 0], 0.5, 1.0, [0, 0.5, 0.5]),  # atom 1 moves to 1.5: split evenly between atoms 1 and 2
    ([0, 1, 0], 0.0, 1.0, [0, 1, 0]),  # lands on an atom: all mass stays there
    ([0.5, 0, 0.5], 0.25, 0.5, [0.375, 0.125 + 0.375, 0.125]),  # 0 -> 0.25, 2 -> 1.25
    ([0.2, 0.3, 0.5], 1.25, 0.0, [0, 0.75, 0.25]),  # terminal: all mass at r = 1.25
    ([0.2, 0.3, 0.5], 5.0, 1.0, [0, 0, 1]),  # beyond qmax: clipped to the last atom
    ([0.2, 0.3, 0.5], -3.0, 1.0, [1, 0, 0]),  # -3, -2, -1: all below qmin, clipped to the first atom
])
def test_categorical_projection_hand_computed(probs, reward, scale, expected):
    assert project(probs, reward, scale) == pytest.approx(expected)


def test_projection_conserves_mass():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(64, 11, generator=gen), dim=1)
    support = categorical_support(-5.0, 5.0, 11)
    out = categorical_projection(probs, torch.randn(64, generator=gen) * 3, torch.rand(64, generator=gen), support)
    assert out.sum(dim=1).tolist() == pytest.approx([1.0] * 64, abs=1e-5)
    assert (out >= 0).all()


def test_cross_entropy():
    logits = torch.log(torch.tensor([[0.25, 0.25, 0.5]]))
    assert cross_entropy(logits, torch.tensor([[0.0, 0.0, 1.0]])).item() == pytest.approx(math.log(2))


def trainer(online, target, double_q=True):
    params = C51TrainerParameters(actions=["a", "b"], num_atoms=3, qmin=0.0, qmax=2.0, double_q_learning=double_q,
                                  rl=RLParameters(gamma=0.5, target_update_rate=0.5),
                                  optimizer=OptimizerConfig(SGD=SGDParameters(lr=0.5)))
    network = CategoricalMean(AtomNetwork(table_network(online), 2, params.num_atoms),
                              categorical_support(params.qmin, params.qmax, params.num_atoms))
    t = c51_trainer(network, params)
    t.q_target.atoms.body.load_state_dict(table_network(target).state_dict())
    return t


BIG = 30.0  # logit that puts (almost) all mass on one atom
# rows per state: [a0 z0, a0 z1, a0 z2, a1 z0, a1 z1, a1 z2]
ONLINE = [[0.0] * 6, [BIG, 0, 0, 0, 0, BIG], [0.0] * 6]  # Q(s1) = [0, 2]: double Q picks a1
TARGET = [[0.0] * 6, [0, 0, BIG, 0, BIG, 0], [0.0] * 6]  # Q_T(s1) = [2, 1]: max Q_T picks a0


def test_c51_target_double_q_masks_and_terminal():
    t = trainer(ONLINE, TARGET)
    b = batch([0, 0, 0], [0, 0, 0], [0.5, 0.5, 1.0], [1, 1, 1], possible_next=[[1, 1], [1, 0], [1, 1]],
              not_terminal=[True, True, False])
    target = t.target_distribution(b).tolist()
    assert target[0] == pytest.approx([0, 1, 0], abs=1e-6)  # double Q: a1, Z_T(s1, a1) = 1 -> 0.5 + 0.5 * 1
    assert target[1] == pytest.approx([0, 0.5, 0.5], abs=1e-6)  # a1 impossible: a0, Z_T = 2 -> 0.5 + 1 = 1.5
    assert target[2] == pytest.approx([0, 1, 0], abs=1e-6)  # terminal: r = 1
    assert trainer(ONLINE, TARGET, double_q=False).target_distribution(b).tolist()[0] == \
        pytest.approx([0, 0.5, 0.5], abs=1e-6)  # max Q_T: a0


def test_c51_update_lowers_the_cross_entropy():
    t = trainer([[0.0] * 6] * 3, [[0.0] * 6] * 3)
    b = batch([0], [1], [2.0], [2], not_terminal=[False])
    first = t.update(b)["td_loss"].item()
    assert first == pytest.approx(math.log(3))  # uniform prediction vs one-hot target
    for _ in range(20):
        last = t.update(b)["td_loss"].item()
    assert last < first
    assert t.q_network(b.state)[0, 1].item() > 1.0  # expectation moves toward r = 2
