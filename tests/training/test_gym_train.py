"""`batchrl gym-train`: a short online run (a few hundred steps) end to end through the CLI, the model
dir it writes (spec section 8 export, usable by `batchrl generate --policy`), the bar's exit code."""

import json

import numpy as np
import pytest
import torch
import yaml

from batchrl import storage
from batchrl.serving.export import load_policy


def _config(tmp_path, name, **changes):
    data = yaml.safe_load(open(f"configs/gym/{name}.yaml"))
    data.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cartpole_dqn_short_run_writes_a_usable_model_dir(tmp_path, cli):
    config = _config(tmp_path, "cartpole_v0_dqn", train_after_ts=100, num_train_episodes=8, num_eval_episodes=4,
                     passing_score_bar=5.0)
    out = tmp_path / "model"
    code, stdout, err = cli("gym-train", config, "--output", out)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["passed"] is True and summary["eval"]["episodes"] == 4
    assert summary["env_steps"] > 100 and summary["updates"] == summary["env_steps"] - 100
    assert summary["final_losses"] and np.isfinite(summary["final_losses"]["loss"])
    assert json.loads((out / "training_summary.json").read_text())["algorithm"] == "DiscreteDQN"
    assert any((out / "tensorboard").iterdir())
    policy = load_policy(str(out / "model.torchscript"))
    assert policy.action_names == ["0", "1"] and policy.feature_ids == [0, 1, 2, 3]
    assert policy.metadata["output"] == "q_values" and policy.metadata["online"] is True
    names, q = policy.module(torch.zeros(3, 4), torch.ones(3, 4))
    assert names == ["0", "1"] and q.shape == (3, 2)
    # iterated batch RL: the trained model is a logging policy for `batchrl generate`
    code, _, err = cli("generate", "--env", "CartPole-v0", "--transitions", "200", "--policy", "epsilon-greedy",
                       "--model", out / "model.torchscript", "--output", tmp_path / "logged")
    assert code == 0, err
    assert storage.read_table(str(tmp_path / "logged")).num_rows == 200
    # and `batchrl evaluate` reads the model dir like a batch-trained one
    code, stdout, err = cli("evaluate", "--model", out, "--env", "CartPole-v0", "--episodes", "3",
                            "--output", tmp_path / "eval")
    assert code == 0, err
    assert json.loads(stdout)["gym_score"] > 0


def test_below_the_bar_exits_1(tmp_path, cli):
    config = _config(tmp_path, "cartpole_v0_dqn", train_after_ts=50, num_train_episodes=1, num_eval_episodes=2,
                     passing_score_bar=1000.0)
    code, stdout, _ = cli("gym-train", config, "--output", tmp_path / "m")
    assert code == 1 and json.loads(stdout)["passed"] is False


@pytest.mark.parametrize("name", ["pendulum_sac", "pendulum_td3"])
def test_pendulum_short_run_exports_actions_in_env_units(tmp_path, cli, name):
    config = _config(tmp_path, name, train_after_ts=64, num_train_episodes=1, num_eval_episodes=1,
                     minibatch_size=32, max_steps=100)
    out = tmp_path / "model"
    code, stdout, err = cli("gym-train", config, "--output", out)
    assert code in (0, 1), err
    summary = json.loads(stdout)
    assert summary["updates"] == 100 and summary["eval"]["episodes"] == 1
    policy = load_policy(str(out / "model.torchscript"))
    assert policy.metadata["output"] == "actions" and policy.action_names == ["0"]
    assert policy.metadata["action_low"] == [-2.0] and policy.metadata["action_high"] == [2.0]
    names, actions = policy.module(torch.randn(50, 3) * 5, torch.ones(50, 3))
    assert actions.shape == (50, 1) and actions.abs().max() <= 2.0


def test_wrong_action_kind_is_a_user_error(tmp_path, cli):
    config = _config(tmp_path, "pendulum_sac", env="CartPole-v0")
    code, _, err = cli("gym-train", config, "--output", tmp_path / "m")
    assert code == 2 and "needs continuous actions" in err
    assert not (tmp_path / "m").exists()


def test_keep_best_exports_the_best_checked_policy_without_changing_training(tmp_path, cli):
    from batchrl.training.online import CHECK_SEED_OFFSET, greedy_check

    common = {"train_after_ts": 100, "num_train_episodes": 6, "num_eval_episodes": 2, "passing_score_bar": None}
    plain = _config(tmp_path, "cartpole_v0_dqn", **common, keep_best=None)  # the shipped config checks
    code, stdout, err = cli("gym-train", plain, "--output", tmp_path / "plain")
    assert code == 0, err
    without = json.loads(stdout)
    (tmp_path / "kb").mkdir()
    checked = _config(tmp_path / "kb", "cartpole_v0_dqn", **common, keep_best={"every_episodes": 2, "episodes": 3})
    code, stdout, err = cli("gym-train", checked, "--output", tmp_path / "best")
    assert code == 0, err
    summary = json.loads(stdout)
    best = summary["keep_best"]
    assert [c["episode"] for c in best["checks"]] == [2, 4, 6] and best["check_env_steps"] > 0
    top = max(c["mean_return"] for c in best["checks"])
    assert best["mean_return"] == top
    assert best["episode"] == max(c["episode"] for c in best["checks"] if c["mean_return"] == top)
    # the checks only watch: training saw the same episodes as without them
    saved = json.loads((tmp_path / "plain" / "training_summary.json").read_text())
    assert json.loads((tmp_path / "best" / "training_summary.json").read_text())["train_returns"] == \
        saved["train_returns"] and without["keep_best"] is None
    # and the exported policy is the checked one: replaying the check gives its mean return
    policy = load_policy(str(tmp_path / "best" / "model.torchscript"))
    mean, _ = greedy_check("CartPole-v0", None, lambda obs: int(policy.greedy_actions(obs.reshape(1, -1))[0]), 3,
                           summary["seed"] + CHECK_SEED_OFFSET)
    assert mean == pytest.approx(best["mean_return"])
