"""Contract every discrete offline-RL trainer must meet (QR-DQN, C51, BCQ, CRR, IQL): config blocks,
finite named losses, determinism, checkpoint round trip, TorchScript export parity, masks honoured."""

from __future__ import annotations

import io

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from batchrl.config import (
    DiscreteBCQModel,
    DiscreteC51DQNModel,
    DiscreteCRRModel,
    DiscreteIQLModel,
    DiscreteQRDQNModel,
)
from batchrl.data.loader import Batch
from batchrl.models.policy import masked_argmax
from batchrl.serving.export import script_model
from batchrl.training.algorithms import build_algorithm_trainer

NET = {"FullyConnected": {"sizes": [16], "activations": ["relu"]}}
TRAINER = {"actions": [0, 1, 2], "rl": {"gamma": 0.9, "target_update_rate": 0.1},
           "minibatch_size": 32,
           "optimizer": {"Adam": {"lr": 0.01, "lr_schedulers": [{"StepLR": {"step_size": 1, "gamma": 0.5}}]}}}
MODELS = {
    "DiscreteQRDQN": (DiscreteQRDQNModel, {"trainer_param": {**TRAINER, "num_atoms": 5}, "net_builder": NET}),
    "DiscreteC51DQN": (DiscreteC51DQNModel, {"trainer_param": {**TRAINER, "num_atoms": 11, "qmin": -5, "qmax": 15},
                                              "net_builder": NET}),
    "DiscreteBCQ": (DiscreteBCQModel, {"trainer_param": {**TRAINER, "drop_threshold": 0.3}, "net_builder": NET,
                                       "imitator_net_builder": NET}),
    "DiscreteCRR": (DiscreteCRRModel, {"trainer_param": {**TRAINER, "beta": 1.0, "actor_optimizer":
                                                         {"Adam": {"lr": 0.01}}},
                                       "actor_net_builder": NET, "critic_net_builder": NET}),
    "DiscreteIQL": (DiscreteIQLModel, {"trainer_param": {**TRAINER, "expectile": 0.8},
                                       "actor_net_builder": NET, "critic_net_builder": NET, "value_net_builder": NET}),
}
STATE_DIM = 4


def random_batch(rows: int, seed: int) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    possible = torch.rand(rows, 3, generator=gen) > 0.2
    possible[:, 0] = True
    action = torch.where(possible[:, 1], torch.randint(0, 2, (rows,), generator=gen), 0)
    return Batch(state=torch.randn(rows, STATE_DIM, generator=gen), state_presence=None,
                 next_state=torch.randn(rows, STATE_DIM, generator=gen), next_state_presence=None,
                 action=action, next_action=torch.zeros(rows, dtype=torch.long), reward=torch.rand(rows, generator=gen),
                 possible_actions_mask=possible, possible_next_actions_mask=torch.rand(rows, 3, generator=gen) > 0.3,
                 not_terminal=torch.rand(rows, generator=gen) > 0.1, action_probability=torch.full((rows,), 0.5),
                 step=torch.ones(rows, dtype=torch.long), time_diff=torch.ones(rows, dtype=torch.long))


def make(name: str, seed: int = 0):
    cls, block = MODELS[name]
    torch.manual_seed(seed)
    return build_algorithm_trainer(cls.model_validate(block), STATE_DIM)


class Identity(nn.Module):
    def forward(self, values: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        return values * presence


@pytest.mark.parametrize("name", list(MODELS))
def test_trainer_contract(name):
    trainer = make(name)
    batches = [random_batch(32, seed) for seed in range(6)]
    for b in batches:
        terms = trainer.update(b)
        assert {"loss", "td_loss"} <= set(terms)
        assert all(v.dim() == 0 and torch.isfinite(v) and not v.requires_grad for v in terms.values())
    evaluated = trainer.evaluate(batches[0])
    assert set(evaluated) == set(terms) and all(torch.isfinite(v) for v in evaluated.values())
    assert trainer.learning_rate == pytest.approx(0.01)
    trainer.end_epoch()
    assert trainer.learning_rate == pytest.approx(0.005)  # the schedule steps once per epoch

    # determinism: the same seed and batches give the same model
    again = make(name)
    for b in batches:
        again.update(b)
    again.end_epoch()
    state = batches[0].state
    assert torch.equal(trainer.q_network(state), again.q_network(state))

    # checkpoint round trip: a fresh trainer loaded from the state continues exactly like the original
    buffer = io.BytesIO()
    torch.save(trainer.state_dict(), buffer)
    restored = make(name, seed=1)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=False))
    extra = random_batch(32, 99)
    assert trainer.update(extra)["loss"].item() == pytest.approx(restored.update(extra)["loss"].item())
    assert torch.equal(trainer.q_network(state), restored.q_network(state))

    # export: the scripted module returns the same scores [B, A]
    scripted = script_model(Identity(), trainer.q_network, ["0", "1", "2"], [0, 1, 2, 3], {}, {"algorithm": name})
    names, scores = scripted(state, torch.ones_like(state))
    assert names == ["0", "1", "2"] and scores.shape == (32, 3)
    with torch.no_grad():
        trainer.q_network.eval()
        assert torch.allclose(scores, trainer.q_network(state).float(), atol=1e-5)
    # greedy evaluation honours the possible-action mask
    mask = batches[0].possible_actions_mask
    assert mask.gather(1, masked_argmax(scores, mask).unsqueeze(1)).all()


@pytest.mark.parametrize(("name", "change", "message"), [
    ("DiscreteQRDQN", {"net_builder": {"Dueling": NET["FullyConnected"]}}, "only FullyConnected"),
    ("DiscreteC51DQN", {"trainer_param": {**TRAINER, "qmin": 5, "qmax": 5}}, "qmin"),
    ("DiscreteQRDQN", {"trainer_param": {**TRAINER, "num_atom": 5}}, "num_atom"),
    ("DiscreteCRR", {"trainer_param": {**TRAINER, "double_q_learning": True}}, "does not use double_q_learning"),
    ("DiscreteIQL", {"trainer_param": {**TRAINER, "expectile": 1.0}}, "expectile"),
    ("DiscreteIQL", {"trainer_param": {**TRAINER, "rl": {"maxq_learning": False}}}, "no SARSA mode"),
    ("DiscreteBCQ", {"trainer_param": {**TRAINER, "drop_threshold": 0.0}}, "drop_threshold"),
    ("DiscreteCRR", {"net_builder": NET}, "critic_net_builder or net_builder"),
])
def test_invalid_blocks_are_rejected(name, change, message):
    cls, block = MODELS[name]
    with pytest.raises(ValidationError, match=message):
        cls.model_validate({**block, **change})


def test_paper_defaults():
    qr = DiscreteQRDQNModel.model_validate({"trainer_param": {"actions": [0, 1]}}).trainer_param
    c51 = DiscreteC51DQNModel.model_validate({"trainer_param": {"actions": [0, 1]}}).trainer_param
    bcq = DiscreteBCQModel.model_validate({"trainer_param": {"actions": [0, 1]}}).trainer_param
    iql = DiscreteIQLModel.model_validate({"trainer_param": {"actions": [0, 1]}}).trainer_param
    assert (qr.num_atoms, c51.num_atoms, c51.qmin, c51.qmax) == (51, 51, -100.0, 200.0)
    assert bcq.drop_threshold == 0.3 and (iql.expectile, iql.beta) == (0.7, 3.0)


@pytest.mark.parametrize("algo", ["qrdqn", "c51", "bcq", "crr", "iql"])
def test_shipped_cartpole_configs_load(algo):
    from pathlib import Path

    from batchrl.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / f"cartpole_{algo}_offline.yaml")
    assert config.model.value.trainer_param.actions == ["0", "1"] and config.num_epochs == 40
