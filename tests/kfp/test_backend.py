"""The minimum KFP backend version, derived from the features the compiled pipeline uses.

Versions read from kubeflow/pipelines (tags 2.4.1, 2.5.0, 2.14.4, 2.15.0): ``SecretNameParameter``,
``TolerationJson`` and ``NodeSelectorJson`` appear in ``backend/src/v2/driver/driver.go`` first at
2.5.0 (none in 2.4.1); ``GetResourceCount`` at 2.4.0; ``secretAsEnv.Optional`` is copied onto the
pod's ``SecretKeySelector`` first in 2.15.0 (``backend/src/v2/driver/k8s.go``; 2.14.4 ignores it).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import batchrl.kfp
from batchrl.kfp.backend import (
    FEATURES,
    FULL_KFP_BACKEND,
    MIN_KFP_BACKEND,
    backend_problems,
    ir_features,
    required_backend,
    version_tuple,
)

ROOT = Path(__file__).resolve().parents[2]


def _documents() -> list[dict]:
    return list(yaml.safe_load_all((ROOT / "pipelines" / "batch_rl.yaml").read_text()))


def test_the_minimum_follows_from_the_compiled_pipeline():
    documents = _documents()
    assert ir_features(documents) == set(FEATURES), "every known feature is used (and no unknown one)"
    assert required_backend(documents) == MIN_KFP_BACKEND == batchrl.kfp.MIN_KFP_BACKEND == "2.5.0"
    assert required_backend(documents, required_only=False) == FULL_KFP_BACKEND == "2.15.0"


def test_a_pipeline_without_the_features_needs_less():
    plain = [{"deploymentSpec": {"executors": {"exec-a": {"container": {"image": "x"}}}}}]
    assert ir_features(plain) == set()
    assert version_tuple(required_backend(plain)) < version_tuple(MIN_KFP_BACKEND)
    secret = [plain[0], {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {"exec-a": {
        "secretAsEnv": [{"secretName": "s", "optional": True}]}}}}}}]
    assert ir_features(secret) == {"secretAsEnv.optional"}


def test_older_backends_are_told_what_breaks():
    assert backend_problems("2.15.0") == [] and backend_problems("v2.16.1") == []
    degraded = backend_problems("2.14.4")
    assert len(degraded) == 1 and "optional" in degraded[0] and "must exist" in degraded[0]
    broken = backend_problems("2.4.1")
    assert any("tolerationJson needs KFP >= 2.5.0" in p for p in broken)


def test_the_deployment_guide_states_the_versions():
    text = (ROOT / "docs" / "deploy.md").read_text()
    assert re.search(rf"Kubeflow Pipelines \*\*{re.escape(MIN_KFP_BACKEND)}\*\*", text)
    assert FULL_KFP_BACKEND in text and "batchrl.kfp.MIN_KFP_BACKEND" in text
