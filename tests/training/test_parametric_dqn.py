"""Parametric DQN / CQL over candidate sets: the TD target by hand (double Q, max-Q, SARSA over the next
candidates), the conservative penalty by hand, the config block, and learning a one-step choice."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from batchrl.config import ModelConfig, ParametricDQNModel
from batchrl.data.loader import Batch
from batchrl.models.parametric import ParametricQNetwork
from batchrl.training.algorithms.parametric_dqn import ParametricDQNTrainer, conservative_penalty


class ItemValue(nn.Module):
    """Q(s, a) = the item's first feature (ignores the state): a hand-readable network."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))  # (the optimizer needs a parameter)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return pairs[:, 1:2] * self.scale  # [state (1), item (2)] -> item feature 0


def _trainer(maxq=True, double_q=True, alpha=None) -> ParametricDQNTrainer:
    params = ParametricDQNModel.model_validate({"trainer_param": {
        "rl": {"gamma": 0.5, "maxq_learning": maxq}, "double_q_learning": double_q}}).trainer_param
    return ParametricDQNTrainer(ParametricQNetwork(ItemValue()), params, alpha=alpha)


def _batch() -> Batch:
    # row 0: next candidates score [1, 4, (pad 9)] -> max over the real ones = 4; row 1 terminal
    next_candidates = torch.tensor([[[1.0, 0.0], [4.0, 0.0], [9.0, 0.0]], [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    candidates = torch.tensor([[[2.0, 0.0], [3.0, 0.0], [0.0, 0.0]], [[5.0, 0.0], [1.0, 0.0], [7.0, 0.0]]])
    return Batch(state=torch.zeros(2, 1), state_presence=None, next_state=torch.zeros(2, 1), next_state_presence=None,
                 action=torch.tensor([[3.0, 0.0], [5.0, 0.0]]), next_action=torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
                 reward=torch.tensor([1.0, 2.0]),
                 possible_actions_mask=torch.tensor([[True, True, False], [True, True, True]]),
                 possible_next_actions_mask=torch.tensor([[True, True, False], [False, False, False]]),
                 not_terminal=torch.tensor([True, False]), action_probability=torch.tensor([0.5, 1 / 3]),
                 step=torch.ones(2, dtype=torch.long), time_diff=torch.ones(2, dtype=torch.long),
                 candidates=candidates, next_candidates=next_candidates, action_index=torch.tensor([1, 0]))


@pytest.mark.parametrize(("maxq", "double_q", "expected"), [(True, True, [3.0, 2.0]), (True, False, [3.0, 2.0]),
                                                            (False, True, [1.5, 2.0])])
def test_target_over_the_next_candidates_by_hand(maxq, double_q, expected):
    # y = r + 0.5 * not_terminal * v(s'): max over real next candidates = 4 (the padding's 9 is ignored);
    # SARSA: Q_T(s', logged next item) = 1
    assert _trainer(maxq, double_q).target_values(_batch()).tolist() == expected


def test_conservative_penalty_by_hand():
    q = torch.tensor([[2.0, 3.0, 0.0], [5.0, 1.0, 7.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    got = conservative_penalty(q, mask, torch.tensor([3.0, 5.0]))
    assert got.tolist() == pytest.approx([math.log(math.exp(2) + math.exp(3)) - 3,
                                          math.log(math.exp(5) + math.exp(1) + math.exp(7)) - 5])
    terms = _trainer(alpha=0.5).losses(_batch())
    # td: Q(s, a) = [3, 5] vs y = [3, 2] -> mean squared error 4.5
    assert terms["td_loss"].item() == pytest.approx(4.5)
    assert terms["loss"].item() == pytest.approx(4.5 + 0.5 * got.mean().item())


def test_config_block_is_reagent_shaped_and_strict():
    model = ModelConfig.model_validate({"ParametricDQN": {"trainer_param": {"rl": {"gamma": 0.9}}}})
    assert model.parametric and not model.continuous and model.name == "ParametricDQN"
    assert not ModelConfig.model_validate({"DiscreteDQN": {"trainer_param": {"actions": [0]}}}).parametric
    with pytest.raises(ValueError, match="reward_boost"):
        ModelConfig.model_validate({"ParametricDQN": {"trainer_param": {"rl": {"reward_boost": {"0": 1.0}}}}})
    with pytest.raises(ValueError, match="parametric-action tables are one-step"):  # not silently one-step
        ModelConfig.model_validate({"ParametricDQN": {"trainer_param": {"rl": {"multi_steps": 3}}}})
    with pytest.raises(ValueError, match="calc_cpe_in_training"):
        ModelConfig.model_validate({"ParametricDQN": {"eval_parameters": {"calc_cpe_in_training": True}}})
    with pytest.raises(ValueError, match="Extra inputs"):
        ModelConfig.model_validate({"ParametricCQL": {"trainer_param": {"actions": [0, 1]}}})


def test_learns_to_pick_the_rewarding_item():
    """One-step data: the reward is the chosen item's feature 1; after training the greedy choice over fresh
    candidate sets is the item with the largest feature 1 almost always."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    rows, k = 512, 4
    candidates = torch.randn(rows, k, 2, generator=gen)
    index = torch.randint(0, k, (rows,), generator=gen)
    action = candidates[torch.arange(rows), index]
    batch = Batch(state=torch.randn(rows, 1, generator=gen), state_presence=None, next_state=torch.zeros(rows, 1),
                  next_state_presence=None, action=action, next_action=torch.zeros(rows, 2), reward=action[:, 1],
                  possible_actions_mask=torch.ones(rows, k, dtype=torch.bool),
                  possible_next_actions_mask=torch.zeros(rows, k, dtype=torch.bool),
                  not_terminal=torch.zeros(rows, dtype=torch.bool), action_probability=torch.full((rows,), 0.25),
                  step=torch.ones(rows, dtype=torch.long), time_diff=torch.ones(rows, dtype=torch.long),
                  candidates=candidates, next_candidates=torch.zeros(rows, k, 2), action_index=index)
    model = ParametricDQNModel.model_validate({"trainer_param": {"optimizer": {"Adam": {"lr": 0.01}}},
                                               "net_builder": {"FullyConnected": {"sizes": [16],
                                                                                  "activations": ["relu"]}}})
    trainer = ParametricDQNTrainer(ParametricQNetwork(nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 1))),
                                   model.trainer_param)
    for _ in range(150):
        trainer.update(batch)
    test = torch.randn(200, k, 2, generator=gen)
    with torch.no_grad():
        chosen = trainer.q_network(torch.zeros(200, 1), test).argmax(dim=1)
    assert (chosen == test[:, :, 1].argmax(dim=1)).float().mean() > 0.9
    assert trainer.evaluate(batch)["policy_agrees"].item() == pytest.approx(
        (candidates[:, :, 1].argmax(dim=1) == index).float().mean().item(), abs=0.1)
