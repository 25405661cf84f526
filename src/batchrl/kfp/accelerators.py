"""How many accelerators the training step asks for: the GPU request and its CPU fallback.

A pod that requests ``nvidia.com/gpu: 1`` on a cluster without GPU nodes never starts. The pipeline
therefore asks this module first: in ``auto`` mode it counts the accelerators the cluster's nodes can
allocate and requests none when there are none, so training runs on CPU (the trainer picks CUDA when
a device is visible, else CPU). ``gpu`` always requests, ``cpu`` never does.

:func:`plan` also decides where the training pod may go: the GPU tolerations and node selector only
come with a GPU request. A CPU-only training pod is never steered onto a GPU node, where a CUDA image
would see every GPU of the node without having reserved one (its request being 0, the device plugin
allocates none; ``images/trainer`` sets ``NVIDIA_VISIBLE_DEVICES=void`` for the same reason).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from batchrl.errors import BatchRLError

log = logging.getLogger(__name__)

AcceleratorMode = Literal["auto", "gpu", "cpu"]
MODES: tuple[str, ...] = ("auto", "gpu", "cpu")
#: What a service account needs for ``gpu_mode=auto`` (manifests/base/pipeline-runner-rbac.yaml).
NODE_READER = "ClusterRole batchrl-node-reader (list nodes)"


class NodesUnreadable(Exception):  # noqa: N818 (a reason, not a failure: the caller falls back to CPU)
    """The cluster's node list cannot be read; the message says why and how to fix it."""


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


def list_node_allocatable() -> list[dict[str, str]]:
    """The ``status.allocatable`` map of every node; :class:`NodesUnreadable` when there is no list.

    Inside a pod the in-cluster service account is used; it needs ``list`` on ``nodes`` (the
    ``batchrl-node-reader`` ClusterRole in ``manifests/``, bound to ``pipeline-runner`` and, in
    multi-user Kubeflow, to each profile's ``default-editor``). Outside a cluster (``kfp.local``)
    there is no API.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_incluster_config()
    except ConfigException:
        raise NodesUnreadable("no in-cluster Kubernetes API (not running in a pod)") from None
    try:
        nodes = client.CoreV1Api().list_node(_request_timeout=30).items
    except client.ApiException as exc:
        if exc.status == 403:
            raise NodesUnreadable(
                f"the step's service account may not list nodes (HTTP 403): bind the {NODE_READER} to it "
                "(multi-user Kubeflow: to default-editor of the profile namespace, see docs/deploy.md), "
                "or pass gpu_mode=gpu or gpu_mode=cpu") from None
        raise NodesUnreadable(f"listing nodes failed (HTTP {exc.status} {exc.reason})") from None
    except OSError as exc:  # urllib3's connection errors are OSErrors
        raise NodesUnreadable(f"the Kubernetes API did not answer ({type(exc).__name__})") from None
    return [dict(node.status.allocatable or {}) for node in nodes]


def accelerators_to_request(mode: str, requested: int, resource: str = "nvidia.com/gpu",
                            nodes: Callable[[], list[dict[str, str]]] | None = None) -> tuple[int, str]:
    """The accelerator count for the training pod, and why.

    ``auto``: ``requested`` when some node can allocate at least that many ``resource``,
    else 0 (train on CPU); an unreadable node list (:class:`NodesUnreadable`) also gives 0, with a
    warning naming the cause, so the run never hangs in Pending. ``gpu``: always ``requested``.
    ``cpu``: always 0.
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
    try:
        allocatable = (nodes or list_node_allocatable)()
    except NodesUnreadable as exc:
        reason = f"cannot read the node list: {exc}; training on CPU (gpu_mode=auto, {resource} unknown)"
        log.warning("%s", reason)
        return 0, reason
    available = largest_allocatable(allocatable, resource)
    if available < requested:
        return 0, (f"no node can allocate {requested} {resource} (at most {available} on one of "
                   f"{len(allocatable)} nodes): training on CPU")
    return requested, f"{requested} x {resource} requested (a node can allocate {available})"


@dataclass(frozen=True)
class TrainingPlacement:
    """What the training pod gets: the accelerator limit (a string: see :attr:`limit`), and the
    tolerations and node selector that apply only with a GPU request."""

    count: int
    reason: str
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    node_selector: dict[str, str] = field(default_factory=dict)

    @property
    def limit(self) -> str:
        """The count as the KFP driver reads a runtime accelerator count: a string quantity. "0" sets a
        zero limit (no device allocated, the pod schedules anywhere its tolerations allow)."""
        return str(self.count)


def plan(mode: str, requested: int, resource: str, tolerations: list[dict[str, Any]] | dict[str, Any],
         node_selector: dict[str, str], nodes: Callable[[], list[dict[str, str]]] | None = None,
         ) -> TrainingPlacement:
    """The training pod's accelerator limit and placement: ``tolerations`` (a list, or one toleration)
    and ``node_selector`` when it requests accelerators, none when it trains on CPU."""
    count, reason = accelerators_to_request(mode, requested, resource, nodes)
    if count == 0:
        return TrainingPlacement(0, reason)
    listed = [tolerations] if isinstance(tolerations, dict) else list(tolerations or [])
    return TrainingPlacement(count, reason, listed, dict(node_selector or {}))
