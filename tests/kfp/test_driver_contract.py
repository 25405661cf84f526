"""The KFP backend driver's rules for the training pod, reproduced here and run on our compiled IR.

We cannot run the KFP backend, so this file encodes what its driver does with the parts of the IR that
place the training pod, and feeds it the real output of our ``gpu_request`` component (executed by the
kfp SDK's own ``Executor``, which writes the values the launcher publishes). Upstream sources
(kubeflow/pipelines; read at tag 2.5.0 and at master 7b70c7b95f6832772efd6fd0029a4024491a0f44):

- ``resolvePodSpecInputRuntimeParameter``: 2.5.0 ``backend/src/v2/driver/util.go`` (lines 29-82),
  master ``backend/src/v2/driver/resolve.go`` (lines 807-831). A value matching
  ``\\$.inputs.parameters\\['(.+?)'\\]`` resolves to ``executorInput.Inputs.ParameterValues[name]
  .GetStringValue()``, which is "" for a number, bool, list or struct; anything else is a constant.
- the accelerator limit: 2.5.0 ``backend/src/v2/driver/driver.go`` (lines 557-589), master
  ``driver.go`` (lines 407-438). The limit ``Limits[type] = ParseQuantity(count)`` is set only when
  both the resolved type and count are non-empty; an empty count drops it without an error.
- tolerations and node selector from JSON parameters: 2.5.0 ``driver.go`` (lines 785-843) and
  ``util.go`` ``resolveK8sJsonParameter``: a ``tolerationJson`` that resolves to a list appends every
  element (an empty list: none), a struct one toleration, anything else is an error; a
  ``nodeSelectorJson`` struct becomes the pod's ``map[string]string`` node selector.
- the executor output: kfp SDK ``kfp/dsl/executor.py`` ``write_output_parameter_value`` stores the
  returned Python value as is in ``executor_output.json`` (an ``int`` becomes a JSON number).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format, struct_pb2
from kfp.dsl.executor import Executor

from batchrl.kfp import accelerators, components

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "batch_rl.yaml"
#: ``inputPipelineChannelPattern`` of the driver.
CHANNEL = re.compile(r"\$.inputs.parameters\['(.+?)'\]")
#: Kubernetes quantities the limit may take (``k8s.io/apimachinery`` ParseQuantity, whole numbers and
#: SI / binary suffixes; enough for accelerator counts).
QUANTITY = re.compile(r"^[+]?[0-9]+(\.[0-9]+)?([kMGTPE]i?|m)?$")
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def get_string_value(value: struct_pb2.Value) -> str:
    """protobuf ``Value.GetStringValue()``: the string, or "" for any other kind."""
    return value.string_value if value.WhichOneof("kind") == "string_value" else ""


def resolve_pod_spec_parameter(parameter: str, parameter_values: dict[str, struct_pb2.Value]) -> str:
    """``resolvePodSpecInputRuntimeParameter``."""
    match = CHANNEL.search(parameter)
    if match is None:
        return parameter
    if match.group(1) not in parameter_values:
        raise ValueError("executorInput did not contain container Image input parameter")
    return get_string_value(parameter_values[match.group(1)])


def accelerator_limits(container: dict, parameter_values: dict[str, struct_pb2.Value]) -> dict[str, str]:
    """The ``resources.limits`` the driver puts on the pod for ``container``'s accelerator."""
    accelerator = container.get("resources", {}).get("accelerator")
    if accelerator is None:
        return {}
    kind = (resolve_pod_spec_parameter(accelerator["resourceType"], parameter_values)
            if accelerator.get("resourceType") else accelerator.get("type", ""))
    if accelerator.get("resourceCount"):
        count = resolve_pod_spec_parameter(accelerator["resourceCount"], parameter_values)
    else:
        count = str(accelerator["count"]) if int(accelerator.get("count", 0)) > 0 else ""
    if not (kind and count):
        return {}
    if not QUANTITY.match(count):
        raise ValueError(f"failed to init podSpecPatch: quantities must match the regular expression ({count})")
    return {kind: count}


def tolerations_from_json(value: struct_pb2.Value) -> list[dict]:
    """The tolerations one ``tolerationJson`` adds."""
    data = json_format.MessageToDict(value)
    if value.WhichOneof("kind") == "struct_value":
        return [data]
    if value.WhichOneof("kind") == "list_value":
        return list(data)
    raise ValueError("encountered unexpected toleration proto value, must be either struct or list type")


def node_selector_from_json(value: struct_pb2.Value) -> dict[str, str]:
    data = json_format.MessageToDict(value)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError("failed to resolve node selector: not a map[string]string")
    return data


def run_gpu_request(tmp_path: Path, func, **inputs) -> dict[str, struct_pb2.Value]:
    """Execute ``func`` (the gpu_request component function) like the step's container does and return
    its output parameters as the values the next driver reads."""
    output_file = tmp_path / "executor_output.json"
    names = ("limit", "tolerations", "node_selector", "reason")
    executor_input = {"inputs": {"parameterValues": inputs},
                      "outputs": {"parameters": {n: {"outputFile": str(tmp_path / n)} for n in names},
                                  "outputFile": str(output_file)}}
    Executor(executor_input, func).execute()
    values = json.loads(output_file.read_text())["parameterValues"]
    return {name: json_format.ParseDict(value, struct_pb2.Value()) for name, value in values.items()}


@pytest.fixture(scope="module")
def pipeline() -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(PIPELINE.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _train_wiring(spec: dict, platform: dict) -> list[tuple[dict, dict, dict]]:
    """(container, task inputs, platform config) of every training executor, with its task in the DAG."""
    found = []
    for component in spec["components"].values():
        for task in component.get("dag", {}).get("tasks", {}).values():
            executor = spec["components"][task["componentRef"]["name"]].get("executorLabel", "")
            if executor.rstrip("-0123456789") == "exec-train":
                container = spec["deploymentSpec"]["executors"][executor]["container"]
                found.append((container, task["inputs"]["parameters"], platform[executor]))
    assert len(found) == 2, "one training step per data branch"
    return found


def _producer_output(task_inputs: dict, channel: str) -> tuple[str, str]:
    source = task_inputs[channel]["taskOutputParameter"]
    return source["producerTask"], source["outputParameterKey"]


@pytest.mark.parametrize("mode, expected_limit, placed", [("gpu", "1", True), ("cpu", "0", False)])
def test_the_driver_sets_the_gpu_limit_the_probe_returns(pipeline, tmp_path, mode, expected_limit, placed):
    spec, platform = pipeline
    outputs = run_gpu_request(tmp_path, components.gpu_request, mode=mode, gpus=1, accelerator_type="nvidia.com/gpu",
                              tolerations=GPU_TOLERATIONS, node_selector={"pool": "gpu"})
    for container, task_inputs, config in _train_wiring(spec, platform):
        count_channel = CHANNEL.search(container["resources"]["accelerator"]["resourceCount"]).group(1)
        producer, key = _producer_output(task_inputs, count_channel)
        assert producer == "gpu-request"
        type_channel = CHANNEL.search(container["resources"]["accelerator"]["resourceType"]).group(1)
        parameter_values = {count_channel: outputs[key],
                            type_channel: struct_pb2.Value(string_value="nvidia.com/gpu")}
        # "0" is a limit too: a zero request, no device allocated, schedulable anywhere
        assert accelerator_limits(container, parameter_values) == {"nvidia.com/gpu": expected_limit}

        (toleration,) = config["tolerations"]
        assert toleration["tolerationJson"]["taskOutputParameter"]["producerTask"] == "gpu-request"
        tolerations = tolerations_from_json(outputs[toleration["tolerationJson"]["taskOutputParameter"]
                                                    ["outputParameterKey"]])
        selector_source = config["nodeSelector"]["nodeSelectorJson"]["taskOutputParameter"]
        assert selector_source["producerTask"] == "gpu-request"
        node_selector = node_selector_from_json(outputs[selector_source["outputParameterKey"]])
        # a CPU-only training pod is not steered onto (or allowed on tainted) GPU nodes
        assert tolerations == (GPU_TOLERATIONS if placed else [])
        assert node_selector == ({"pool": "gpu"} if placed else {})


def test_an_integer_count_is_dropped_by_the_driver(pipeline, tmp_path):
    """The defect this pins: a probe returning ``int`` gives the driver a number, read as "" -> no limit."""
    spec, platform = pipeline

    def int_probe(mode="gpu", gpus=1):
        return gpus

    int_probe.__annotations__ = {"mode": str, "gpus": int, "return": int}  # the old signature's types

    output_file = tmp_path / "out.json"
    Executor({"inputs": {"parameterValues": {"mode": "gpu", "gpus": 1}},
              "outputs": {"parameters": {"Output": {"outputFile": str(tmp_path / "o")}},
                          "outputFile": str(output_file)}}, int_probe).execute()
    value = json_format.ParseDict(json.loads(output_file.read_text())["parameterValues"]["Output"], struct_pb2.Value())
    container, task_inputs, _ = _train_wiring(spec, platform)[0]
    count_channel = CHANNEL.search(container["resources"]["accelerator"]["resourceCount"]).group(1)
    type_channel = CHANNEL.search(container["resources"]["accelerator"]["resourceType"]).group(1)
    assert accelerator_limits(container, {count_channel: value,
                                          type_channel: struct_pb2.Value(string_value="nvidia.com/gpu")}) == {}


def test_the_probe_output_is_declared_a_string(pipeline):
    spec, _ = pipeline
    for name, component in spec["components"].items():
        if name.rstrip("-0123456789") == "comp-gpu-request":
            outputs = component["outputDefinitions"]["parameters"]
            assert outputs["limit"]["parameterType"] == "STRING"
            assert outputs["tolerations"]["parameterType"] == "LIST"
            assert outputs["node_selector"]["parameterType"] == "STRUCT"


def test_a_forbidden_node_list_is_reported_in_the_output(tmp_path, monkeypatch, caplog):
    """gpu_mode=auto where the service account may not list nodes (multi-user Kubeflow without the
    node-reader binding): CPU, with the 403 and its fix in the step's ``reason`` output and log."""
    def forbidden():
        raise accelerators.NodesUnreadable("the step's service account may not list nodes (HTTP 403): bind ...")

    monkeypatch.setattr(accelerators, "list_node_allocatable", forbidden)
    with caplog.at_level("WARNING", logger="batchrl.kfp.accelerators"):
        outputs = run_gpu_request(tmp_path, components.gpu_request, mode="auto", gpus=1,
                                  accelerator_type="nvidia.com/gpu", tolerations=GPU_TOLERATIONS, node_selector={})
    assert get_string_value(outputs["limit"]) == "0"
    assert "HTTP 403" in get_string_value(outputs["reason"])
    assert any("HTTP 403" in record.getMessage() for record in caplog.records)
