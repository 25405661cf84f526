"""Discrete BCQ: the imitator action filter, the filtered Q-target and the exported scores."""

from __future__ import annotations

import math

import pytest
import torch

from batchrl.config import BCQTrainerParameters, OptimizerConfig, RLParameters, SGDParameters
from batchrl.models.heads import FILTERED_SCORE, BCQScores, bcq_allowed
from batchrl.training.actor_losses import imitation_loss
from batchrl.training.algorithms.bcq import BCQTrainer
from tests.support.algorithms import batch, table_network

LOGITS = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))


@pytest.mark.parametrize(("threshold", "possible", "expected"), [
    (0.3, None, [True, True, False]),  # ratios to the max: 1, 0.5, 0.17
    (0.6, None, [True, False, False]),
    (1.0, None, [True, False, False]),  # only the most likely action
    (0.3, [False, True, True], [False, True, True]),  # renormalized over possible: ratios -, 1, 0.33
    (0.4, [False, True, True], [False, True, False]),
])
def test_bcq_action_filter(threshold, possible, expected):
    mask = None if possible is None else torch.tensor([possible])
    assert bcq_allowed(LOGITS, threshold, mask)[0].tolist() == expected


def test_imitation_loss_is_cross_entropy_over_possible_actions():
    assert imitation_loss(LOGITS, torch.tensor([1]), torch.ones(1, 3, dtype=torch.bool)).item() == \
        pytest.approx(-math.log(0.3))
    assert imitation_loss(LOGITS, torch.tensor([1]), torch.tensor([[False, True, True]])).item() == \
        pytest.approx(-math.log(0.75))
    # the mean over rows, plus beta * mean(logits^2)
    two = LOGITS.repeat(2, 1)
    assert imitation_loss(two, torch.tensor([1, 1]), torch.ones(2, 3, dtype=torch.bool), 0.5).item() == \
        pytest.approx(-math.log(0.3) + 0.5 * LOGITS.pow(2).mean().item())


# 3 one-hot states, 2 actions
ONLINE = [[0.0, 0.0], [5.0, 1.0], [0.0, 0.0]]  # double Q would pick a0 at s1
TARGET = [[0.0, 0.0], [10.0, 2.0], [0.0, 0.0]]
IMITATOR = [[0.0, 0.0], [0.0, 5.0], [0.0, 0.0]]  # at s1 the logging policy (almost) always took a1


def trainer(threshold: float) -> BCQTrainer:
    params = BCQTrainerParameters(actions=["a", "b"], drop_threshold=threshold,
                                  rl=RLParameters(gamma=0.5, target_update_rate=0.5),
                                  optimizer=OptimizerConfig(SGD=SGDParameters(lr=0.1)),
                                  imitator_optimizer=OptimizerConfig(SGD=SGDParameters(lr=0.1)))
    t = BCQTrainer(table_network(ONLINE), table_network(IMITATOR), params)
    t.dqn.q_target.load_state_dict(table_network(TARGET).state_dict())
    return t


def test_target_only_bootstraps_from_supported_actions():
    b = batch([0], [0], [1.0], [1])
    assert trainer(0.3).dqn.target_values(trainer(0.3).filtered(b)).tolist() == pytest.approx([1 + 0.5 * 2])
    # a threshold below pi_b(a0) / pi_b(a1) = e^-5 keeps a0: plain double DQN
    assert trainer(1e-3).dqn.target_values(trainer(1e-3).filtered(b)).tolist() == pytest.approx([1 + 0.5 * 10])


def test_scores_filter_unsupported_actions_and_training_steps():
    t = trainer(0.3)
    scores = t.q_network(torch.eye(3)[[1]])
    assert scores.tolist() == [[FILTERED_SCORE, 1.0]]
    scripted = torch.jit.script(BCQScores(table_network(ONLINE), table_network(IMITATOR), 0.3))
    assert scripted(torch.eye(3)[[1]]).tolist() == [[FILTERED_SCORE, 1.0]]
    b = batch([1, 1], [0, 1], [1.0, 1.0], [2, 2])
    terms = t.update(b)
    assert {"loss", "td_loss", "imitator_loss", "imitator_accuracy"} <= set(terms)
    assert terms["imitator_accuracy"].item() == pytest.approx(0.5)
    before = imitation_loss(t.imitator(b.state), b.action, b.possible_actions_mask).item()
    assert terms["imitator_loss"].item() > before  # the imitator step lowered it


def test_logit_penalty_adds_beta_times_mean_squared_logits():
    params = BCQTrainerParameters(actions=["a", "b"], imitator_logit_penalty=0.5)
    t = BCQTrainer(table_network(ONLINE), table_network(IMITATOR), params)
    b = batch([1, 0], [1, 0], [0.0, 0.0], [2, 2])
    logits = t.imitator(b.state)
    expected = -torch.log_softmax(logits, 1)[[0, 1], [1, 0]].mean() + 0.5 * logits.pow(2).mean()
    assert t._imitator_terms(b)["imitator_loss"].item() == pytest.approx(expected.item())


def shared_trainer() -> BCQTrainer:
    from batchrl.config import DiscreteBCQModel
    from batchrl.training.algorithms.bcq import build
    from batchrl.training.trainer import BuildContext

    model = DiscreteBCQModel.model_validate({
        "trainer_param": {"actions": ["a", "b"], "minibatch_size": 4}, "share_trunk": True,
        "net_builder": {"FullyConnected": {"sizes": [8, 8], "activations": ["relu", "relu"]}}})
    torch.manual_seed(0)
    return build(model, BuildContext(input_dim=3, action_dim=2, device="cpu", amp_dtype=None))


def test_shared_trunk_is_the_q_networks_hidden_layers_and_the_imitator_loss_trains_it():
    t = shared_trainer()
    q_layers = t.dqn.q_network.layers
    trunk, head = t.imitator
    assert trunk[0] is q_layers[0] and trunk[2] is q_layers[2]  # the same modules: Linear, ReLU, Linear, ReLU
    assert head.out_features == 2 and head is not q_layers[-1]
    b = batch([0, 1, 2, 1], [0, 1, 1, 0], [1.0, 0.0, 1.0, 0.0], [1, 2, 0, 0])
    t._imitator_terms(b)["imitator_loss"].backward()
    assert q_layers[0].weight.grad is not None and q_layers[0].weight.grad.abs().sum() > 0
    assert q_layers[-1].weight.grad is None  # the Q head is not on the imitator's path
    t.dqn.steps.zero_grad()
    before = t._imitator_terms(b)["imitator_loss"].item()
    first = [p.detach().clone() for p in q_layers[0].parameters()]
    for _ in range(30):
        t.update(b)
    assert t._imitator_terms(b)["imitator_loss"].item() < before
    assert not all(torch.equal(a, p) for a, p in zip(first, q_layers[0].parameters(), strict=True))
    assert t.imitator_steps is None and set(t.dqn.steps.optimizers) == {"q", "imitator"}


def test_share_trunk_rejects_an_imitator_network_of_its_own():
    from pydantic import ValidationError

    from batchrl.config import DiscreteBCQModel

    net = {"FullyConnected": {"sizes": [8], "activations": ["relu"]}}
    with pytest.raises(ValidationError, match="imitator_net_builder is unused with share_trunk"):
        DiscreteBCQModel.model_validate({"trainer_param": {"actions": ["a", "b"]}, "share_trunk": True,
                                         "net_builder": net, "imitator_net_builder": net})
