"""Every discrete offline-RL algorithm through the train stage: one epoch on a tiny prepared CartPole
table, CPE models, checkpoint, resume, and an exported model that evaluates greedily."""

from __future__ import annotations

import json

import pytest
import torch

from batchrl.config import parse_config
from batchrl.serving.export import load_policy
from batchrl.training import train as train_module
from batchrl.training.train import train
from tests.support.algorithms import MODELS
from tests.support.training import cartpole_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return cartpole_dataset(tmp_path_factory.mktemp("data"), transitions=600, seed=1)


@pytest.fixture(autouse=True)
def _fast_cpe(monkeypatch):
    monkeypatch.setattr(train_module, "CPE_BOOTSTRAP", 5)


def config(name: str, epochs: int = 1, cpe: bool = True) -> dict:
    block = json.loads(json.dumps(MODELS[name][1]))
    block["trainer_param"]["actions"] = [0, 1]
    block["trainer_param"]["minibatch_size"] = 128
    block["cpe_net_builder"] = {"FullyConnected": {"sizes": [8], "activations": ["relu"]}}
    block["eval_parameters"] = {"calc_cpe_in_training": cpe}
    return {"model": {name: block}, "num_epochs": epochs, "seed": 3, "device": "cpu"}


@pytest.mark.parametrize("name", list(MODELS))
def test_trains_one_epoch_with_cpe_and_exports(tmp_path, data, name):
    out = tmp_path / name
    summary = train(parse_config(config(name)), data["train"], data["eval"], data["norm.json"], str(out))
    assert summary.algorithm == name and summary.epochs == 1
    assert {"loss", "td_loss", "reward_loss", "cpe_q_loss"} <= set(summary.final_losses)
    assert summary.eval_td_loss is not None and summary.eval_td_loss >= 0
    assert {"DM", "IPS", "DR", "SDR"} <= set(summary.cpe)
    for file in ("model.torchscript", "reward_model.torchscript", "q_value_model.torchscript",
                 "checkpoints/epoch-0001.pt"):
        assert (out / file).exists(), file
    policy = load_policy(str(out / "model.torchscript"))
    assert policy.metadata["algorithm"] == name and policy.action_names == ["0", "1"]
    states = torch.rand(16, 4) - 0.5
    scores = policy.outputs(states)
    assert scores.shape == (16, 2) and torch.isfinite(scores).any(dim=1).all()
    assert set(policy.greedy_actions(states).tolist()) <= {0, 1}
    possible = torch.tensor([[False, True]] * 16)
    assert (policy.greedy_actions(states, possible) == 1).all()


@pytest.mark.parametrize("name", ["DiscreteQRDQN", "DiscreteCRR"])
def test_resume_continues_like_an_uninterrupted_run(tmp_path, data, name):
    full = train(parse_config(config(name, epochs=2, cpe=False)), data["train"], data["eval"], data["norm.json"],
                 str(tmp_path / "full"))
    train(parse_config(config(name, epochs=1, cpe=False)), data["train"], data["eval"], data["norm.json"],
          str(tmp_path / "part"))
    resumed = train(parse_config(config(name, epochs=2, cpe=False)), data["train"], data["eval"], data["norm.json"],
                    str(tmp_path / "part"), resume=True)
    assert resumed.resumed_from.endswith("epoch-0001.pt")
    assert resumed.final_losses["loss"] == pytest.approx(full.final_losses["loss"], rel=1e-6)
    states = torch.rand(8, 4) - 0.5
    assert torch.equal(load_policy(str(tmp_path / "full/model.torchscript")).outputs(states),
                       load_policy(str(tmp_path / "part/model.torchscript")).outputs(states))


@pytest.mark.parametrize("name", list(MODELS))
def test_gym_train_short_online_run(tmp_path, name):
    from batchrl.training.gym_config import parse_gym_config
    from batchrl.training.online import gym_train

    block = config(name, cpe=False)["model"][name]
    data = {"env": "CartPole-v0", "model": {name: block}, "replay_memory_size": 1000, "train_after_ts": 64,
            "train_every_ts": 4, "num_train_episodes": 2, "num_eval_episodes": 2, "passing_score_bar": 1.0,
            "minibatch_size": 32, "seed": 0, "device": "cpu"}
    summary = gym_train(parse_gym_config(data), str(tmp_path / "m"))
    assert summary["updates"] > 0 and summary["eval"]["episodes"] == 2
    policy = load_policy(str(tmp_path / "m" / "model.torchscript"))
    assert policy.action_names == ["0", "1"] and policy.outputs(torch.zeros(3, 4)).shape == (3, 2)
    # exported like a batch-trained model: the metadata names what the scores are
    scores = {"DiscreteBCQ": "bcq_filtered_q_values", "DiscreteCRR": "actor_logits", "DiscreteIQL": "actor_logits"}
    assert policy.metadata["output"] == scores.get(name, "q_values")
