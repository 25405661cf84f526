"""How many accelerators the training step asks for: the GPU request and its CPU fallback.

A pod that requests ``nvidia.com/gpu: 1`` on a cluster without GPU nodes never starts. The pipeline
therefore asks this module first: in ``auto`` mode it counts the accelerators the cluster's nodes can
allocate and requests none when there are none, so training runs on CPU (the trainer picks CUDA when
a device is visible, else CPU). ``gpu`` always requests, ``cpu`` never does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Literal

from batchrl.errors import BatchRLError

log = logging.getLogger(__name__)

AcceleratorMode = Literal["auto", "gpu", "cpu"]
MODES: tuple[str, ...] = ("auto", "gpu", "cpu")


def parse_quantity(value: str | int | None) -> int:
    """An extended-resource quantity as an integer count (``"2"`` -> 2; ``None``/``""`` -> 0)."""
    if value in (None, ""):
        return 0
    try:
        return int(str(value))
    except ValueError:
        return int(float(str(value)))


def largest_allocatable(nodes: Iterable[dict[str, str]], resource: str) -> int:
    """The most ``resource`` any one node can allocate (a pod's request must fit on one node)."""
    return max((parse_quantity(allocatable.get(resource)) for allocatable in nodes), default=0)


def list_node_allocatable() -> list[dict[str, str]] | None:
    """The ``status.allocatable`` map of every node, or ``None`` when no Kubernetes API can be reached.

    Inside a pod the in-cluster service account is used; it needs ``list`` on ``nodes`` (the
    pipeline runner's ClusterRole in ``manifests/``). Outside a cluster (``kfp.local``) there is no
    API and the answer is ``None``.
    """
    try:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:  # pragma: no cover - kubernetes is a dependency
        return None
    try:
        config.load_incluster_config()
    except ConfigException:
        return None
    try:
        nodes = client.CoreV1Api().list_node(_request_timeout=30).items
    except client.ApiException as exc:
        log.warning("cannot list nodes (HTTP %s %s): grant the pipeline's service account 'list' on "
                    "nodes, or pass gpu_mode=gpu or gpu_mode=cpu", exc.status, exc.reason)
        return None
    return [dict(node.status.allocatable or {}) for node in nodes]


def accelerators_to_request(mode: str, requested: int, resource: str = "nvidia.com/gpu",
                            nodes: Callable[[], list[dict[str, str]] | None] = list_node_allocatable,
                            ) -> tuple[int, str]:
    """The accelerator count for the training pod, and why.

    ``auto``: ``requested`` when some node can allocate at least that many ``resource``,
    else 0 (train on CPU); an unreachable or unreadable API also gives 0, so the run never hangs in
    Pending. ``gpu``: always ``requested``. ``cpu``: always 0.
    """
    if mode not in MODES:
        raise BatchRLError(f"unknown gpu mode {mode!r}", where="gpu_mode", fix=f"use one of {', '.join(MODES)}")
    if requested < 0:
        raise BatchRLError(f"accelerator count must be >= 0 (got {requested})", where="gpu_limit",
                           fix="request 0 (CPU) or a positive number of GPUs")
    if mode == "cpu" or requested == 0:
        return 0, "CPU training requested"
    if mode == "gpu":
        return requested, f"{requested} x {resource} requested (gpu_mode=gpu)"
    allocatable = nodes()
    if allocatable is None:
        return 0, f"no readable Kubernetes node list: training on CPU (gpu_mode=auto, {resource} unknown)"
    available = largest_allocatable(allocatable, resource)
    if available < requested:
        return 0, (f"no node can allocate {requested} {resource} (at most {available} on one of "
                   f"{len(allocatable)} nodes): training on CPU")
    return requested, f"{requested} x {resource} requested (a node can allocate {available})"
