"""The trainer contract, checked for every algorithm of the registry (``ALGORITHMS``) automatically: a new
registry entry without an example block here fails ``test_every_registered_algorithm_has_an_example``.

Per algorithm (and variant: SAC with a value network, TD3+BC): it satisfies the ``Trainer`` protocol, fits a
few steps with finite detached terms, steps its learning-rate schedule per epoch, is deterministic given
the seed, survives a ``state_dict`` save/load round trip (continuing bit for bit), and its exported policy
(``export_policy`` -> ``load_policy``) returns what its serving network computes.
"""

from __future__ import annotations

import io
from typing import get_args

import pytest
import torch
from torch import nn

from batchrl.config import CONTINUOUS_ALGORITHMS, ModelConfig
from batchrl.data.loader import Batch
from batchrl.serving.export import load_policy
from batchrl.serving.parametric import export_parametric_model
from batchrl.training.algorithms import ALGORITHMS, build_trainer, export_policy
from batchrl.training.trainer import ActingTrainer, Trainer

STATE_DIM, NUM_ACTIONS, ACTION_DIM, CANDIDATES = 4, 3, 2, 5
NET = {"FullyConnected": {"sizes": [16], "activations": ["relu"]}}
SCHEDULE = {"Adam": {"lr": 0.01, "lr_schedulers": [{"StepLR": {"step_size": 1, "gamma": 0.5}}]}}
DISCRETE = {"actions": [0, 1, 2], "rl": {"gamma": 0.9, "target_update_rate": 0.1}, "optimizer": SCHEDULE}
CONTINUOUS = {"rl": {"gamma": 0.9, "target_update_rate": 0.1}, "q_network_optimizer": SCHEDULE,
              "actor_network_optimizer": {"Adam": {"lr": 0.01}}}
#: (registry name, model block): at least one per registered algorithm.
EXAMPLES = {
    "DiscreteDQN": ("DiscreteDQN", {"trainer_param": {**DISCRETE, "minibatches_per_step": 2}, "net_builder": NET}),
    "DiscreteCQL": ("DiscreteCQL", {"trainer_param": {**DISCRETE, "alpha": 0.5},
                                    "net_builder": {"Dueling": NET["FullyConnected"]}}),
    "DiscreteQRDQN": ("DiscreteQRDQN", {"trainer_param": {**DISCRETE, "num_atoms": 5}, "net_builder": NET}),
    "DiscreteC51DQN": ("DiscreteC51DQN", {"trainer_param": {**DISCRETE, "num_atoms": 11, "qmin": -5, "qmax": 15},
                                          "net_builder": NET}),
    "DiscreteBCQ": ("DiscreteBCQ", {"trainer_param": {**DISCRETE, "drop_threshold": 0.3}, "net_builder": NET,
                                    "imitator_net_builder": NET}),
    "DiscreteBCQ shared trunk": ("DiscreteBCQ", {"trainer_param": {**DISCRETE, "imitator_logit_penalty": 0.5},
                                                 "net_builder": NET, "share_trunk": True}),
    "DiscreteCRR": ("DiscreteCRR", {"trainer_param": {**DISCRETE, "beta": 1.0}, "actor_net_builder": NET,
                                    "critic_net_builder": NET}),
    "DiscreteIQL": ("DiscreteIQL", {"trainer_param": {**DISCRETE, "expectile": 0.8}, "actor_net_builder": NET,
                                    "critic_net_builder": NET, "value_net_builder": NET}),
    "SAC": ("SAC", {"trainer_param": {**CONTINUOUS, "alpha_optimizer": {"Adam": {"lr": 0.01}}},
                    "actor_net_builder": {"GaussianFullyConnected": NET["FullyConnected"]}, "critic_net_builder": NET}),
    "SAC+V": ("SAC", {"trainer_param": CONTINUOUS, "critic_net_builder": NET, "value_net_builder": NET,
                      "actor_net_builder": {"GaussianFullyConnected": NET["FullyConnected"]}}),
    "TD3": ("TD3", {"trainer_param": {**CONTINUOUS, "delayed_policy_update": 2}, "actor_net_builder": NET,
                    "critic_net_builder": NET}),
    "TD3+BC": ("TD3", {"trainer_param": {**CONTINUOUS, "bc_alpha": 2.5, "delayed_policy_update": 1},
                       "actor_net_builder": NET, "critic_net_builder": NET}),
    "IQL": ("IQL", {"trainer_param": {**CONTINUOUS, "expectile": 0.8, "value_network_optimizer": {"Adam": {"lr": 0.01}}},
                    "actor_net_builder": {"GaussianFullyConnected": NET["FullyConnected"]}, "critic_net_builder": NET,
                    "value_net_builder": NET}),
    "ParametricDQN": ("ParametricDQN", {"trainer_param": {"rl": {"gamma": 0.9, "target_update_rate": 0.1},
                                                          "optimizer": SCHEDULE}, "net_builder": NET}),
    "ParametricCQL": ("ParametricCQL", {"trainer_param": {"rl": {"gamma": 0.9, "target_update_rate": 0.1},
                                                          "optimizer": SCHEDULE, "alpha": 0.5}, "net_builder": NET}),
}


def model(example: str) -> ModelConfig:
    name, block = EXAMPLES[example]
    return ModelConfig.model_validate({name: block})


def make(example: str, seed: int = 0) -> Trainer:
    config = model(example)
    torch.manual_seed(seed)
    return build_trainer(config, STATE_DIM, ACTION_DIM if config.continuous or config.parametric else NUM_ACTIONS,
                         seed=seed)


def parametric_batch(rows: int, seed: int) -> Batch:
    """Candidate sets of 2..CANDIDATES items (padded), the chosen item one of them."""
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(2, CANDIDATES + 1, (rows,), generator=gen)
    mask = torch.arange(CANDIDATES) < sizes[:, None]
    candidates = torch.randn(rows, CANDIDATES, ACTION_DIM, generator=gen) * mask[..., None]
    next_candidates = torch.randn(rows, CANDIDATES, ACTION_DIM, generator=gen) * mask[..., None]
    index = (torch.rand(rows, generator=gen) * sizes).long()
    not_terminal = torch.rand(rows, generator=gen) > 0.1
    return Batch(state=torch.randn(rows, STATE_DIM, generator=gen), state_presence=None,
                 next_state=torch.randn(rows, STATE_DIM, generator=gen), next_state_presence=None,
                 action=candidates[torch.arange(rows), index], next_action=next_candidates[:, 0],
                 reward=torch.rand(rows, generator=gen), possible_actions_mask=mask,
                 possible_next_actions_mask=mask & not_terminal[:, None], not_terminal=not_terminal,
                 action_probability=1.0 / sizes.float(), step=torch.ones(rows, dtype=torch.long),
                 time_diff=torch.ones(rows, dtype=torch.long), candidates=candidates,
                 next_candidates=next_candidates, action_index=index)


def batch(rows: int, seed: int, continuous: bool, parametric: bool = False) -> Batch:
    if parametric:
        return parametric_batch(rows, seed)
    gen = torch.Generator().manual_seed(seed)
    possible = torch.rand(rows, NUM_ACTIONS, generator=gen) > 0.2
    possible[:, 0] = True
    if continuous:
        action = torch.rand(rows, ACTION_DIM, generator=gen) * 2 - 1
        next_action = torch.rand(rows, ACTION_DIM, generator=gen) * 2 - 1
        possible = next_possible = torch.zeros(rows, 0, dtype=torch.bool)
    else:
        action = torch.where(possible[:, 1], torch.randint(0, 2, (rows,), generator=gen), 0)
        next_action = torch.randint(0, NUM_ACTIONS + 1, (rows,), generator=gen)
        next_possible = torch.rand(rows, NUM_ACTIONS, generator=gen) > 0.3
    return Batch(state=torch.randn(rows, STATE_DIM, generator=gen), state_presence=None,
                 next_state=torch.randn(rows, STATE_DIM, generator=gen), next_state_presence=None,
                 action=action, next_action=next_action, reward=torch.rand(rows, generator=gen),
                 possible_actions_mask=possible, possible_next_actions_mask=next_possible,
                 not_terminal=torch.rand(rows, generator=gen) > 0.1, action_probability=torch.full((rows,), 0.5),
                 step=torch.ones(rows, dtype=torch.long), time_diff=torch.ones(rows, dtype=torch.long))


class Identity(nn.Module):
    """A stand-in preprocessor: the values as they are."""

    def forward(self, values: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        return values * presence


def fit(trainer: Trainer, batches: list[Batch]) -> list[dict[str, torch.Tensor]]:
    return [trainer.update(b) for b in batches]


def test_every_registered_algorithm_has_an_example():
    assert {name for name, _ in EXAMPLES.values()} == set(ALGORITHMS)


def test_the_registry_and_the_config_name_the_same_algorithms():
    """One name per algorithm: a ``model:`` key of the config is a registry entry with that block class."""
    fields = ModelConfig.model_fields
    assert set(fields) == set(ALGORITHMS)
    for name, algorithm in ALGORITHMS.items():
        assert algorithm.config in get_args(fields[name].annotation), name
    assert set(CONTINUOUS_ALGORITHMS) == {"SAC", "TD3", "IQL"}


def serve(trainer: Trainer, state: torch.Tensor, parametric: bool) -> torch.Tensor:
    """What the serving network computes: Q over a parametric batch's candidates, else of the state."""
    if parametric:
        extra = parametric_batch(len(state), 7)
        return trainer.q_network(state, extra.candidates)
    return trainer.q_network(state)


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_trainer_contract(example, tmp_path):
    continuous, parametric = model(example).continuous, model(example).parametric
    trainer = make(example)
    assert isinstance(trainer, Trainer)
    assert isinstance(trainer, ActingTrainer) == continuous
    batches = [batch(32, seed, continuous, parametric) for seed in range(6)]

    # fit a few steps: named, finite, detached 0-d terms; evaluation gives the same kind of terms
    for terms in fit(trainer, batches):
        assert "loss" in terms
        assert all(v.dim() == 0 and torch.isfinite(v) and not v.requires_grad for v in terms.values())
    evaluated = trainer.evaluate(batches[0])
    assert evaluated and all(v.dim() == 0 and torch.isfinite(v) for v in evaluated.values())
    assert trainer.learning_rate == pytest.approx(0.01)
    trainer.end_epoch()
    assert trainer.learning_rate == pytest.approx(0.005)  # the schedule steps once per epoch

    # determinism: the same seed and batches give the same losses and model, bit for bit
    again = make(example)
    assert [t["loss"] for t in fit(again, batches)][-1] == terms["loss"]
    again.evaluate(batches[0])
    again.end_epoch()
    state = batches[0].state
    with torch.no_grad():
        assert torch.equal(serve(trainer, state, parametric), serve(again, state, parametric))

    # state_dict round trip: a trainer built with another seed, loaded from the saved state, continues
    # exactly like the original
    buffer = io.BytesIO()
    torch.save(trainer.state_dict(), buffer)
    restored = make(example, seed=1)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=False))
    extra = [batch(32, 99 + k, continuous, parametric) for k in range(3)]
    assert [t["loss"] for t in fit(trainer, extra)] == [t["loss"] for t in fit(restored, extra)]
    with torch.no_grad():
        assert torch.equal(serve(trainer, state, parametric), serve(restored, state, parametric))
    if parametric:
        check_parametric_export(trainer, tmp_path)
        return

    # export parity: the exported policy returns what the serving network computes
    uri = str(tmp_path / "model.torchscript")
    bounds = ([-2.0, 0.0], [2.0, 1.0]) if continuous else None
    names = [str(i) for i in range(ACTION_DIM if continuous else NUM_ACTIONS)]
    export_policy(uri, trainer, Identity(), names, [0, 1, 2, 3], {}, {"algorithm": example}, action_bounds=bounds)
    policy = load_policy(uri)
    assert policy.action_names == names and policy.continuous == continuous
    assert policy.metadata["output"] == trainer.scores
    trainer.q_network.eval()
    with torch.no_grad():
        expected = trainer.q_network(state).float()
    if continuous:
        low, high = (torch.tensor(b) for b in bounds)
        expected = low + (expected + 1) / 2 * (high - low)
    assert torch.allclose(policy.outputs(state), expected, atol=1e-5)


def check_parametric_export(trainer: Trainer, tmp_path) -> None:
    """Export parity for parametric models: the TorchScript scores (state + candidate sets with presence and
    mask) equal Q over the preprocessed inputs on real candidates, and padding scores -1e9."""
    from batchrl.preprocessing.normalization import NormalizationParameters
    from batchrl.preprocessing.preprocessor import Preprocessor

    state_norm = {i: NormalizationParameters(feature_type="CONTINUOUS", mean=0.5, stddev=2.0) for i in range(4)}
    item_norm = {i: NormalizationParameters(feature_type="CONTINUOUS", mean=-1.0, stddev=0.5) for i in (10, 11)}
    states, items = Preprocessor(state_norm, [0, 1, 2, 3]), Preprocessor(item_norm, [10, 11])
    uri = str(tmp_path / "model.torchscript")
    export_parametric_model(uri, states, items, trainer.q_network, [0, 1, 2, 3], [10, 11], {}, {},
                            {"algorithm": "ParametricDQN", "output": trainer.scores})
    policy = load_policy(uri)
    assert policy.parametric and policy.metadata["action_feature_ids"] == [10, 11]
    data = parametric_batch(6, 3)
    values = data.state
    scores = policy.candidate_scores(values.numpy(), data.candidates.numpy(), data.possible_actions_mask.numpy())
    trainer.q_network.eval()
    with torch.no_grad():
        x = states(values, torch.ones_like(values))
        flat = data.candidates.reshape(-1, 2)
        a = items(flat, torch.ones_like(flat)).reshape(6, CANDIDATES, -1)
        expected = trainer.q_network(x, a)
    mask = data.possible_actions_mask
    assert torch.allclose(scores[mask], expected[mask], atol=1e-5)
    assert (scores[~mask] == -1e9).all()
