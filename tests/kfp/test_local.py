"""The compiled pipeline runs end to end under kfp.local (tiny data) and every artifact has its metadata;
``batchrl pipeline run-local`` reports bad parameter files without running anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from batchrl import storage

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "batch_rl.yaml"

TINY_CONFIG = {
    "model": {"DiscreteDQN": {
        "trainer_param": {"actions": ["0", "1"], "minibatch_size": 256,
                          "rl": {"gamma": 0.99, "target_update_rate": 0.1, "temperature": 0.35}},
        "net_builder": {"FullyConnected": {"sizes": [16], "activations": ["relu"]}},
        "cpe_net_builder": {"FullyConnected": {"sizes": [16], "activations": ["relu"]}},
    }},
    "seed": 42,
}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_the_compiled_pipeline_runs_locally_with_every_artifact(tmp_path, cli):
    published = tmp_path / "published"
    params = _write(tmp_path / "params.yaml", {
        "transitions": 2000, "num_epochs": 1, "num_eval_episodes": 2, "cpe_bootstrap": 0, "fqe": False,
        "passing_score_bar": 0.0, "publish_uri": str(published), "workflow_config": TINY_CONFIG,
        "spark_master": "local[2]", "spark_conf": {"spark.sql.shuffle.partitions": "2"},
    })
    code, out, err = cli("pipeline", "run-local", params, "--pipeline", PIPELINE,
                         "--pipeline-root", tmp_path / "root")
    assert code == 0, err[-4000:]
    result = json.loads(out)
    assert Path(result["run_dir"]).parent == tmp_path / "root"
    tasks = result["tasks"]
    assert set(tasks) == {"generate", "timeline", "normalize", "normalize-actions", "prepare", "gpu-request",
                          "train", "evaluate", "publish"}

    def artifact(task: str, name: str, written: bool = True) -> tuple[str, dict]:
        found = tasks[task]["artifacts"][name]
        assert not written or storage.exists(found["uri"]), f"{task}.{name} was not written"
        return found["uri"], found["metadata"]

    uri, meta = artifact("generate", "logged")
    assert storage.is_committed(uri) and meta["rows"] == 2000 and meta["action_names"] == ["0", "1"]
    uri, meta = artifact("timeline", "timeline_table")
    assert storage.is_committed(uri) and meta["input_rows"] == 2000 and meta["output_rows"] > 0
    timeline_rows = meta["output_rows"]
    uri, meta = artifact("normalize", "normalization")
    assert [int(f) for f in meta["feature_ids"]] == [0, 1, 2, 3] and sorted(storage.read_json(uri)) == ["0", "1", "2", "3"]
    uri, meta = artifact("normalize-actions", "action_normalization")
    assert meta["action_kind"] == "discrete" and storage.read_json(uri) == {}  # string actions: nothing to scale
    rows = 0
    for name in ("train_table", "eval_table"):
        uri, meta = artifact("prepare", name)
        assert storage.is_committed(uri) and meta["num_rows"] > 0
        assert [int(f) for f in meta["feature_ids"]] == [0, 1, 2, 3] and meta["action_names"] == ["0", "1"]
        rows += meta["num_rows"]
    assert rows <= timeline_rows
    probe = tasks["gpu-request"]["parameters"]  # no cluster here: CPU training, no GPU placement
    assert (probe["limit"], probe["tolerations"], probe["node_selector"]) == ("0", [], {})
    assert "no in-cluster Kubernetes API" in probe["reason"]
    uri, meta = artifact("train", "model")
    assert storage.exists(f"{uri}/model.torchscript") and storage.exists(f"{uri}/training_summary.json")
    assert meta["epochs"] == 1 and meta["device"] == "cpu" and meta["algorithm"] == "DiscreteDQN"
    _, meta = artifact("train", "training_metrics", written=False)  # metrics live in metadata
    assert any(key.startswith("loss_") for key in meta)
    uri, meta = artifact("evaluate", "evaluation")
    assert storage.exists(f"{uri}/metrics.json") and meta["passed"] is True and meta["score"] > 0
    assert tasks["evaluate"]["parameters"] == {"Output": True}
    _, meta = artifact("evaluate", "metrics", written=False)
    assert meta["gym_mean_return"] == pytest.approx(tasks["evaluate"]["artifacts"]["evaluation"]["metadata"]["score"])
    uri, _ = artifact("evaluate", "report")
    assert Path(uri).read_text().lstrip().startswith("#")
    uri, _ = artifact("evaluate", "report_html")
    assert "<html" in Path(uri).read_text().lower()
    uri, meta = artifact("publish", "published")
    assert storage.is_committed(uri) and "model.torchscript" in meta["files"]
    assert storage.is_committed(str(published))
    assert json.loads((published / "published.json").read_text())["passed"] is True


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["", "IQL"])
def test_the_same_pipeline_trains_sac_on_continuous_actions(tmp_path, cli, algorithm):
    """``algorithm`` "" trains the config's SAC; "IQL" renames its model block (the pipeline's ``algorithm``
    parameter): the same networks train as continuous IQL."""
    sac = {"model": {"SAC": {
        "trainer_param": {"rl": {"gamma": 0.99, "target_update_rate": 0.005}},
        "actor_net_builder": {"GaussianFullyConnected": {"sizes": [16], "activations": ["relu"]}},
        "critic_net_builder": {"FullyConnected": {"sizes": [16], "activations": ["relu"]}}}},
        "reader_options": {"minibatch_size": 256}, "seed": 42}
    params = _write(tmp_path / "params.yaml", {
        "env": "Pendulum-v1", "transitions": 1000, "num_epochs": 1, "num_eval_episodes": 2,  # default actions
        "cpe_bootstrap": 0, "fqe": False, "passing_score_bar": -1e9, "workflow_config": sac, "algorithm": algorithm,
        "spark_master": "local[2]", "spark_conf": {"spark.sql.shuffle.partitions": "2"},
    })
    code, out, err = cli("pipeline", "run-local", params, "--pipeline", PIPELINE,
                         "--pipeline-root", tmp_path / "root")
    assert code == 0, err[-4000:]
    tasks = json.loads(out)["tasks"]
    meta = {task: {name: found["metadata"] for name, found in tasks[task]["artifacts"].items()} for task in tasks}
    assert meta["normalize-actions"]["action_normalization"]["action_kind"] == "continuous"
    assert meta["prepare"]["train_table"]["action_kind"] == "continuous"
    assert meta["train"]["model"]["algorithm"] == (algorithm or "SAC")
    assert meta["train"]["model"]["action_names"] == ["0"]
    assert meta["evaluate"]["evaluation"]["passed"] is True and meta["evaluate"]["evaluation"]["score"] < 0
    model = tasks["train"]["artifacts"]["model"]["uri"]
    from batchrl.serving.export import load_policy

    policy = load_policy(f"{model}/model.torchscript")
    assert policy.continuous and float(policy.outputs([[1.0, 0.0, 0.0]]).abs().max()) <= 2.0 + 1e-5


@pytest.mark.slow
def test_the_same_pipeline_trains_parametric_dqn_on_candidate_sets(tmp_path, cli):
    """The recommendation config through the pipeline with its default (discrete, CartPole) ``actions``: they do
    not reach the parametric model, whose items come from the table; evaluation reports the baselines and the
    one-step truth beside the CPE estimates."""
    with open("configs/recommendation_parametric_dqn_offline.yaml") as fh:
        config = yaml.safe_load(fh)
    config["model"]["ParametricDQN"]["net_builder"]["FullyConnected"].update(sizes=[8], activations=["relu"])
    params = _write(tmp_path / "params.yaml", {
        "env": "batchrl/Recommendation-v0", "transitions": 600, "num_epochs": 1, "num_eval_episodes": 3,
        "cpe_bootstrap": 0, "fqe": False, "passing_score_bar": -1.0, "workflow_config": config,
        "table_sample": 45.0, "eval_table_sample": 55.0, "logging_policy": "heuristic-softmax",
        "logging_temperature": 1.0, "spark_master": "local[2]", "spark_conf": {"spark.sql.shuffle.partitions": "2"},
    })
    code, out, err = cli("pipeline", "run-local", params, "--pipeline", PIPELINE, "--pipeline-root", tmp_path / "root")
    assert code == 0, err[-4000:]
    tasks = json.loads(out)["tasks"]
    assert tasks["train"]["artifacts"]["model"]["metadata"]["algorithm"] == "ParametricDQN"
    assert tasks["prepare"]["artifacts"]["eval_table"]["metadata"]["action_kind"] == "parametric"
    metrics = storage.read_json(tasks["evaluate"]["artifacts"]["evaluation"]["uri"] + "/metrics.json")
    assert set(metrics["gym"]["baselines"]) == {"logging", "myopic", "random"}
    assert 0.0 < metrics["cpe"]["simulated_one_step_value"] < 1.0 and "SDR" in metrics["cpe"]["estimates"]


def test_run_local_rejects_unknown_parameters(tmp_path, cli):
    params = _write(tmp_path / "params.yaml", {"transitions": 10, "epochs": 3})
    # without --pipeline: the package's pipeline, compiled now
    code, out, err = cli("pipeline", "run-local", params, "--pipeline-root", tmp_path)
    assert code == 2 and out == ""
    assert "unknown pipeline parameter(s) ['epochs']" in err and "num_epochs" in err
    assert not list(tmp_path.glob("batch-rl-*"))


def test_run_local_reports_bad_files(tmp_path, cli):
    code, _, err = cli("pipeline", "run-local", _write(tmp_path / "p.yaml", {}), "--pipeline", tmp_path / "none.yaml")
    assert code == 2 and "no compiled pipeline here" in err
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    code, _, err = cli("pipeline", "run-local", tmp_path / "list.yaml", "--pipeline", PIPELINE)
    assert code == 2 and "must be a mapping" in err
    (tmp_path / "bad.yaml").write_text("a: [\n")
    code, _, err = cli("pipeline", "run-local", tmp_path / "bad.yaml")
    assert code == 2 and "not valid YAML" in err
