"""Declarative schedules: the cron check, the manifest model, the reconcile plan, reading ConfigMaps."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from batchrl.errors import BatchRLError
from batchrl.kube.schedules import (
    MARKER,
    ExistingRun,
    ScheduleSpec,
    parse_schedule,
    plan,
    read_schedule_manifests,
    schedules_from_files,
    validate_cron,
)
from tests.fakes.kube_api import FakeKubernetes

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cron", ["0 0 2 * * *", "*/30 * * * * *", "0 0 9-17 * * MON-FRI", "0 15 2 1,15 * ?",
                                  "0 0 0 * JAN,JUL SUN", "@daily", "@every 1h30m"])
def test_valid_kfp_crons(cron):
    assert validate_cron(cron) == cron


@pytest.mark.parametrize("cron, message", [
    ("0 2 * * *", "5-field crontab"), ("0 0 24 * * *", "hour field"), ("60 * * * * *", "second field"),
    ("0 0 0 0 * *", "day-of-month"), ("0 0 0 * 13 *", "month"), ("0 0 0 * * 7", "day-of-week"),
    ("0 */0 * * * *", "bad step"), ("0 1-2-3 * * * *", "minute"), ("@sometimes", "1 fields")])
def test_invalid_crons_say_what_is_wrong(cron, message):
    with pytest.raises(ValueError, match=message):
        validate_cron(cron)


def _spec(name="nightly", **kw):
    return ScheduleSpec(**{"name": name, "cron": "0 0 2 * * *", "pipeline_version": "v1", **kw})


def _run(rid, spec, enabled=True):
    return ExistingRun(rid, spec.name, spec.managed_description(), enabled)


def test_digest_ignores_enabled_only():
    assert _spec().digest() == _spec(enabled=False).digest()
    assert _spec().digest() != _spec(cron="0 0 3 * * *").digest()
    assert _spec().digest() != _spec(parameters={"seed": 2}).digest()


def test_plan_creates_keeps_replaces_toggles_and_deletes():
    keep, change, toggle = _spec("keep"), _spec("change"), _spec("toggle")
    existing = [
        _run("1", keep), _run("2", change), _run("3", toggle, enabled=False),
        ExistingRun("4", "gone", f"[{MARKER} spec=abcdefabcdef]", True),
        ExistingRun("5", "hand-made", "created in the UI", True),
        _run("6", keep),  # a duplicate of the same spec
    ]
    desired = (keep, _spec("change", cron="0 0 5 * * *"), toggle, _spec("new"))
    actions = [(a.kind, a.name, a.run_id) for a in plan(desired, existing)]
    assert ("keep", "keep", "1") in actions and ("delete", "keep", "6") in actions
    assert actions.index(("delete", "change", "2")) < actions.index(("replace", "change", None))
    assert ("enable", "toggle", "3") in actions
    assert ("create", "new", None) in actions
    assert ("delete", "gone", "4") in actions
    assert not any(rid == "5" for _, _, rid in actions), "unmanaged runs are never touched"


def test_plan_protects_schedules_whose_manifest_failed():
    gone = ExistingRun("4", "broken", f"[{MARKER} spec=abcdefabcdef]", True)
    assert [a.kind for a in plan((), [gone], protected=frozenset({"broken"}))] == ["keep"]


def test_parse_errors_name_the_manifest_and_key():
    with pytest.raises(BatchRLError) as caught:
        parse_schedule("x", "cron: '0 0 2 * * *'\npipeline_version: v1\nmax_concurency: 2\n", "ConfigMap kf/x")
    assert "max_concurency" in caught.value.message and "ConfigMap kf/x" in caught.value.message
    with pytest.raises(BatchRLError, match="not valid YAML"):
        parse_schedule("x", "cron: [", "here")


def test_the_example_manifest_parses_and_is_a_valid_configmap():
    import kubernetes_validate

    path = ROOT / "manifests" / "schedules" / "configmap" / "nightly.yaml"
    manifests = schedules_from_files([str(path)])
    assert manifests.errors == ()
    [spec] = manifests.specs
    assert spec.name == "batchrl-nightly" and spec.cron == "0 0 2 * * *" and spec.max_concurrency == 1
    kubernetes_validate.validate(yaml.safe_load(path.read_text()), "1.30.0", strict=True)
    pipeline = ROOT / "pipelines" / "batch_rl.yaml"
    if pipeline.exists():
        from batchrl.kfp.local_run import check_parameters, load_pipeline

        check_parameters(load_pipeline(pipeline), spec.parameters, where=str(path))


def test_read_schedule_manifests_from_the_cluster():
    kube = FakeKubernetes().start()
    try:
        def configmap(name, ns, labelled, text):
            labels = {"batchrl.io/schedule": "true"} if labelled else {}
            return {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": ns, "labels": labels},
                    "data": {"schedule.yaml": text}}

        good = "cron: '0 0 2 * * *'\npipeline_version: v1\n"
        kube.configmaps = [configmap("a", "kubeflow", True, good), configmap("b", "kubeflow", True, "cron: 5\n"),
                           configmap("c", "kubeflow", False, good), configmap("d", "other", True, good)]
        manifests = read_schedule_manifests(kube.api_client(), "kubeflow")
        assert [s.name for s in manifests.specs] == ["a"]
        assert [name for name, _ in manifests.errors] == ["b"]
        assert any("labelSelector=batchrl.io%2Fschedule%3Dtrue" in p for p in kube.calls("GET"))
    finally:
        kube.stop()
