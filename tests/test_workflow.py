"""`batchrl run`: the whole workflow on a tiny config; artifacts, printed summary, error paths."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from batchrl import storage
from batchrl.workflow import ARTIFACTS


def _tiny_config(tmp_path, **overrides) -> str:
    with open("configs/cartpole_dqn_offline.yaml") as fh:
        config = yaml.safe_load(fh)
    config.update(num_train_transitions=1500, num_epochs=1, num_eval_episodes=4, passing_score_bar=None)
    dqn = config["model"]["DiscreteDQN"]
    dqn["net_builder"]["FullyConnected"]["sizes"] = [16]
    dqn["net_builder"]["FullyConnected"]["activations"] = ["relu"]
    dqn["cpe_net_builder"] = dqn["net_builder"]
    config.update(overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
def test_run_writes_every_artifact_and_prints_scores(tmp_path, cli, spark):
    workdir = tmp_path / "work"
    code, out, err = cli("run", _tiny_config(tmp_path), "--workdir", workdir)
    assert code == 0, err
    for name in ARTIFACTS:
        assert (workdir / ARTIFACTS[name]).exists(), name
    assert (workdir / "model" / "model.torchscript").exists()
    assert (workdir / "evaluation" / "report.html").exists()
    summary = json.loads((workdir / "run_summary.json").read_text())
    assert summary["generate"]["rows"] == 1500
    assert summary["timeline"]["output_rows"] == 1500  # terminal rows kept: one row per transition
    assert summary["train"]["epochs"] == 1
    assert "gym score (CartPole-v0, 4 greedy episodes)" in out
    assert "WDR" in out and "artifacts:" in out
    assert storage.read_metadata(str(workdir / ARTIFACTS["train"]))["action_names"] == ["0", "1"]
    assert summary["normalize_actions"]["action_kind"] == "discrete"  # an empty action normalization


def test_run_with_multi_steps_trains_on_k_step_rows_and_skips_cpe(tmp_path, cli):
    """rl.multi_steps: the timeline writes reward arrays, prepare k-step discounted sums, training runs on
    them, and the evaluation says why it computed no CPE (one reward per decision needed)."""
    path = _tiny_config(tmp_path)
    config = yaml.safe_load(open(path))
    config["model"]["DiscreteDQN"]["trainer_param"]["rl"]["multi_steps"] = 3
    open(path, "w").write(yaml.safe_dump(config))
    workdir = tmp_path / "work"
    code, out, err = cli("run", path, "--workdir", workdir)
    assert code == 0, err
    train_meta = storage.read_metadata(str(workdir / ARTIFACTS["train"]))
    assert (train_meta["multi_steps"], train_meta["gamma"]) == (3, 0.99)
    summary = json.loads((workdir / "run_summary.json").read_text())
    assert summary["train"]["epochs"] == 1
    metrics = json.loads((workdir / "evaluation" / "metrics.json").read_text())
    assert "cpe" not in metrics
    assert any("3-step rows" in note for note in metrics["notes"])
    assert "gym score (CartPole-v0, 4 greedy episodes)" in out and "WDR" not in out


def test_run_with_bad_config_key_exits_2(tmp_path, cli):
    code, _, err = cli("run", _tiny_config(tmp_path, num_epoch=3), "--workdir", tmp_path / "w")
    assert code == 2 and "num_epoch" in err
    assert not (tmp_path / "w").exists()


def test_run_names_the_engine_per_data_stage_and_stops_after_prepare(tmp_path, cli):
    workdir = tmp_path / "work"
    code, out, err = cli("run", _tiny_config(tmp_path), "--workdir", workdir, "--stop-after", "prepare")
    assert code == 0, err
    for stage in ("validate", "timeline", "normalize", "prepare"):
        (line,) = [line for line in out.splitlines() if re.match(rf"\[\s*[\d.]+s\] {stage}\s", line)]
        assert line.endswith("engine=duckdb"), line
    assert (workdir / ARTIFACTS["train"]).exists() and not (workdir / ARTIFACTS["model"]).exists()
    assert set(json.loads((workdir / "run_summary.json").read_text())) >= {"prepare", "artifacts"}
