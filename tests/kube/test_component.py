"""The KFP timeline step with ``spark_mode=kubernetes``, run as its component function in a simulated pod
against the fake Kubernetes API and the moto S3 server: the SparkApplication it creates talks to the
pipeline's object store and lives in the step's own namespace, owned by the step's pod.

A pod learns its namespace from the service-account volume Kubernetes mounts at
``/var/run/secrets/kubernetes.io/serviceaccount/namespace`` (the path client-go's in-cluster config
reads too); in a multi-user profile that is the profile namespace, where the runner may create
SparkApplications, while ``kubeflow`` answers 403. Before the fix the object went to ``kubeflow`` with no
``fs.s3a.endpoint`` (AWS S3, with MinIO's keys)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow as pa
import pytest

from tests.fakes.kube_api import FakeKubernetes

APPS = "/apis/sparkoperator.k8s.io/v1beta2/namespaces/{}/sparkapplications"


@pytest.fixture
def kube():
    server = FakeKubernetes().start()
    yield server
    server.stop()


@pytest.fixture
def step_pod(kube, tmp_path, monkeypatch):
    """This process is a KFP step pod in the profile namespace team-a, with a kubeconfig for the fake API."""
    import batchrl.kube.sparkapp as sparkapp

    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("team-a")
    monkeypatch.setattr(sparkapp, "SERVICE_ACCOUNT_NAMESPACE_FILE", namespace_file)
    monkeypatch.setenv("KFP_POD_NAME", "batch-rl-abc12-system-container-impl-42")
    monkeypatch.setenv("KUBECONFIG", kube.write_kubeconfig(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return kube.add_pod("team-a", "batch-rl-abc12-system-container-impl-42", "0d3b-uid")


def _artifact(uri: str) -> SimpleNamespace:
    return SimpleNamespace(uri=uri.replace("s3://", "minio://"), path="/minio/unused", metadata={})


def _commit_timeline(output: str) -> None:
    """What the driver commits when the application completes (the fake operator runs nothing): a table
    whose metadata is the timeline stage's summary."""
    from batchrl import storage
    from batchrl.data.timeline import TimelineResult

    summary = TimelineResult(input="x", output=output, input_rows=2, input_episodes=1, duplicates_dropped=0,
                             output_rows=1, action_kind="discrete", steps=None, add_terminal_state_row=False,
                             outlier_filter=None, outlier_episodes_dropped=0, columns=["mdp_id"],
                             engine="spark (k8s://)", elapsed_s=1.0)
    storage.write_table(pa.table({"mdp_id": ["a"]}), output,
                        metadata={"stage": "timeline", **summary.to_dict(), "options": {}, "schema": "struct<>"})


def test_timeline_step_on_kubernetes_uses_the_pipelines_endpoint_and_the_pods_namespace(
        kube, step_pod, s3_env, s3_server, monkeypatch):
    from batchrl.kfp.components import build_components

    output = f"{s3_env}/timeline"
    _commit_timeline(output)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # from here on only the pipeline's s3_endpoint parameter names it
    table = _artifact(output)
    step = build_components()["timeline"].python_func
    step(timeline_table=table, start_ds="2019-01-01", end_ds="2019-01-02", add_terminal_state_row=False,
         input_uri=f"{s3_env}/logged", spark_mode="kubernetes",
         spark_kubernetes={"poll_seconds": 0.01, "timeout_seconds": 30}, s3_endpoint=s3_server)

    assert kube.calls("POST") == [APPS.format("team-a")], "created in the pod's namespace, not kubeflow"
    app = kube.bodies[0]
    assert app["metadata"]["namespace"] == "team-a"
    conf = app["spec"]["sparkConf"]
    assert conf["spark.hadoop.fs.s3a.endpoint"] == s3_server, "s3a talks to the pipeline's endpoint, not AWS"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    for role in ("driver", "executor"):
        env = {e["name"]: e.get("value") for e in app["spec"][role]["env"]}
        assert env["AWS_ENDPOINT_URL"] == s3_server
    assert app["metadata"]["ownerReferences"] == [{
        "apiVersion": "v1", "kind": "Pod", "name": "batch-rl-abc12-system-container-impl-42", "uid": "0d3b-uid",
        "controller": False, "blockOwnerDeletion": False}]
    payload = json.loads(app["spec"]["arguments"][0])
    assert (payload["input"], payload["output"]) == (f"{s3_env}/logged", output), "KFP's minio:// read as s3://"
    assert table.metadata["output_rows"] == 1, "the stage summary comes back from the committed output"
    assert table.metadata["input_rows"] == 2 and "engine" not in table.metadata  # TimelineResult.METADATA


def test_an_explicit_endpoint_and_namespace_in_spark_kubernetes_win(kube, step_pod, s3_env, s3_server):
    from batchrl.kfp.components import build_components

    output = f"{s3_env}/timeline"
    _commit_timeline(output)
    build_components()["timeline"].python_func(
        timeline_table=_artifact(output), start_ds="2019-01-01", end_ds="2019-01-02", add_terminal_state_row=False,
        input_uri=f"{s3_env}/logged", spark_mode="kubernetes", s3_endpoint=s3_server,
        spark_kubernetes={"poll_seconds": 0.01, "s3_endpoint": "http://minio.storage:9000", "namespace": "spark"})
    app = kube.bodies[0]
    assert app["metadata"]["namespace"] == "spark" and "ownerReferences" not in app["metadata"]
    assert app["spec"]["sparkConf"]["spark.hadoop.fs.s3a.endpoint"] == "http://minio.storage:9000"
