"""The compiled pipeline round-trips through kfp and carries its platform settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kfp import components

from batchrl.kfp.images import DEFAULT_IMAGES
from batchrl.kfp.pipeline import DEFAULT_CONFIG, PIPELINE_NAME, RESOURCES, RETRY, SECRET_ENV

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "batch_rl.yaml"


@pytest.fixture(scope="module")
def documents() -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(PIPELINE.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _executors(spec: dict, step: str) -> dict[str, dict]:
    """The executors of ``step`` (one per branch of the pipeline: exec-<step>, exec-<step>-2)."""
    executors = spec["deploymentSpec"]["executors"]
    found = {name: e for name, e in executors.items() if name.rstrip("-0123456789") == f"exec-{step}"}
    assert found, f"no executor for {step}"
    return found


def _tasks(spec: dict) -> dict[str, dict]:
    return {f"{comp}/{name}": task for comp, body in spec["components"].items() if "dag" in body
            for name, task in body["dag"]["tasks"].items()}


def test_loads_with_kfp_and_exposes_the_knobs():
    pipeline = components.load_component_from_file(str(PIPELINE))
    assert pipeline.name == PIPELINE_NAME
    inputs = pipeline.component_spec.inputs
    for knob in ("env", "input_uri", "transitions", "table_sample", "eval_table_sample", "num_epochs", "algorithm",
                 "data_seed", "train_seed", "spark_master", "spark_conf", "passing_score_bar", "publish_gate",
                 "gpu_mode", "gpus", "accelerator_type", "gpu_tolerations", "gpu_node_selector", "s3_endpoint",
                 "object_store_secret", "workflow_config"):
        assert knob in inputs, knob
        assert inputs[knob].optional, f"{knob} has no default"
    assert inputs["workflow_config"].default["model"]["DiscreteDQN"]["trainer_param"]["actions"] == ["0", "1"]


def test_recompiling_the_loaded_yaml_gives_the_same_pipeline(tmp_path):
    from kfp import compiler

    again = tmp_path / "again.yaml"
    compiler.Compiler().compile(components.load_component_from_file(str(PIPELINE)), str(again))
    assert list(yaml.safe_load_all(again.read_text())) == list(yaml.safe_load_all(PIPELINE.read_text()))


def test_training_requests_a_gpu_sized_by_the_probe(documents):
    """The limit, tolerations and node selector of training all come from the probe's outputs (the
    driver's reading of them: tests/test_kfp_driver_contract.py)."""
    spec, platform = documents
    for name, executor in _executors(spec, "train").items():
        accelerator = executor["container"]["resources"]["accelerator"]
        assert accelerator["resourceType"] == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
        assert accelerator["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpu-request-limit']}}"
        probe = {"producerTask": "gpu-request"}
        assert platform[name]["tolerations"] == [
            {"tolerationJson": {"taskOutputParameter": {**probe, "outputParameterKey": "tolerations"}}}]
        assert platform[name]["nodeSelector"] == {
            "nodeSelectorJson": {"taskOutputParameter": {**probe, "outputParameterKey": "node_selector"}}}
        assert executor["container"]["image"] == DEFAULT_IMAGES.trainer
    for step in ("generate", "timeline", "normalize", "normalize-actions", "prepare", "evaluate", "publish",
                 "gpu-request"):
        for executor in _executors(spec, step).values():
            assert "accelerator" not in executor["container"].get("resources", {})
            assert executor["container"]["image"] == DEFAULT_IMAGES.runtime
    probes = [task for task in _tasks(spec).values()
              if task["componentRef"]["name"].rstrip("-0123456789") == "comp-gpu-request"]
    assert len(probes) == 2
    for task in probes:
        assert task["inputs"]["parameters"]["tolerations"] == {"componentInputParameter": "gpu_tolerations"}
        assert task["inputs"]["parameters"]["node_selector"] == {"componentInputParameter": "gpu_node_selector"}


def test_every_step_gets_credentials_from_the_secret_never_inline(documents):
    spec, platform = documents
    for name, executor in spec["deploymentSpec"]["executors"].items():
        if name.startswith("exec-gpu-request"):
            assert name not in platform  # reads the node list only: no credentials
            continue
        (secret,) = platform[name]["secretAsEnv"]
        # the parameter as seen from the step's DAG (inside a branch it is a pipeline channel)
        assert secret["secretNameParameter"]["componentInputParameter"] in (
            "object_store_secret", "pipelinechannel--object_store_secret")
        assert {m["secretKey"]: m["envVar"] for m in secret["keyToEnv"]} == SECRET_ENV
        assert "env" not in executor["container"]
    assert "AWS_SECRET_ACCESS_KEY:" not in PIPELINE.read_text().replace("secretKey: AWS_SECRET_ACCESS_KEY", "")


def test_no_step_installs_packages_at_run_time(documents):
    spec, _ = documents
    for executor in spec["deploymentSpec"]["executors"].values():
        command = " ".join(executor["container"]["command"])
        assert "pip install" not in command
        assert "import batchrl" not in command.split("def ", 1)[0]  # engine imports stay inside functions


def test_requests_retries_and_caching(documents):
    spec, _ = documents
    for step, resources in RESOURCES.items():
        for executor in _executors(spec, step.replace("_", "-")).values():
            assert executor["container"]["resources"]["resourceCpuRequest"] == resources.cpu
            assert executor["container"]["resources"]["resourceMemoryRequest"] == resources.memory
    tasks = _tasks(spec)
    steps = {key: task for key, task in tasks.items() if task["componentRef"]["name"].startswith("comp-")
             and "executorLabel" in spec["components"][task["componentRef"]["name"]]}
    # generate + 2 x (timeline, normalize, normalize_actions, prepare, gpu_request, train, evaluate, publish)
    assert len(steps) == 17
    for key, task in steps.items():
        assert task["retryPolicy"]["maxRetryCount"] == RETRY.attempts, key
        assert task["retryPolicy"]["backoffFactor"] == RETRY.factor, key
    cached = {key.split("/")[1] for key, task in steps.items() if task["cachingOptions"].get("enableCache")}
    uncached = {key.split("/")[1] for key, task in steps.items() if not task["cachingOptions"].get("enableCache")}
    # the timeline of generated data is cached; the one reading whatever input_uri holds now is not
    assert cached == {"generate", "timeline", "normalize", "normalize-actions", "prepare", "train", "evaluate"}
    assert uncached == {"timeline-2", "gpu-request", "publish"}


def test_branches_and_the_publish_gate(documents):
    spec, _ = documents
    conditions = {task.get("triggerPolicy", {}).get("condition") for task in _tasks(spec).values()} - {None}
    assert "inputs.parameter_values['pipelinechannel--input_uri'] == ''" in conditions
    assert "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true" in conditions


@pytest.mark.parametrize("name", ["generate", "timeline", "normalize", "normalize_actions", "prepare", "train",
                                  "evaluate"])
def test_checked_in_components_load(name):
    component = components.load_component_from_file(
        str(PIPELINE.parents[1] / "components" / name / "component.yaml"))
    assert component.name == name.replace("_", "-")
    outputs = component.component_spec.outputs or {}
    assert outputs, f"{name} has no outputs"
    assert all(o.type.startswith("system.") or o.type in ("Float", "Boolean") for o in outputs.values())


def test_defaults_come_from_the_shipped_config(documents):
    """The pipeline a user starts from the KFP UI with defaults trains what `make run` trains."""
    from batchrl.config import load_config, parse_config

    spec, _ = documents
    shipped = PIPELINE.parents[1] / "configs" / DEFAULT_CONFIG
    config = load_config(shipped)
    defaults = {name: p.get("defaultValue") for name, p in spec["root"]["inputDefinitions"]["parameters"].items()}
    # numbers come back as floats from the IR's protobuf Struct: compare values, and the parsed config
    assert defaults["workflow_config"] == config.model_dump(mode="json", exclude_unset=True)
    assert parse_config(defaults["workflow_config"]) == config
    trainer = config.model.value.trainer_param
    assert defaults["env"] == config.env_name
    assert defaults["transitions"] == config.num_train_transitions
    assert defaults["data_seed"] == defaults["train_seed"] == config.seed
    assert defaults["actions"] == [str(a) for a in trainer.actions]
    assert defaults["table_sample"] == config.input_table_spec.table_sample
    assert defaults["eval_table_sample"] == config.input_table_spec.eval_table_sample
    assert defaults["num_samples"] == config.model.value.preprocessing_options.num_samples
    assert defaults["num_epochs"] == config.num_epochs
    assert defaults["num_eval_episodes"] == config.num_eval_episodes
    assert defaults["passing_score_bar"] == config.passing_score_bar


def test_the_shipped_configs_are_package_data():
    """The images install the package, not the repository: the configs travel as package data."""
    from batchrl.kfp.pipeline import shipped_config

    repo_configs = sorted((PIPELINE.parents[1] / "configs").rglob("*.yaml"))
    assert repo_configs
    for path in repo_configs:
        relative = path.relative_to(PIPELINE.parents[1] / "configs")
        assert shipped_config(str(relative)).read_bytes() == path.read_bytes(), relative
    text = (PIPELINE.parents[1] / "pyproject.toml").read_text()
    assert '"configs/*.yaml", "configs/*/*.yaml"' in text
    depth = {len(p.relative_to(PIPELINE.parents[1] / "configs").parts) for p in repo_configs}
    assert depth <= {1, 2}, "package-data globs cover configs/*.yaml and configs/*/*.yaml only"


def test_no_pipeline_root_is_compiled_in_by_default(documents):
    spec, _ = documents
    assert "defaultPipelineRoot" not in spec


def test_the_spark_image_default_is_the_compiled_registrys(documents):
    from batchrl.kube.sparkapp import DEFAULT_IMAGE

    spec, _ = documents
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["spark_kubernetes"]["defaultValue"] == {"image": DEFAULT_IMAGES.spark}
    assert DEFAULT_IMAGES.spark == DEFAULT_IMAGE, "the SparkApplication's own default names the same image"


def test_a_default_config_must_set_what_the_pipeline_mirrors():
    from batchrl.errors import BatchRLError
    from batchrl.kfp.pipeline import config_defaults, default_workflow_config

    config = default_workflow_config()
    del config["num_eval_episodes"]
    config["input_table_spec"].pop("table_sample")
    with pytest.raises(BatchRLError, match="does not set input_table_spec.table_sample, num_eval_episodes"):
        config_defaults(config)
