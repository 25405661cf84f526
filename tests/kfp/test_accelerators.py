"""The GPU request of the training step and its CPU fallback (batchrl.kfp.accelerators)."""

from __future__ import annotations

import pytest

from batchrl.errors import BatchRLError
from batchrl.kfp import accelerators
from batchrl.kfp.accelerators import (
    NodesUnreadable,
    accelerators_to_request,
    largest_allocatable,
    parse_quantity,
    plan,
)

GPU = "nvidia.com/gpu"


def nodes(*allocatable: dict[str, str]):
    return lambda: list(allocatable)


def test_quantities():
    assert parse_quantity("2") == 2
    assert parse_quantity(None) == 0
    assert parse_quantity("") == 0
    assert largest_allocatable([{"cpu": "4"}, {GPU: "2"}, {GPU: "1"}], GPU) == 2
    assert largest_allocatable([], GPU) == 0


def test_auto_requests_gpus_when_a_node_has_them():
    count, reason = accelerators_to_request("auto", 1, GPU, nodes({"cpu": "8"}, {"cpu": "8", GPU: "4"}))
    assert count == 1
    assert "can allocate 4" in reason


def test_auto_falls_back_to_cpu_without_gpu_nodes():
    count, reason = accelerators_to_request("auto", 1, GPU, nodes({"cpu": "8"}, {"cpu": "16", GPU: "0"}))
    assert count == 0
    assert "training on CPU" in reason


def test_auto_needs_the_whole_request_on_one_node():
    # two nodes with one GPU each cannot host a pod asking for two
    assert accelerators_to_request("auto", 2, GPU, nodes({GPU: "1"}, {GPU: "1"}))[0] == 0
    assert accelerators_to_request("auto", 2, GPU, nodes({GPU: "1"}, {GPU: "2"}))[0] == 2


def test_auto_without_a_node_list_trains_on_cpu_and_says_why(caplog):
    def unreadable():
        raise NodesUnreadable("listing nodes failed (HTTP 500 boom)")

    with caplog.at_level("WARNING", logger="batchrl.kfp.accelerators"):
        count, reason = accelerators_to_request("auto", 1, GPU, unreadable)
    assert count == 0
    assert "cannot read the node list: listing nodes failed (HTTP 500 boom); training on CPU" in reason
    assert reason in caplog.text


def test_outside_a_cluster_the_real_lookup_finds_no_api(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    count, reason = accelerators_to_request("auto", 1, GPU)
    assert count == 0 and "no in-cluster Kubernetes API" in reason


def test_a_forbidden_node_list_names_the_missing_binding(monkeypatch):
    """In a profile namespace (multi-user Kubeflow) default-editor may not list nodes: a 403."""
    from kubernetes import client, config

    monkeypatch.setattr(config, "load_incluster_config", lambda: None)

    def forbidden(self, **kwargs):
        raise client.ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(client.CoreV1Api, "list_node", forbidden)
    with pytest.raises(NodesUnreadable, match="HTTP 403") as raised:
        accelerators.list_node_allocatable()
    assert "batchrl-node-reader" in str(raised.value) and "default-editor" in str(raised.value)
    count, reason = accelerators_to_request("auto", 1, GPU)
    assert count == 0 and "HTTP 403" in reason


def test_placement_comes_only_with_a_gpu_request():
    toleration = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
    gpu = plan("gpu", 2, GPU, [toleration], {"pool": "a100"})
    assert (gpu.limit, gpu.tolerations, gpu.node_selector) == ("2", [toleration], {"pool": "a100"})
    single = plan("gpu", 1, GPU, toleration, {})
    assert single.tolerations == [toleration]
    cpu = plan("auto", 1, GPU, [toleration], {"pool": "a100"}, nodes({"cpu": "8"}))
    assert (cpu.limit, cpu.tolerations, cpu.node_selector) == ("0", [], {})
    assert "training on CPU" in cpu.reason


def test_explicit_modes_do_not_ask_the_cluster():
    def fail():
        raise AssertionError("the node list must not be read")

    assert accelerators_to_request("gpu", 1, GPU, fail)[0] == 1
    assert accelerators_to_request("cpu", 1, GPU, fail)[0] == 0
    assert accelerators_to_request("auto", 0, GPU, fail)[0] == 0


def test_bad_mode_and_count_are_user_errors():
    with pytest.raises(BatchRLError, match="unknown gpu mode 'always'"):
        accelerators_to_request("always", 1, GPU)
    with pytest.raises(BatchRLError, match=">= 0"):
        accelerators_to_request("gpu", -1, GPU)


def test_the_trainer_image_shows_no_gpu_to_a_pod_that_reserved_none():
    """The CUDA base image sets NVIDIA_VISIBLE_DEVICES=all, which the NVIDIA container runtime honours
    for any container on a GPU node; the device plugin sets the variable (overriding the image's) only
    for containers it allocated devices to. A CPU-fallback training pod (limit "0") must see none."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "images" / "trainer" / "Dockerfile").read_text()
    final_stage = text.split("\nFROM ")[-1]
    assert re.search(r"^ENV NVIDIA_VISIBLE_DEVICES=void\b", final_stage, flags=re.M)
