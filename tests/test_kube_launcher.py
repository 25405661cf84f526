"""The SparkApplication launcher against a fake Kubernetes API on 127.0.0.1, through the real client."""

from __future__ import annotations

import pytest
from fakes.kube_api import FakeKubernetes

from batchrl.errors import BatchRLError
from batchrl.kube.launcher import SparkApplicationLauncher, redact, run_stage_on_kubernetes
from batchrl.kube.sparkapp import SparkKubernetesOptions, build_spark_application, stage_payload

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
def test_failure_reports_the_driver_log_tail_and_cleans_up(kube, clock, final, monkeypatch, caplog):
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
    assert f"kubectl -n kubeflow logs {name}-driver" in message
    assert any("tailLines=40" in path for path in kube.calls("GET"))
    assert kube.calls("DELETE") == [f"{APPS}/{name}"]


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
