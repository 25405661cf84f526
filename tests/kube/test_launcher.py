"""The SparkApplication launcher against a fake Kubernetes API on 127.0.0.1, through the real client."""

from __future__ import annotations

import pytest

from batchrl.errors import BatchRLError
from batchrl.kube.launcher import SparkApplicationLauncher, redact, run_stage_on_kubernetes
from batchrl.kube.sparkapp import SparkKubernetesOptions, build_spark_application, stage_payload
from tests.fakes.kube_api import FakeKubernetes

APPS = "/apis/sparkoperator.k8s.io/v1beta2/namespaces/kubeflow/sparkapplications"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def kube():
    server = FakeKubernetes().start()
    yield server
    server.stop()


@pytest.fixture
def clock():
    return FakeClock()


def _app(output="s3://bucket/timeline"):
    payload = stage_payload("timeline", "s3://bucket/logged", output, {"seed": 3})
    return build_spark_application(payload, SparkKubernetesOptions(s3_endpoint="http://minio:9000"))


def _launcher(kube, clock):
    return SparkApplicationLauncher(kube.api_client(), clock=clock, sleep=clock.sleep)


def test_create_watch_until_completed_and_clean_up(kube, clock):
    app = _app()
    name = app["metadata"]["name"]
    summary = _launcher(kube, clock).run(app, timeout_seconds=600, poll_seconds=5)
    assert summary["state"] == "COMPLETED" and summary["adopted"] is False
    assert summary["driver_pod"] == f"{name}-driver"
    assert kube.calls("POST") == [APPS]
    assert kube.bodies[0]["spec"] == app["spec"], "the object is sent as built"
    assert len(kube.calls("GET")) == 3, "polled SUBMITTED, RUNNING, COMPLETED"
    assert clock.sleeps == [5, 5]
    assert kube.calls("DELETE") == [f"{APPS}/{name}"] and not kube.apps


def test_keeps_the_object_without_cleanup(kube, clock):
    app = _app()
    _launcher(kube, clock).run(app, timeout_seconds=600, cleanup=False)
    assert kube.calls("DELETE") == [] and ("kubeflow", app["metadata"]["name"]) in kube.apps


def test_retry_adopts_the_running_application(kube, clock):
    app = _app()
    name = app["metadata"]["name"]
    kube.put(app, "RUNNING")
    kube.scripts[name] = ["RUNNING", "COMPLETED"]
    summary = _launcher(kube, clock).run(app, timeout_seconds=600)
    assert summary["adopted"] is True
    assert len(kube.calls("POST")) == 1, "the 409 create was not repeated"
    assert kube.calls("DELETE") == [f"{APPS}/{name}"]


def test_retry_adopts_an_already_completed_application(kube, clock):
    app = _app()
    kube.put(app, "COMPLETED")
    summary = _launcher(kube, clock).run(app, timeout_seconds=600)
    assert summary["adopted"] is True and summary["state"] == "COMPLETED"
    assert clock.sleeps == []


def test_failed_leftover_from_an_earlier_attempt_is_replaced(kube, clock):
    app = _app()
    name = app["metadata"]["name"]
    kube.put(app, "FAILED")
    summary = _launcher(kube, clock).run(app, timeout_seconds=600)
    assert summary["adopted"] is False and summary["state"] == "COMPLETED"
    assert kube.calls("POST") == [APPS, APPS]
    assert kube.calls("DELETE")[0] == f"{APPS}/{name}"


def test_a_foreign_object_with_the_same_name_is_not_adopted(kube, clock):
    app = _app()
    kube.put(app, "RUNNING")
    kube.apps[("kubeflow", app["metadata"]["name"])]["metadata"]["annotations"] = {}
    with pytest.raises(BatchRLError, match="not created for this stage"):
        _launcher(kube, clock).run(app, timeout_seconds=600)
    assert kube.calls("DELETE") == []


@pytest.mark.parametrize("final", ["FAILED", "SUBMISSION_FAILED"])
def test_failure_reports_the_driver_log_tail_and_keeps_the_application(kube, clock, final, monkeypatch, caplog):
    """A failed application is not deleted: its TTL (timeToLiveSeconds) keeps the driver pod and log for
    ``kubectl logs`` / ``kubectl describe``, and the error says where to look."""
    caplog.set_level("DEBUG")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-xyz")
    app = _app()
    name = app["metadata"]["name"]
    kube.scripts[name] = ["SUBMITTED", "RUNNING", final]
    kube.error_message = "driver container failed with ExitCode: 1"
    kube.logs[f"{name}-driver"] = "\n".join(
        [f"line {i}" for i in range(100)]
        + ["fs.s3a.secret.key=s3cr3t-value-xyz", "password: hunter2",
           "pyspark.errors.AnalysisException: column `reward` not found"])
    with pytest.raises(BatchRLError) as caught:
        _launcher(kube, clock).run(app, timeout_seconds=600)
    message = caught.value.message
    assert final in message and "ExitCode: 1" in message
    assert "column `reward` not found" in message, "the log tail is in the error"
    assert "line 99" in message and "line 10\n" not in message, "only the tail"
    assert "s3cr3t-value-xyz" not in message and "hunter2" not in message
    assert caplog.records and not any("s3cr3t-value-xyz" in r.getMessage() or "hunter2" in r.getMessage()
                                      for r in caplog.records), "no credential in any log line"
    assert f"kubectl logs {name}-driver -n kubeflow" in message
    assert f"kubectl describe sparkapplication {name} -n kubeflow" in message
    assert "kept for 3600s" in message, "the TTL from the spec"
    assert any("tailLines=40" in path for path in kube.calls("GET"))
    assert kube.calls("DELETE") == [] and ("kubeflow", name) in kube.apps


def test_timeout_deletes_the_application(kube, clock):
    app = _app()
    name = app["metadata"]["name"]
    kube.scripts[name] = ["RUNNING"]
    with pytest.raises(BatchRLError, match="timed out") as caught:
        _launcher(kube, clock).run(app, timeout_seconds=60, poll_seconds=10)
    assert "driver log unavailable" in caught.value.message
    assert 6 <= len(clock.sleeps) <= 7
    assert kube.calls("DELETE") == [f"{APPS}/{name}"] and not kube.apps


def test_forbidden_create_says_which_rbac_is_missing(kube, clock):
    kube.deny_create = 403
    with pytest.raises(BatchRLError, match="batchrl-pipeline-runner"):
        _launcher(kube, clock).run(_app(), timeout_seconds=60)


def test_disappearing_application_is_an_error(kube, clock):
    app = _app()
    name = app["metadata"]["name"]
    kube.scripts[name] = ["RUNNING"]
    launcher = _launcher(kube, clock)
    original = clock.sleep

    def delete_midway(seconds):
        kube.apps.clear()
        original(seconds)

    launcher._sleep = delete_midway
    with pytest.raises(BatchRLError, match="disappeared"):
        launcher.run(app, timeout_seconds=600)


def test_run_stage_on_kubernetes_end_to_end(kube, monkeypatch):
    options = SparkKubernetesOptions(poll_seconds=0.01, timeout_seconds=30)
    summary = run_stage_on_kubernetes("normalize", "s3://b/timeline", "s3://b/norm.json", {"num_samples": 5},
                                      options, api_client=kube.api_client())
    assert summary["spark_application"]["state"] == "COMPLETED"
    assert kube.bodies[0]["metadata"]["name"].startswith("batchrl-normalize-")


def test_redact_masks_credentials():
    text = redact("spark.hadoop.fs.s3a.access.key=AKIA123 token: abc Authorization: Bearer xyz ok=1")
    assert "AKIA123" not in text and "abc" not in text and "xyz" not in text and "ok=1" in text


def test_unreachable_api_server_is_a_clear_error(clock):
    from kubernetes import client

    config = client.Configuration()
    config.host = "http://127.0.0.1:9"
    config.retries = 0
    launcher = SparkApplicationLauncher(client.ApiClient(config), clock=clock, sleep=clock.sleep)
    with pytest.raises(BatchRLError, match="Kubernetes API is unreachable"):
        launcher.run(_app(), timeout_seconds=60)


def test_pipeline_entry_validates_the_options_dict(kube):
    from batchrl.kube.launcher import run_stage_for_pipeline

    with pytest.raises(BatchRLError, match="executor_memry"):
        run_stage_for_pipeline("timeline", "s3://b/i", "s3://b/o", {}, {"executor_memry": "4g"})
    from unittest import mock

    with mock.patch("batchrl.kube.launcher.kubernetes_api_client", kube.api_client):
        summary = run_stage_for_pipeline("timeline", "s3://b/i", "s3://b/o", {"seed": 1},
                                         {"poll_seconds": 0.01, "executor_instances": 4})
    assert summary["spark_application"]["state"] == "COMPLETED"
    assert kube.bodies[0]["spec"]["executor"]["instances"] == 4


# ---------------------------------------------------------------- cancel: SIGTERM and the owner pod


def test_sigterm_deletes_the_application_and_exits_non_zero(kube, clock):
    """SIGTERM (what Kubernetes sends a pod's main process to stop it; Argo's emissary forwards it to its
    child, argoproj/argo-workflows cmd/argoexec/commands/emissary.go at 02aaa4e4) deletes the watched
    application and exits 143 (128 + SIGTERM) instead of leaving the SparkApplication running. Before
    the fix the default disposition killed the process (and this test's runner) on the spot."""
    import os
    import signal

    app = _app()
    name = app["metadata"]["name"]
    kube.scripts[name] = ["RUNNING"]
    previous = signal.getsignal(signal.SIGTERM)

    def cancel(seconds):
        os.kill(os.getpid(), signal.SIGTERM)

    launcher = SparkApplicationLauncher(kube.api_client(), clock=clock, sleep=cancel)
    with pytest.raises(SystemExit) as caught:
        launcher.run(app, timeout_seconds=600)
    assert caught.value.code == 143
    assert kube.calls("DELETE") == [f"{APPS}/{name}"] and not kube.apps
    assert signal.getsignal(signal.SIGTERM) is previous, "the handler is only installed while watching"


@pytest.fixture
def in_a_pod(kube, tmp_path, monkeypatch):
    """This process looks like a KFP step's pod in namespace team-a (service-account file, KFP_POD_NAME)."""
    import batchrl.kube.sparkapp as sparkapp

    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("team-a\n")
    monkeypatch.setattr(sparkapp, "SERVICE_ACCOUNT_NAMESPACE_FILE", namespace_file)
    monkeypatch.setenv("KFP_POD_NAME", "train-and-evaluate-x7k2p-system-container-impl-123")
    monkeypatch.setenv("HOSTNAME", "not-the-pod-name")
    return kube.add_pod("team-a", "train-and-evaluate-x7k2p-system-container-impl-123", "5f0c2e4e-uid")


def test_in_a_pod_the_application_goes_to_the_pods_namespace_and_is_owned_by_the_pod(kube, in_a_pod):
    """The namespace comes from the pod's service-account file (a profile namespace, not kubeflow), and
    the pod (uid read from the API) owns the application, so the garbage collector deletes it with the
    pod. The name is KFP_POD_NAME, which every KFP executor gets from the downward API
    (kubeflow/pipelines backend/src/v2/compiler/argocompiler/common.go ``commonEnvs`` at 7b70c7b9), not
    HOSTNAME (cut to 63 characters for long pod names)."""
    options = SparkKubernetesOptions(poll_seconds=0.01, timeout_seconds=30)
    run_stage_on_kubernetes("timeline", "s3://b/i", "s3://b/o", {}, options, api_client=kube.api_client())
    body = kube.bodies[0]
    assert body["metadata"]["namespace"] == "team-a"
    assert kube.calls("POST") == ["/apis/sparkoperator.k8s.io/v1beta2/namespaces/team-a/sparkapplications"]
    assert "/api/v1/namespaces/team-a/pods/train-and-evaluate-x7k2p-system-container-impl-123" in kube.calls("GET")
    assert body["metadata"]["ownerReferences"] == [{
        "apiVersion": "v1", "kind": "Pod", "name": "train-and-evaluate-x7k2p-system-container-impl-123",
        "uid": "5f0c2e4e-uid", "controller": False, "blockOwnerDeletion": False}]


def test_an_explicit_namespace_wins_and_a_foreign_pod_is_no_owner(kube, in_a_pod):
    """Kubernetes: a namespaced owner must be in the dependent's namespace (else the reference counts as
    absent and the collector deletes the dependent at once: kubernetes.io docs, "Owners and Dependents",
    and the OwnerReference API reference), so an application placed elsewhere has none."""
    options = SparkKubernetesOptions(namespace="spark-jobs", poll_seconds=0.01, timeout_seconds=30)
    run_stage_on_kubernetes("timeline", "s3://b/i", "s3://b/o", {}, options, api_client=kube.api_client())
    assert kube.bodies[0]["metadata"]["namespace"] == "spark-jobs"
    assert "ownerReferences" not in kube.bodies[0]["metadata"]


def test_unreadable_pod_runs_without_owner(kube, in_a_pod, caplog):
    kube.pods.clear()
    options = SparkKubernetesOptions(poll_seconds=0.01, timeout_seconds=30)
    summary = run_stage_on_kubernetes("timeline", "s3://b/i", "s3://b/o", {}, options, api_client=kube.api_client())
    assert summary["spark_application"]["state"] == "COMPLETED"
    assert "ownerReferences" not in kube.bodies[0]["metadata"]
    assert any("gets no owner" in r.getMessage() for r in caplog.records)


def test_a_retry_adds_its_pod_to_the_owners_of_the_adopted_application(kube, in_a_pod, clock):
    """An application adopted from an earlier attempt is owned by that attempt's pod; when that pod is
    deleted the collector would delete the application under the retry, so the retry's pod is added
    (the collector deletes a dependent only when all its owners are gone)."""
    from batchrl.kube.launcher import SparkApplicationLauncher

    options = SparkKubernetesOptions()
    payload = stage_payload("timeline", "s3://b/i", "s3://b/o", {})
    earlier = build_spark_application(payload, options, owner=kube.add_pod("team-a", "attempt-1", "uid-old"))
    kube.put(earlier, "RUNNING")
    name = earlier["metadata"]["name"]
    kube.scripts[name] = ["RUNNING", "COMPLETED"]
    app = build_spark_application(payload, options, owner=in_a_pod)
    SparkApplicationLauncher(kube.api_client(), clock=clock, sleep=clock.sleep).run(app, timeout_seconds=600,
                                                                                     cleanup=False)
    patches = [path for method, path in kube.requests if method == "PATCH"]
    assert patches == [f"/apis/sparkoperator.k8s.io/v1beta2/namespaces/team-a/sparkapplications/{name}"]
    owners = kube.apps[("team-a", name)]["metadata"]["ownerReferences"]
    assert [o["uid"] for o in owners] == ["uid-old", "5f0c2e4e-uid"]


def _gc_admission_allows(obj: dict, granted: list) -> tuple[bool, str]:
    """kubernetes/kubernetes ``plugin/pkg/admission/gc/gc_admission.go`` (commit 2876d1ab9b60),
    ``gcPermissionsEnforcement.Admit`` for a create: setting ownerReferences needs ``delete`` on the
    object itself; a reference with ``blockOwnerDeletion: true`` also needs ``update`` on the owner's
    ``finalizers`` subresource (``ownerRefToDeleteAttributeRecords``), and the owner is looked up in the
    dependent's namespace."""
    from batchrl.kube.doctor import Permission

    refs = obj["metadata"].get("ownerReferences") or []
    if not refs:
        return True, ""
    group, _ = obj["apiVersion"].split("/")
    if Permission(group, "sparkapplications", "", "delete") not in granted:
        return False, "cannot set an ownerRef on a resource you can't delete"
    for ref in refs:
        if ref.get("blockOwnerDeletion") and Permission("", "pods", "finalizers", "update") not in granted:
            return False, "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't " \
                          "set finalizers on"
    return True, ""


def test_the_owner_reference_is_admitted_with_the_runner_role():
    """The runner's Role (manifests/base, read as `batchrl doctor` reads it) lets the step create its
    owner-referenced application; a blocking reference would be refused, which is why ours is not."""
    from pathlib import Path

    from batchrl.kube.doctor import required_permissions

    runner = required_permissions(Path(__file__).resolve().parents[2] / "manifests" / "base")["pipeline-runner"]
    pod = {"metadata": {"name": "step", "namespace": "kubeflow", "uid": "u-1"}}
    app = build_spark_application(stage_payload("timeline", "s3://b/i", "s3://b/o", {}), SparkKubernetesOptions(),
                                  owner=pod)
    assert app["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert _gc_admission_allows(app, runner) == (True, "")
    app["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] = True
    allowed, reason = _gc_admission_allows(app, runner)
    assert not allowed and "finalizers" in reason


def test_owner_reference_needs_a_live_uid_in_the_same_namespace():
    from batchrl.kube.sparkapp import owner_reference

    pod = {"metadata": {"name": "step", "namespace": "team-a", "uid": "u-1"}}
    assert owner_reference(pod, "team-a")["uid"] == "u-1"
    assert owner_reference(pod, "kubeflow") is None
    assert owner_reference({"metadata": {"name": "step", "namespace": "team-a"}}, "team-a") is None


def test_ctrl_c_deletes_the_application_and_goes_on(kube, clock):
    app = _app()
    kube.scripts[app["metadata"]["name"]] = ["RUNNING"]

    def interrupt(seconds):
        raise KeyboardInterrupt

    launcher = SparkApplicationLauncher(kube.api_client(), clock=clock, sleep=interrupt)
    with pytest.raises(KeyboardInterrupt):
        launcher.run(app, timeout_seconds=600)
    assert not kube.apps
