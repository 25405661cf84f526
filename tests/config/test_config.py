"""The workflow config: ReAgent's file accepted unchanged, unknown keys rejected by name."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from batchrl.config import load_config, parse_config
from batchrl.errors import BatchRLError

ROOT = pathlib.Path(__file__).resolve().parents[2]
REAGENT = ROOT / "configs" / "reagent" / "discrete_dqn_cartpole_offline.yaml"
DEFAULT = ROOT / "configs" / "cartpole_dqn_offline.yaml"


def reagent_dict() -> dict:
    return yaml.safe_load(REAGENT.read_text())


def test_reagent_file_accepted_unchanged():
    config = load_config(REAGENT)
    model = config.model.value
    assert config.model.name == "DiscreteDQN"
    assert model.trainer_param.actions == ["0", "1"]  # ints mean the strings "0", "1"
    assert model.trainer_param.rl.gamma == 0.99 and model.trainer_param.rl.target_update_rate == 0.1
    assert model.trainer_param.optimizer.name == "Adam"
    assert model.trainer_param.optimizer.params.lr == 0.01
    assert model.trainer_param.optimizer.params.weight_decay == 0.01
    assert model.net_builder.params.sizes == [128, 64]
    assert model.cpe_net_builder.name == "FullyConnected"
    assert model.preprocessing_options.num_samples == 1000
    assert model.evaluation.calc_cpe_in_training is True
    assert config.input_table_spec.table_sample == 90 and config.input_table_spec.eval_table_sample == 10
    assert (config.num_train_transitions, config.max_steps, config.seed, config.num_epochs) == (30000, 200, 42, 20)
    assert config.publisher.FileSystemPublisher is not None
    assert (config.num_eval_episodes, config.passing_score_bar) == (50, 120)
    assert config.env_name == "CartPole-v0" and config.model_path and config.pkl_path
    assert (config.device, config.checkpoint_every) == ("auto", 1)


def test_shipped_default_and_cql_config_accepted():
    config = load_config(DEFAULT)
    assert config.model.name in ("DiscreteDQN", "DiscreteCQL")
    data = reagent_dict()
    data["model"] = {"DiscreteCQL": {**data["model"]["DiscreteDQN"]}}
    data["model"]["DiscreteCQL"]["trainer_param"] = {**data["model"]["DiscreteCQL"]["trainer_param"], "alpha": 0.5}
    data.update(device="cpu", checkpoint_every=2)
    config = parse_config(data)
    assert config.model.value.trainer_param.alpha == 0.5 and config.checkpoint_every == 2


def test_older_reagent_evaluation_location_accepted():
    data = reagent_dict()
    dqn = data["model"]["DiscreteDQN"]
    del dqn["eval_parameters"]
    dqn["trainer_param"]["evaluation"] = {"calc_cpe_in_training": False}
    assert parse_config(data).model.value.evaluation.calc_cpe_in_training is False


@pytest.mark.parametrize(("path", "key", "where"), [
    ((), "num_epoch", "the top level"),
    (("model", "DiscreteDQN", "trainer_param", "rl"), "gama", "model.DiscreteDQN.trainer_param.rl"),
    (("model", "DiscreteDQN", "trainer_param", "optimizer", "Adam"), "learning_rate",
     "model.DiscreteDQN.trainer_param.optimizer.Adam"),
    (("input_table_spec",), "table_smaple", "input_table_spec"),
])
def test_unknown_key_is_named_with_its_place(path, key, where):
    data = reagent_dict()
    node = data
    for part in path:
        node = node[part]
    node[key] = 1
    with pytest.raises(BatchRLError) as err:
        parse_config(data, where="cfg.yaml")
    assert f"unknown key '{key}' in {where}" in err.value.message
    assert err.value.where == "cfg.yaml"
    assert "allowed" in err.value.fix


def test_unknown_model_and_optimizer_names():
    data = reagent_dict()
    data["model"] = {"DiscreteDQNN": data["model"]["DiscreteDQN"]}
    with pytest.raises(BatchRLError, match="unknown key 'DiscreteDQNN' in model"):
        parse_config(data)
    data = reagent_dict()
    data["model"]["DiscreteDQN"]["trainer_param"]["optimizer"] = {"Adam": {"lr": 0.1}, "SGD": {}}
    with pytest.raises(BatchRLError, match="exactly one"):
        parse_config(data)


@pytest.mark.parametrize(("path", "value", "message"), [
    (("model", "DiscreteDQN", "trainer_param", "rl", "q_network_loss"), "l1", "q_network_loss"),
    (("model", "DiscreteDQN", "trainer_param", "rl", "gamma"), 1.5, "gamma"),
    (("model", "DiscreteDQN", "net_builder", "FullyConnected", "activations"), ["relu"], "same length"),
    (("model", "DiscreteDQN", "trainer_param", "actions"), [0, 0], "distinct"),
    (("model", "DiscreteDQN", "trainer_param", "rl", "reward_boost"), {"2": 1.0}, "not in actions"),
    (("device",), "tpu", "device"),
])
def test_bad_values(path, value, message):
    data = reagent_dict()
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(BatchRLError, match=message):
        parse_config(data)


def test_checkpoint_selection_with_multi_step_rows_is_refused():
    data = reagent_dict()
    data["checkpoint_selection"] = {"estimator": "WDR", "statistic": "ci_low"}
    parse_config(data)  # one-step rows: fine
    data["model"]["DiscreteDQN"]["trainer_param"]["rl"]["multi_steps"] = 3
    with pytest.raises(BatchRLError, match="checkpoint_selection .* rl.multi_steps 3"):
        parse_config(data)


def test_cli_unknown_key_exits_2_naming_it(tmp_path, cli):
    data = reagent_dict()
    data["model"]["DiscreteDQN"]["trainer_param"]["rl"]["gama"] = 0.9
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    code, out, err = cli("train", "--config", path, "--train", tmp_path / "t", "--eval", tmp_path / "e",
                         "--normalization", tmp_path / "n.json", "--output", tmp_path / "m")
    assert code == 2
    assert "unknown key 'gama' in model.DiscreteDQN.trainer_param.rl" in err
    assert str(path) in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_not_yaml_and_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(BatchRLError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(BatchRLError, match="mapping"):
        load_config(bad)


@pytest.mark.parametrize("path", sorted(str(p) for p in pathlib.Path("configs").glob("*.yaml")) +
                         sorted(str(p) for p in pathlib.Path("configs/reagent").glob("*.yaml")))
def test_every_shipped_workflow_config_loads(path):
    config = load_config(path)
    assert config.env_name and config.num_epochs >= 1
    continuous = config.model.continuous
    assert continuous == ("pendulum" in path)  # the Pendulum configs are the continuous-action ones


def test_switch_algorithm_drops_the_old_algorithms_own_options_only():
    from batchrl.config.workflow import switch_algorithm

    bcq = {"trainer_param": {"actions": ["a"], "drop_threshold": 0.3, "imitator_logit_penalty": 0.5,
                             "optimizer": {"Adam": {"lr": 0.01}}},
           "net_builder": {"FullyConnected": {"sizes": [8]}}, "share_trunk": True}
    body, dropped = switch_algorithm(bcq, "DiscreteBCQ", "DiscreteCQL")
    assert sorted(dropped) == ["share_trunk", "trainer_param.drop_threshold", "trainer_param.imitator_logit_penalty"]
    assert body == {"trainer_param": {"actions": ["a"], "optimizer": {"Adam": {"lr": 0.01}}},
                    "net_builder": {"FullyConnected": {"sizes": [8]}}}
    assert bcq["share_trunk"] is True and "drop_threshold" in bcq["trainer_param"]  # the input is not modified
    # DQN's imitation head and BCQ's imitator share the penalty's name: it stays for BCQ
    dqn = {"trainer_param": {"actions": ["a"], "imitation_weight": 1.0, "imitator_logit_penalty": 0.5}}
    body, dropped = switch_algorithm(dqn, "DiscreteDQN", "DiscreteBCQ")
    assert dropped == ["trainer_param.imitation_weight"] and body["trainer_param"]["imitator_logit_penalty"] == 0.5
    # unknown keys and unknown algorithms are left to validation
    assert switch_algorithm({"typo": 1}, "DiscreteDQN", "DiscreteCQL") == ({"typo": 1}, [])
    assert switch_algorithm(dqn, "DiscreteDQN", "Nope") == (dqn, [])
