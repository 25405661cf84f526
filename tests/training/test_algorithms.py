"""The discrete offline-RL algorithms' config blocks (QR-DQN, C51, BCQ, CRR, IQL): validation, paper defaults,
the shipped configs. The trainer contract of every registered algorithm: test_algorithms_contract.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from batchrl.config import (
    DiscreteBCQModel,
    DiscreteC51DQNModel,
    DiscreteIQLModel,
    DiscreteQRDQNModel,
)
from tests.support.algorithms import MODELS, NET, TRAINER


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

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / f"cartpole_{algo}_offline.yaml")
    assert config.model.value.trainer_param.actions == ["0", "1"] and config.num_epochs == 40
