"""The train stage end to end on tiny CartPole tables: model dir, metrics, resume, guards, errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from batchrl import storage
from batchrl.config import parse_config
from batchrl.errors import BatchRLError
from batchrl.serving.export import load_policy
from batchrl.training import loop as loop_module
from batchrl.training import train as train_module
from batchrl.training.checkpoints import list_checkpoints, load_checkpoint
from batchrl.training.train import train
from tests.support.training import cartpole_dataset, write_prepared


def config_dict(model: str = "DiscreteDQN", epochs: int = 2, cpe: bool = True, **trainer) -> dict:
    return {
        "model": {model: {
            "trainer_param": {"actions": [0, 1], "rl": {"gamma": 0.9, "target_update_rate": 0.1},
                              "minibatch_size": 128, **trainer,
                              "optimizer": {"Adam": {"lr": 0.003, "lr_schedulers": [{"StepLR": {"step_size": 1,
                                                                                              "gamma": 0.5}}]}}},
            "net_builder": {"FullyConnected": {"sizes": [16], "activations": ["relu"], "dropout_ratio": 0.1}},
            "cpe_net_builder": {"FullyConnected": {"sizes": [8], "activations": ["relu"]}},
            "eval_parameters": {"calc_cpe_in_training": cpe}}},
        "num_epochs": epochs, "seed": 7, "device": "cpu",
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return cartpole_dataset(tmp_path_factory.mktemp("data"), transitions=1200, seed=0)


@pytest.fixture(autouse=True)
def _fast_cpe(monkeypatch):
    monkeypatch.setattr(train_module, "CPE_BOOTSTRAP", 5)


def _scalar_tags(directory) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_cli_writes_model_dir(tmp_path, data, cli):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(config_dict()))
    out = tmp_path / "model"
    code, stdout, err = cli("train", "--config", config, "--train", data["train"], "--eval", data["eval"],
                            "--normalization", data["norm.json"], "--output", out)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["epochs"] == 2 and summary["device"] == "cpu" and summary["transitions_per_s"] > 0
    assert {"td_loss", "reward_loss", "cpe_q_loss"} <= set(summary["final_losses"])
    for name in ("model.torchscript", "reward_model.torchscript", "q_value_model.torchscript",
                 "training_summary.json", "checkpoints/epoch-0001.pt", "checkpoints/epoch-0002.pt"):
        assert (out / name).exists(), name
    written = json.loads((out / "training_summary.json").read_text())
    assert written["action_names"] == ["0", "1"] and written["feature_ids"] == [0, 1, 2, 3]
    assert written["gamma"] == 0.9 and written["temperature"] == 0.01
    assert [e["epoch"] for e in written["per_epoch"]] == [1, 2]
    assert [e["learning_rate"] for e in written["per_epoch"]] == pytest.approx([0.003, 0.0015])  # StepLR
    last = written["per_epoch"][-1]
    assert last["eval"]["td_loss"] >= 0 and set(last["q_values"]) == {"0", "1"}
    assert sum(last["action_distribution"].values()) == pytest.approx(1.0)
    assert {"DM", "IPS", "DR", "SDR", "WDR", "MAGIC"} <= set(last["cpe"])
    assert written["config"]["model"]["DiscreteDQN"]["trainer_param"]["actions"] == ["0", "1"]
    tags = _scalar_tags(out / "tensorboard")
    assert {"eval/td_loss", "q_values/0", "q_values/1", "action_distribution/0", "epoch/learning_rate",
            "epoch/train_td_loss", "CPE/DR/raw", "CPE/DR/normalized", "CPE/SDR/normalized"} <= tags
    # the exported models agree with each other's contract
    policy = load_policy(str(out / "model.torchscript"))
    reward = load_policy(str(out / "reward_model.torchscript"))
    states = torch.rand(5, 4) - 0.5
    assert policy.outputs(states).shape == (5, 2) and reward.outputs(states).shape == (5, 2)
    assert policy.metadata["algorithm"] == "DiscreteDQN"


def _run(tmp_path, data, name, config, **kw):
    return train(parse_config(config), data["train"], data["eval"], data["norm.json"], str(tmp_path / name), **kw)


def test_resume_after_crash_equals_uninterrupted(tmp_path, data, monkeypatch):
    config = config_dict(epochs=3)
    _run(tmp_path, data, "full", config)

    original = loop_module.TrainingLoop._train_epoch

    def crash_in_epoch_3(self, epoch, state, last_good):
        if epoch == 3:
            raise KeyboardInterrupt("simulated crash")
        return original(self, epoch, state, last_good)

    monkeypatch.setattr(loop_module.TrainingLoop, "_train_epoch", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, data, "crashed", config)
    assert sorted(list_checkpoints(str(tmp_path / "crashed"))) == [1, 2]
    assert not (tmp_path / "crashed" / "model.torchscript").exists()
    monkeypatch.setattr(loop_module.TrainingLoop, "_train_epoch", original)
    summary = _run(tmp_path, data, "crashed", config, resume=True)
    assert summary.resumed_from.endswith("epoch-0002.pt")

    full = load_checkpoint(str(tmp_path / "full/checkpoints/epoch-0003.pt"))
    resumed = load_checkpoint(str(tmp_path / "crashed/checkpoints/epoch-0003.pt"))
    for part in ("trainer", "cpe"):
        for net, state in full[part].items():
            if isinstance(state, dict) and all(torch.is_tensor(v) for v in state.values()):
                for key, value in state.items():
                    assert torch.equal(value, resumed[part][net][key]), (part, net, key)
    states = torch.rand(20, 4) - 0.5
    a = load_policy(str(tmp_path / "full/model.torchscript")).outputs(states)
    b = load_policy(str(tmp_path / "crashed/model.torchscript")).outputs(states)
    assert torch.equal(a, b)
    history_a = json.loads((tmp_path / "full/training_summary.json").read_text())["per_epoch"]
    history_b = json.loads((tmp_path / "crashed/training_summary.json").read_text())["per_epoch"]
    assert [e["train"]["loss"] for e in history_a] == [e["train"]["loss"] for e in history_b]


def test_resume_with_a_different_config_is_refused(tmp_path, data):
    _run(tmp_path, data, "m", config_dict(epochs=1, cpe=False))
    changed = config_dict(epochs=2, cpe=False)
    changed["model"]["DiscreteDQN"]["trainer_param"]["rl"]["gamma"] = 0.5
    with pytest.raises(BatchRLError, match="different config"):
        _run(tmp_path, data, "m", changed, resume=True)
    summary = _run(tmp_path, data, "m", config_dict(epochs=2, cpe=False), resume=True)  # more epochs: allowed
    assert summary.epochs == 2 and summary.resumed_from.endswith("epoch-0001.pt")


def test_cql_and_dueling_train_and_export(tmp_path, data):
    config = config_dict(model="DiscreteCQL", epochs=1, cpe=False, alpha=0.5)
    config["model"]["DiscreteCQL"]["net_builder"] = {"Dueling": {"sizes": [16], "activations": ["relu"]}}
    summary = _run(tmp_path, data, "cql", config)
    assert summary.algorithm == "DiscreteCQL" and "cql_penalty" in summary.final_losses
    assert summary.final_losses["loss"] == pytest.approx(
        summary.final_losses["td_loss"] + 0.5 * summary.final_losses["cql_penalty"], rel=1e-5)
    assert not (tmp_path / "cql" / "reward_model.torchscript").exists()
    assert load_policy(str(tmp_path / "cql" / "model.torchscript")).metadata["algorithm"] == "DiscreteCQL"


def test_divergence_stops_with_a_clear_error(tmp_path, data):
    from tests.support.training import cartpole_rows

    rows = cartpole_rows(300, seed=1)
    rows["reward"] = rows["reward"] * 3e38  # finite rewards whose squared error overflows
    bad = str(tmp_path / "bad")
    write_prepared(bad, rows, [0, 1, 2, 3])
    config = parse_config(config_dict(epochs=1, cpe=False))
    with pytest.raises(BatchRLError, match="training diverged: .*non-finite in epoch 1") as err:
        train(config, bad, data["eval"], data["norm.json"], str(tmp_path / "m"))
    assert "learning rate" in err.value.fix
    assert not (tmp_path / "m" / "model.torchscript").exists()


def test_multi_steps_must_match_the_tables_rows(tmp_path, data):
    config = config_dict(epochs=1, cpe=False)
    config["model"]["DiscreteDQN"]["trainer_param"]["rl"]["multi_steps"] = 3
    with pytest.raises(BatchRLError, match="rl.multi_steps is 3 but the training table has 1-step rows"):
        _run(tmp_path, data, "m", config)


def test_action_mismatch_and_missing_cuda(tmp_path, data):
    config = config_dict(epochs=1, cpe=False)
    config["model"]["DiscreteDQN"]["trainer_param"]["actions"] = ["left", "right"]
    with pytest.raises(BatchRLError, match="differ from the training table"):
        _run(tmp_path, data, "m", config)
    if not torch.cuda.is_available():
        with pytest.raises(BatchRLError, match="no CUDA device"):
            _run(tmp_path, data, "m", config_dict(epochs=1, cpe=False), device="cuda")


def test_output_on_s3(s3_env, data):
    uri = f"{s3_env}/models/run1"
    summary = train(parse_config(config_dict(epochs=1, cpe=False)), data["train"], data["eval"],
                    data["norm.json"], uri)
    assert summary.paths["model"] == f"{uri}/model.torchscript"
    assert storage.exists(f"{uri}/checkpoints/epoch-0001.pt")
    assert storage.read_json(f"{uri}/training_summary.json")["epochs"] == 1
    assert load_policy(f"{uri}/model.torchscript").action_names == ["0", "1"]
    loc = storage.resolve(f"{uri}/tensorboard")
    import pyarrow.fs as pafs

    assert any("tfevents" in i.base_name for i in loc.fs.get_file_info(pafs.FileSelector(loc.path)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_mixed_precision_run_exports_a_cpu_model(tmp_path, data):
    summary = _run(tmp_path, data, "gpu", config_dict(epochs=1), device="cuda")
    assert summary.device.startswith("cuda")
    written = json.loads((tmp_path / "gpu" / "training_summary.json").read_text())
    assert written["mixed_precision"] in ("bfloat16", "float16")
    policy = load_policy(str(tmp_path / "gpu" / "model.torchscript"))
    assert torch.isfinite(policy.outputs(torch.rand(4, 4))).all()


def test_streaming_path_trains_like_resident(tmp_path, data, monkeypatch):
    import batchrl.data.loader as loader_module

    monkeypatch.setattr(loader_module, "default_resident_budget", lambda device: 0)
    summary = _run(tmp_path, data, "streamed", config_dict(epochs=1, cpe=False))
    written = json.loads((tmp_path / "streamed" / "training_summary.json").read_text())
    assert written["resident"] is False and summary.epochs == 1
    assert written["per_epoch"][0]["train"]["rows"] == written["train_rows"]


def test_keep_checkpoints_keeps_the_latest_and_resumes_from_them(tmp_path, data):
    config = {**config_dict(epochs=3, cpe=False), "keep_checkpoints": 2}
    _run(tmp_path, data, "m", config)
    assert sorted(list_checkpoints(str(tmp_path / "m"))) == [2, 3]
    summary = _run(tmp_path, data, "m", {**config, "num_epochs": 4, "keep_checkpoints": 1}, resume=True)
    assert summary.resumed_from.endswith("epoch-0003.pt")
    assert sorted(list_checkpoints(str(tmp_path / "m"))) == [4]


def test_cpu_threads_apply_while_training_only(tmp_path, data, monkeypatch):
    import torch

    seen = []
    original = train_module.TrainingLoop.run
    monkeypatch.setattr(train_module.TrainingLoop, "run",
                        lambda self, state: (seen.append(torch.get_num_threads()), original(self, state))[1])
    before = torch.get_num_threads()
    _run(tmp_path, data, "m", {**config_dict(epochs=1, cpe=False), "cpu_threads": before + 1})
    assert seen == [before + 1] and torch.get_num_threads() == before


def test_checkpoint_selection_exports_the_epoch_with_the_best_cpe_lower_bound(tmp_path, data, monkeypatch):
    """checkpoint_selection: the exported policy is the kept epoch whose WDR ci_low is the highest (every
    epoch bootstraps), restored from its checkpoint; without CPE in training it is refused up front."""
    config = {**config_dict(epochs=4), "checkpoint_selection": {"estimator": "WDR", "statistic": "ci_low"},
              "keep_checkpoints": 3}
    result = _run(tmp_path, data, "m", config)
    summary = json.loads((tmp_path / "m" / "training_summary.json").read_text())
    lows = {r["epoch"]: r["cpe"]["WDR"]["ci_low"] for r in summary["per_epoch"]}
    assert all(isinstance(v, float) for v in lows.values())  # an interval in every epoch, not only the last
    expected = max((low, epoch) for epoch, low in lows.items() if epoch >= 2)[1]  # epoch 1's checkpoint is pruned
    assert result.selected_epoch == summary["selected_epoch"] == expected
    assert result.to_dict()["selected_epoch"] == expected
    saved = load_checkpoint(list_checkpoints(str(tmp_path / "m"))[expected])
    q_network = saved["trainer"]["q_network"]
    policy = load_policy(str(tmp_path / "m" / "model.torchscript"))
    exported = {k[len("network."):]: v for k, v in policy.module.state_dict().items() if k.startswith("network.")}
    assert set(q_network) == set(exported)
    assert all(torch.equal(q_network[k], exported[k]) for k in q_network)
    if expected == 4:  # the last epoch won: show the restore itself on an earlier one
        monkeypatch.setattr(train_module, "select_epoch", lambda *args: (2, 0.0))
        assert _run(tmp_path, data, "m2", config).selected_epoch == 2
        exported = load_policy(str(tmp_path / "m2" / "model.torchscript")).module.state_dict()
        for epoch in (2, 4):
            saved = load_checkpoint(list_checkpoints(str(tmp_path / "m2"))[epoch])["trainer"]["q_network"]
            assert all(torch.equal(v, exported[f"network.{k}"]) for k, v in saved.items()) == (epoch == 2)
    without = {k: v for k, v in _run(tmp_path, data, "plain", config_dict(epochs=1)).to_dict().items()}
    assert "selected_epoch" not in without
    with pytest.raises(BatchRLError, match="checkpoint_selection chooses by the CPE estimates"):
        _run(tmp_path, data, "nocpe", {**config_dict(epochs=1, cpe=False), "checkpoint_selection": {}})


def test_export_checkpoint_exports_an_earlier_epochs_models(tmp_path, data):
    """export_checkpoint: the policy and CPE models of a kept epoch, as the run had them; the last epoch's
    export equals the run's own; an epoch without a checkpoint is one clear error."""
    config = config_dict(epochs=3)
    _run(tmp_path, data, "m", config)
    parsed, model_dir = parse_config(config), str(tmp_path / "m")
    exported = {}
    for epoch in (1, 3):
        paths = train_module.export_checkpoint(parsed, data["train"], data["norm.json"], model_dir, epoch,
                                               str(tmp_path / f"e{epoch}"))
        assert set(paths) == {"model", "reward_model", "q_value_model"}
        policy = load_policy(paths["model"])
        assert policy.metadata["exported_epoch"] == epoch
        exported[epoch] = policy.module.state_dict()
        saved = load_checkpoint(list_checkpoints(model_dir)[epoch])["trainer"]["q_network"]
        assert all(torch.equal(v, exported[epoch][f"network.{k}"]) for k, v in saved.items())
    final = load_policy(str(tmp_path / "m" / "model.torchscript")).module.state_dict()
    assert all(torch.equal(final[k], exported[3][k]) for k in final)
    assert not all(torch.equal(final[k], exported[1][k]) for k in final)
    with pytest.raises(BatchRLError, match="no checkpoint of epoch 7"):
        train_module.export_checkpoint(parsed, data["train"], data["norm.json"], model_dir, 7, str(tmp_path / "x"))
