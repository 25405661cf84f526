"""The Kubeflow Pipelines backend version the compiled pipeline needs, derived from the IR features it uses.

Each :class:`Feature` is a field of the compiled IR (pipeline spec or Kubernetes platform spec) with
the first KFP backend release whose driver/compiler understands it, read from kubeflow/pipelines:

- ``secretAsEnv[].secretNameParameter``, ``tolerations[].tolerationJson``,
  ``nodeSelector.nodeSelectorJson``: first in 2.5.0 (``backend/src/v2/driver/driver.go``; absent from
  2.4.1). Older drivers parse the executor config with ``jsonpb.UnmarshalString``
  (``backend/src/v2/cmd/driver/main.go``), which rejects unknown fields: the step fails.
- ``resources.accelerator.resourceCount`` (a runtime accelerator count): first in 2.4.0
  (``driver.go``, ``GetResourceCount``).
- ``retryPolicy`` with backoff: compiled into Argo retry strategies from 2.5.0
  (``backend/src/v2/compiler/argocompiler/container.go``); older backends do not retry.
- ``secretAsEnv[].optional``: honoured from 2.15.0 (``backend/src/v2/driver/k8s.go``, "Set Optional
  field when explicitly provided"); older drivers drop it, so the secret must exist.

:data:`MIN_KFP_BACKEND` is what a run needs at all (required features); :data:`FULL_KFP_BACKEND`
is what every feature needs (below it a run works with the stated degradation). ``batchrl doctor``
compares the cluster's KFP version with both; ``tests/kfp/test_backend.py`` derives them from the
checked-in pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Feature:
    """An IR field, the first backend release that honours it, and what an older backend does."""

    name: str
    since: str
    required: bool
    older: str


FEATURES: dict[str, Feature] = {f.name: f for f in (
    Feature("secretAsEnv.secretNameParameter", "2.5.0", True, "the driver rejects the step's executor config"),
    Feature("tolerations.tolerationJson", "2.5.0", True, "the driver rejects the step's executor config"),
    Feature("nodeSelector.nodeSelectorJson", "2.5.0", True, "the driver rejects the step's executor config"),
    Feature("accelerator.resourceCount", "2.4.0", True, "no runtime accelerator count: training gets no GPU"),
    Feature("retryPolicy", "2.5.0", False, "failed steps are not retried"),
    Feature("secretAsEnv.optional", "2.15.0", False,
            "the object-store secret must exist: a step pod whose secret is missing does not start"),
)}


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.15.0"`` -> (2, 15, 0); a leading ``v`` and a ``-suffix`` are ignored."""
    core = version.strip().lstrip("v").split("-", 1)[0].split("+", 1)[0]
    return tuple(int(part) for part in core.split("."))


def _latest(versions: Iterable[str]) -> str:
    return max(versions, key=version_tuple, default="2.0.0")


#: The oldest KFP backend the compiled pipeline runs on.
MIN_KFP_BACKEND = _latest(f.since for f in FEATURES.values() if f.required)
#: The oldest KFP backend that honours every feature the pipeline uses.
FULL_KFP_BACKEND = _latest(f.since for f in FEATURES.values())


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def ir_features(documents: list[dict[str, Any]]) -> set[str]:
    """The :data:`FEATURES` that the compiled pipeline (its YAML documents: pipeline spec, then the
    optional platform spec) uses."""
    found: set[str] = set()
    for node in _walk(documents):
        for secret in node.get("secretAsEnv") or []:
            if "secretNameParameter" in secret:
                found.add("secretAsEnv.secretNameParameter")
            if "optional" in secret:
                found.add("secretAsEnv.optional")
        if any("tolerationJson" in t for t in node.get("tolerations") or [] if isinstance(t, dict)):
            found.add("tolerations.tolerationJson")
        if isinstance(node.get("nodeSelector"), dict) and "nodeSelectorJson" in node["nodeSelector"]:
            found.add("nodeSelector.nodeSelectorJson")
        if isinstance(node.get("accelerator"), dict) and "resourceCount" in node["accelerator"]:
            found.add("accelerator.resourceCount")
        if "retryPolicy" in node:
            found.add("retryPolicy")
    return found


def required_backend(documents: list[dict[str, Any]], required_only: bool = True) -> str:
    """The oldest backend for the pipeline's features (only those a run needs, or all of them)."""
    return _latest(FEATURES[name].since for name in ir_features(documents)
                   if FEATURES[name].required or not required_only)


def backend_problems(version: str) -> list[str]:
    """What goes wrong with the pipeline on KFP backend ``version`` (empty: nothing)."""
    return [f"{f.name} needs KFP >= {f.since}: {f.older}" for f in FEATURES.values()
            if version_tuple(version) < version_tuple(f.since)]
