"""The GPU request of the training step and its CPU fallback (batchrl.kfp.accelerators)."""

from __future__ import annotations

import pytest

from batchrl.errors import BatchRLError
from batchrl.kfp.accelerators import accelerators_to_request, largest_allocatable, parse_quantity

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


def test_auto_without_a_cluster_trains_on_cpu():
    count, reason = accelerators_to_request("auto", 1, GPU, lambda: None)
    assert count == 0
    assert "no readable Kubernetes node list" in reason


def test_outside_a_cluster_the_real_lookup_finds_no_api(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert accelerators_to_request("auto", 1, GPU)[0] == 0


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
