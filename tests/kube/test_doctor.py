"""``batchrl doctor`` against the fake Kubernetes and KFP API servers and the moto S3 server: a ready
cluster passes every check (exit 0); each way a cluster can be unready fails exactly its own check, with
its message and fix (exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from batchrl.kube.doctor import Permission, required_permissions
from tests.fakes.kfp_api import FakeKFP
from tests.fakes.kube_api import FakeKubernetes

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests" / "base"
REGISTRY = "registry.example.com/ml"
RUNNER = "system:serviceaccount:kubeflow:pipeline-runner"
SPARK = "system:serviceaccount:kubeflow:batchrl-spark"


def _grant(kube: FakeKubernetes, user: str, permissions: list[Permission], namespace: str = "kubeflow") -> None:
    kube.granted |= {(user, "" if p.cluster else namespace, p.group, p.resource, p.subresource, p.verb)
                     for p in permissions}


@pytest.fixture
def cluster(tmp_path, monkeypatch, s3_env):
    """A cluster and KFP that are ready for the pipeline, and the arguments of a doctor run against them."""
    kube, kfp = FakeKubernetes().start(), FakeKFP().start()
    monkeypatch.setenv("KUBECONFIG", kube.write_kubeconfig(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kube.api_groups = {"apps": ["v1"], "sparkoperator.k8s.io": ["v1beta2"]}
    kube.add_secret("kubeflow", "batchrl-s3", {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    kube.service_accounts = {("kubeflow", "pipeline-runner"), ("kubeflow", "batchrl-spark")}
    needed = required_permissions(MANIFESTS)
    _grant(kube, RUNNER, needed["pipeline-runner"])
    _grant(kube, SPARK, needed["batchrl-spark"])
    kube.nodes = [{"metadata": {"name": "cpu-1"}, "status": {"allocatable": {"cpu": "8"}}},
                  {"metadata": {"name": "gpu-1"}, "status": {"allocatable": {"cpu": "8", "nvidia.com/gpu": "2"}}}]
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({
        "deploymentSpec": {"executors": {
            "exec-train": {"container": {"image": f"{REGISTRY}/batchrl-trainer:0.1.0"}},
            "exec-timeline": {"container": {"image": f"{REGISTRY}/batchrl-runtime:0.1.0"}}}},
        "root": {"inputDefinitions": {"parameters": {"spark_kubernetes": {
            "defaultValue": {"image": f"{REGISTRY}/batchrl-spark:0.1.0"}, "parameterType": "STRUCT"}}}}}))
    args = ["doctor", "--host", kfp.url, "--bucket", s3_env, "--gpu", "--pipeline", str(pipeline),
            "--registry", REGISTRY, "--manifests", str(MANIFESTS)]
    yield kube, kfp, args
    kube.stop()
    kfp.stop()


def _rows(out: str) -> dict[str, str]:
    """Check name -> 'pass ...' / 'FAIL ...' from the printed table."""
    rows = {}
    for line in out.splitlines()[1:]:
        if not line.strip():
            break
        for status in ("  pass  ", "  FAIL  "):
            if status in line:
                check, _, rest = line.partition(status)
                rows[check.strip()] = status.strip() + " " + rest.strip()
    return rows


CHECKS = {"kfp api", "spark-operator crd", "object-store secret", "service account pipeline-runner",
          "service account batchrl-spark", "gpu nodes", "bucket", "images"}


def test_a_ready_cluster_passes_every_check(cluster, cli):
    kube, kfp, args = cluster
    code, out, err = cli(*args)
    rows = _rows(out)
    assert set(rows) == CHECKS
    assert code == 0, out + err
    assert all(value.startswith("pass") for value in rows.values()), rows
    assert "KFP backend 2.15.0" in rows["kfp api"]
    assert "2 nvidia.com/gpu on 1 node(s): gpu-1=2" in rows["gpu nodes"]
    assert "to fix" not in out
    # every verb of both Roles was asked about, for the right user and namespace
    needed = required_permissions(MANIFESTS)
    assert len(kube.reviews) == len(needed["pipeline-runner"]) + len(needed["batchrl-spark"])
    nodes = next(r["spec"] for r in kube.reviews if r["spec"]["resourceAttributes"]["resource"] == "nodes")
    assert nodes["user"] == RUNNER and "namespace" not in nodes["resourceAttributes"], "cluster-scoped"


def test_the_verbs_come_from_our_manifests():
    """One source: the Roles in manifests/base define what the doctor checks."""
    needed = required_permissions(MANIFESTS)
    assert Permission("sparkoperator.k8s.io", "sparkapplications", "", "create") in needed["pipeline-runner"]
    assert Permission("", "pods", "log", "get") in needed["pipeline-runner"]
    assert Permission("", "nodes", "", "list", cluster=True) in needed["pipeline-runner"]
    assert Permission("", "pods", "", "deletecollection") in needed["batchrl-spark"]


def _break_kfp_old(kube, kfp, args):
    kfp.tag_name = "2.4.1"


def _break_kfp_no_optional_secrets(kube, kfp, args):
    kfp.tag_name = "v2.14.3"


def _break_kfp_unknown(kube, kfp, args):
    kfp.tag_name = "unknown"


def _break_kfp_down(kube, kfp, args):
    args[args.index("--host") + 1] = "http://127.0.0.1:9"


def _break_no_operator(kube, kfp, args):
    del kube.api_groups["sparkoperator.k8s.io"]


def _break_old_operator(kube, kfp, args):
    kube.api_groups["sparkoperator.k8s.io"] = ["v1beta1"]


def _break_no_secret(kube, kfp, args):
    kube.secrets.clear()


def _break_secret_key(kube, kfp, args):
    kube.add_secret("kubeflow", "batchrl-s3", {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": ""})


def _break_no_spark_account(kube, kfp, args):
    kube.service_accounts.discard(("kubeflow", "batchrl-spark"))


def _break_spark_verb(kube, kfp, args):
    kube.granted.discard((SPARK, "kubeflow", "", "pods", "", "deletecollection"))


def _break_runner_verb(kube, kfp, args):
    kube.granted.discard((RUNNER, "kubeflow", "", "pods", "", "get"))


def _break_no_gpu(kube, kfp, args):
    kube.nodes = kube.nodes[:1]


def _break_bucket(kube, kfp, args):
    args[args.index("--bucket") + 1] = "s3://no-such-bucket-here"


def _break_default_images(kube, kfp, args):
    index = args.index("--pipeline")
    del args[index:index + 2]


def _break_foreign_image(kube, kfp, args):
    args[args.index("--registry") + 1] = "other.example.com/team"


FAILURES = [
    (_break_kfp_old, "kfp api", "tolerations.tolerationJson needs KFP >= 2.5.0"),
    (_break_kfp_no_optional_secrets, "kfp api", "secretAsEnv.optional needs KFP >= 2.15.0"),
    (_break_kfp_unknown, "kfp api", "reports version 'unknown'"),
    (_break_kfp_down, "kfp api", "is unreachable"),
    (_break_no_operator, "spark-operator crd", "API group sparkoperator.k8s.io is not served"),
    (_break_old_operator, "spark-operator crd", "serves v1beta1, not v1beta2"),
    (_break_no_secret, "object-store secret", "secret kubeflow/batchrl-s3 not found"),
    (_break_secret_key, "object-store secret", "lacks AWS_SECRET_ACCESS_KEY"),
    (_break_no_spark_account, "service account batchrl-spark", "service account kubeflow/batchrl-spark not found"),
    (_break_spark_verb, "service account batchrl-spark", "may not: deletecollection pods"),
    (_break_runner_verb, "service account pipeline-runner", "may not: get pods"),
    (_break_no_gpu, "gpu nodes", "none of 1 nodes has allocatable nvidia.com/gpu"),
    (_break_bucket, "bucket", "s3://no-such-bucket-here does not exist"),
    (_break_default_images, "images", "unpublished default image(s): ghcr.io/batchrl/batchrl-runtime"),
    (_break_foreign_image, "images", "not under other.example.com/team"),
]


@pytest.mark.parametrize(("breaks", "check", "message"), FAILURES, ids=[f[0].__name__[7:] for f in FAILURES])
def test_each_missing_piece_fails_its_own_check(cluster, cli, breaks, check, message):
    kube, kfp, args = cluster
    breaks(kube, kfp, args)
    code, out, err = cli(*args)
    rows = _rows(out)
    assert code == 1, out + err
    assert rows[check].startswith("FAIL") and message in rows[check], rows[check]
    assert [name for name, value in rows.items() if value.startswith("FAIL")] == [check], "only that check fails"
    fixes = out.split("to fix:")[1]
    assert f"- {check}: " in fixes


def test_a_user_who_may_not_review_access_is_told_so(cluster, cli):
    kube, kfp, args = cluster
    kube.sar_forbidden = True
    code, out, _ = cli(*args)
    rows = _rows(out)
    assert code == 1
    for account in ("pipeline-runner", "batchrl-spark"):
        assert "cannot ask the API server (SubjectAccessReview: HTTP 403)" in rows[f"service account {account}"]
    assert "kubectl auth can-i --as=system:serviceaccount:kubeflow:batchrl-spark" in out


def test_local_spark_and_no_gpu_skip_those_checks(cluster, cli):
    kube, kfp, args = cluster
    del kube.api_groups["sparkoperator.k8s.io"]
    kube.nodes = []
    args = [a for a in args if a != "--gpu"] + ["--spark-mode", "local"]
    code, out, _ = cli(*args)
    assert code == 0, out
    assert set(_rows(out)) == CHECKS - {"spark-operator crd", "service account batchrl-spark", "gpu nodes"}


def test_bad_options_exit_2(cli, monkeypatch, tmp_path):
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    code, _, err = cli("doctor")
    assert code == 2 and "--host" in err
    code, _, err = cli("doctor", "--host", "http://127.0.0.1:9", "--pipeline", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read the compiled pipeline" in err


def test_the_checked_in_pipeline_is_read_for_its_images():
    from batchrl.kube.doctor import pipeline_images
    from batchrl.kube.sparkapp import DEFAULT_IMAGE

    images = pipeline_images(ROOT / "pipelines" / "batch_rl.yaml")
    assert DEFAULT_IMAGE in images and any("batchrl-runtime" in image for image in images)
    assert DEFAULT_IMAGE not in pipeline_images(ROOT / "pipelines" / "batch_rl.yaml", spark=False)
