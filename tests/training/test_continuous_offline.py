"""Offline continuous actions end to end: prepare with map actions, batch SAC / TD3+BC, the exported
actor in the logged units, greedy Pendulum rollouts, and ReAgent's sac_pendulum_offline.yaml."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml

from batchrl import storage
from batchrl.config import load_config, parse_config
from batchrl.data.loader import dataset_info, read_eval_batch
from batchrl.data.prepare import PrepareOptions, prepare
from batchrl.data.schema import CONTINUOUS_TRAINING_COLUMNS, METRICS_MAP, STATE_MAP
from batchrl.errors import BatchRLError
from batchrl.evaluation.rollouts import greedy_rollouts
from batchrl.preprocessing.normalization import NormalizationParameters, write_normalization
from batchrl.serving.export import load_policy
from batchrl.training.train import train
from batchrl.workflow import episode_limit

MASTER = "local[2]"
TIMELINE_SCHEMA = pa.schema([
    ("mdp_id", pa.string()), ("state_features", STATE_MAP), ("action", STATE_MAP), ("next_action", STATE_MAP),
    ("action_probability", pa.float64()), ("reward", pa.float64()), ("metrics", METRICS_MAP),
    ("next_state_features", STATE_MAP), ("sequence_number", pa.int64()), ("sequence_number_ordinal", pa.int64()),
    ("time_diff", pa.int64()), ("time_since_first", pa.int64()), ("ds", pa.string()), ("end_reason", pa.string()),
])


def _row(mdp, seq, state, action, next_action, next_state, end=None) -> dict:
    return {"mdp_id": mdp, "state_features": list(state.items()), "action": list(action.items()),
            "next_action": list(next_action.items()), "action_probability": 0.25, "reward": -float(seq),
            "metrics": [], "next_state_features": list(next_state.items()), "sequence_number": seq,
            "sequence_number_ordinal": seq + 1, "time_diff": 1, "time_since_first": seq, "ds": "2019-01-01",
            "end_reason": end}


@pytest.fixture(scope="module")
def tables(tmp_path_factory, spark) -> dict[str, str]:
    """A hand-made continuous timeline: episode "a" ends terminated, episode "b" is cut by a time limit."""
    base = tmp_path_factory.mktemp("continuous")
    rows = [
        _row("a", 0, {0: 1.0}, {7: 0.5, 9: -1.0}, {7: -2.0, 9: 1.5}, {0: 2.0}),
        _row("a", 1, {0: 2.0}, {7: -2.0, 9: 1.5}, {}, {}, end="terminated"),
        _row("b", 0, {0: 3.0}, {7: 1.0}, {7: 0.0, 9: 0.0}, {0: 4.0}),
        _row("b", 1, {0: 4.0}, {7: 0.0, 9: 0.0}, {}, {}, end="truncated"),
    ]
    uris = {name: str(base / name) for name in ("timeline", "norm.json", "action_norm.json", "train", "eval")}
    storage.write_table(pa.Table.from_pylist(rows, schema=TIMELINE_SCHEMA), uris["timeline"])
    write_normalization(uris["norm.json"], {0: NormalizationParameters(feature_type="CONTINUOUS", mean=2.0,
                                                                       stddev=1.0)})
    write_normalization(uris["action_norm.json"], {
        i: NormalizationParameters(feature_type="CONTINUOUS_ACTION", min_value=-2.0, max_value=2.0) for i in (7, 9)})
    return uris


def _prepare(uris, **kwargs):
    options = PrepareOptions(table_sample=100.0, eval_table_sample=0.0)
    return prepare(uris["timeline"], uris["norm.json"], uris["train"], uris["eval"], options, spark_master=MASTER,
                   **kwargs)


def test_prepare_writes_action_vectors_terminal_flags_and_the_action_normalization(tables):
    summary = _prepare(tables, action_normalization=tables["action_norm.json"])
    assert summary.action_kind == "continuous" and summary.action_names == ["7", "9"]
    assert summary.dropped_truncated == 1  # b's last row: no next state, not a terminal
    table = storage.read_table(tables["train"]).sort_by([("mdp_id", "ascending"), ("sequence_number", "ascending")])
    assert table.column_names == list(CONTINUOUS_TRAINING_COLUMNS)
    rows = table.to_pylist()
    assert [(r["mdp_id"], r["sequence_number"]) for r in rows] == [("a", 1), ("a", 2), ("b", 1)]
    assert rows[0]["action"] == [0.5, -1.0] and rows[0]["next_action"] == [-2.0, 1.5]
    assert rows[0]["not_terminal"] and not rows[1]["not_terminal"]  # a ends terminated: empty next action
    assert rows[2]["action"] == [1.0, 0.0] and rows[2]["action_presence"] == [True, False]
    assert rows[0]["possible_actions_mask"] == []
    meta = storage.read_metadata(tables["train"])
    assert meta["action_feature_ids"] == [7, 9] and set(meta["action_normalization"]) == {"7", "9"}
    info = dataset_info(tables["train"])
    assert info.continuous and info.num_actions == 2
    batch = read_eval_batch(tables["train"], info)
    assert batch.action.dtype == torch.float32 and batch.action.shape == (3, 2)


def test_prepare_map_actions_need_a_continuous_action_normalization(tables):
    with pytest.raises(BatchRLError, match="no action normalization") as exc:
        _prepare(tables)
    assert "--feature-type CONTINUOUS_ACTION" in exc.value.fix
    with pytest.raises(BatchRLError, match="CONTINUOUS_ACTION"):
        _prepare(tables, action_normalization=tables["norm.json"])  # a CONTINUOUS state normalization
    with pytest.raises(BatchRLError, match="--actions names discrete actions"):
        prepare(tables["timeline"], tables["norm.json"], tables["train"] + "2", tables["eval"] + "2",
                PrepareOptions(actions=["0", "1"]), spark_master=MASTER,
                action_normalization=tables["action_norm.json"])
    assert not storage.exists(tables["train"] + "2")


# ---------------------------------------------------------------- config


def test_reagent_offline_sac_config_is_accepted_unchanged():
    config = load_config("configs/reagent/sac_pendulum_offline.yaml")
    assert config.model.name == "SAC" and config.model.continuous
    assert config.batch_size == 1024  # reader_options.minibatch_size
    assert config.model.value.value_net_builder is not None
    assert config.model.value.action_float_features == [(0, "0")]


def test_reader_options_must_not_contradict_the_trainer_batch_size():
    with open("configs/reagent/sac_pendulum_offline.yaml") as fh:
        data = yaml.safe_load(fh)
    data["model"]["SAC"]["trainer_param"]["minibatch_size"] = 256
    with pytest.raises(BatchRLError, match="reader_options.minibatch_size 1024 contradicts"):
        parse_config(data)
    data["reader_options"]["minibatch_size"] = 256
    assert parse_config(data).batch_size == 256


def test_max_steps_caps_the_environment_time_limit_like_reagent():
    assert episode_limit("Pendulum-v1", 1000) == 200  # ReAgent's offline SAC config: 200-step episodes
    assert episode_limit("Pendulum-v1", 50) == 50
    assert episode_limit("CartPole-v0", None) is None


# ---------------------------------------------------------------- train, export, evaluate


def _config(algorithm: str, epochs: int, **trainer_param) -> dict:
    block = {"trainer_param": {"rl": {"gamma": 0.9, "target_update_rate": 0.1}, **trainer_param},
             "critic_net_builder": {"FullyConnected": {"sizes": [16], "activations": ["relu"]}},
             "actor_net_builder": {("GaussianFullyConnected" if algorithm in ("SAC", "IQL") else "FullyConnected"):
                                   {"sizes": [16], "activations": ["relu"]}}}
    return {"model": {algorithm: block}, "num_epochs": epochs, "seed": 3, "reader_options": {"minibatch_size": 2}}


@pytest.mark.parametrize("algorithm,extra", [("SAC", {}), ("TD3", {"bc_alpha": 2.5}), ("IQL", {})])
def test_batch_training_exports_an_actor_in_the_logged_units(tables, tmp_path, algorithm, extra):
    _prepare(tables, action_normalization=tables["action_norm.json"])
    config = parse_config(_config(algorithm, 2, **extra))
    summary = train(config, tables["train"], tables["train"], tables["norm.json"], str(tmp_path / "model"))
    assert summary.epochs == 2 and np.isfinite(summary.eval_td_loss)
    saved = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    assert saved["action_space"] == "continuous" and saved["action_names"] == ["7", "9"]
    assert set(saved["final"]["eval"]) >= {"td_loss", "q_logged", "q_policy", "policy_logged_distance"}
    policy = load_policy(str(tmp_path / "model" / "model.torchscript"))
    assert policy.continuous and policy.action_names == ["7", "9"]
    actions = policy.outputs(np.linspace(-10, 10, 40, dtype=np.float32).reshape(-1, 1))
    assert actions.shape == (40, 2) and float(actions.abs().max()) <= 2.0 + 1e-5


def test_batch_sac_resumes_to_the_same_model(tables, tmp_path):
    _prepare(tables, action_normalization=tables["action_norm.json"])
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    train(parse_config(_config("SAC", 3)), tables["train"], tables["train"], tables["norm.json"], whole)
    train(parse_config(_config("SAC", 2)), tables["train"], tables["train"], tables["norm.json"], parts)
    train(parse_config(_config("SAC", 3)), tables["train"], tables["train"], tables["norm.json"], parts, resume=True)
    x = np.linspace(-5, 5, 11, dtype=np.float32).reshape(-1, 1)
    a = load_policy(f"{whole}/model.torchscript").outputs(x)
    b = load_policy(f"{parts}/model.torchscript").outputs(x)
    assert torch.equal(a, b)


def test_algorithm_and_table_action_kinds_must_match(tables, tmp_path):
    _prepare(tables, action_normalization=tables["action_norm.json"])
    dqn = parse_config({"model": {"DiscreteDQN": {"trainer_param": {"actions": ["7", "9"]}}}})
    with pytest.raises(BatchRLError, match="DiscreteDQN trains on discrete actions but the training table's "
                                           "actions are continuous"):
        train(dqn, tables["train"], tables["train"], tables["norm.json"], str(tmp_path / "m"))
    wrong_ids = _config("SAC", 1)
    wrong_ids["model"]["SAC"]["action_float_features"] = [[0, "torque"]]
    with pytest.raises(BatchRLError, match="action_float_features"):
        train(parse_config(wrong_ids), tables["train"], tables["train"], tables["norm.json"], str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_greedy_rollouts_play_a_continuous_policy_in_pendulum(tmp_path):
    from batchrl.config import ModelConfig
    from batchrl.preprocessing.preprocessor import Preprocessor
    from batchrl.training.algorithms import build_trainer, export_policy

    normalization = {i: NormalizationParameters(feature_type="DO_NOT_PREPROCESS") for i in range(3)}
    torch.manual_seed(0)
    net = {"FullyConnected": {"sizes": [8], "activations": ["relu"]}}
    trainer = build_trainer(ModelConfig.model_validate({"TD3": {"actor_net_builder": net, "critic_net_builder": net}}),
                            3, 1)
    uri = str(tmp_path / "model.torchscript")
    export_policy(uri, trainer, Preprocessor(normalization, [0, 1, 2]), ["0"], [0, 1, 2], {}, {"algorithm": "TD3"},
                  action_bounds=([-2.0], [2.0]))
    rollouts = greedy_rollouts(load_policy(uri), "Pendulum-v1", episodes=3, seed=0, num_envs=2, max_steps=20)
    assert rollouts.lengths.tolist() == [20, 20, 20] and (rollouts.returns < 0).all()
    with pytest.raises(BatchRLError, match="this model's actions are continuous"):
        greedy_rollouts(load_policy(uri), "CartPole-v0", episodes=1, seed=0)


@pytest.mark.slow
def test_batchrl_run_takes_reagents_offline_sac_config(tmp_path, cli, spark):
    with open("configs/reagent/sac_pendulum_offline.yaml") as fh:
        config = yaml.safe_load(fh)
    sac = config["model"]["SAC"]
    for key in ("actor_net_builder", "critic_net_builder", "value_net_builder"):
        next(iter(sac[key].values()))["sizes"] = [16, 16]
    config.update(num_train_transitions=1000, num_epochs=1, num_eval_episodes=2, passing_score_bar=-1e9,
                  input_table_spec={"table_sample": 80, "eval_table_sample": 20})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "work"
    code, out, err = cli("run", str(path), "--workdir", str(workdir), "--spark-master", MASTER)
    assert code == 0, err
    summary = json.loads((workdir / "run_summary.json").read_text())
    assert summary["generate"]["episodes"] == 5  # max_steps 1000 caps Pendulum's own 200-step limit
    assert summary["normalize_actions"]["features"] == 1
    assert summary["prepare"]["action_kind"] == "continuous"
    assert summary["evaluate"]["gym"]["mean_length"] == 200.0
    assert "gym score (Pendulum-v1, 2 greedy episodes)" in out and "counterfactual" not in out
    metrics = json.loads((workdir / "evaluation" / "metrics.json").read_text())
    assert "cpe" not in metrics and any("continuous" in note for note in metrics["notes"])
