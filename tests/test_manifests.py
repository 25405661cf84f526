"""manifests/: every overlay renders (kubectl kustomize), validates strictly for Kubernetes 1.30+, is
secure (non-root, limits, pinned images), carries no credential, grants only the RBAC verbs used,
never ships an object Kubeflow Pipelines owns, and takes its images from the overlay's override."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.fakes.kube_api import FakeKubernetes

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ("minio", "s3", "multi-user")
PROFILE = "kubeflow-user-example-com"
K8S_VERSIONS = ("1.30.0", "1.33.0")
CREDENTIAL = re.compile(r"(?i)(AKIA[0-9A-Z]{16}|minioadmin|minio123|aws_secret_access_key\s*[:=]\s*\S{6,}"
                        r"|password\s*[:=]\s*\S{4,}|BEGIN [A-Z ]*PRIVATE KEY)")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders the overlays")
    out = {}
    for overlay in OVERLAYS:
        text = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / "overlays" / overlay)], check=True,
                              capture_output=True, text=True, timeout=120).stdout
        out[overlay] = [doc for doc in yaml.safe_load_all(text) if doc]
        out[overlay + ":text"] = text
    return out


def render(path: Path) -> list[dict]:
    text = subprocess.run(["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True,
                          timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def objects(rendered, overlay, kind=None):
    return [o for o in rendered[overlay] if kind in (None, o["kind"])]


def pod_templates(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]]
    if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return [spec["template"]]
    return []


def pod_specs(obj: dict) -> list[dict]:
    return [template["spec"] for template in pod_templates(obj)]


def images(docs: list[dict]) -> set[str]:
    return {c["image"] for o in docs for pod in pod_specs(o) for c in pod["containers"] + pod.get("initContainers", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_strictly(rendered, overlay, version):
    assert rendered[overlay], "the overlay renders objects"
    for obj in rendered[overlay]:
        kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_catches_a_typo(rendered):
    bad = yaml.safe_load(yaml.safe_dump(objects(rendered, "minio", "Deployment")[0]))
    bad["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"cpu": "1"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.30.0", strict=True)


def test_overlays_contain_what_they_promise(rendered):
    kinds = {o["kind"] + "/" + o["metadata"]["name"] for o in rendered["minio"]}
    for expected in ("Deployment/batchrl-minio", "Service/batchrl-minio", "PersistentVolumeClaim/batchrl-minio",
                     "Job/batchrl-minio-make-bucket", "ServiceAccount/batchrl-spark", "Role/batchrl-spark-driver",
                     "Role/batchrl-pipeline-runner", "Deployment/batchrl-schedule-reconciler",
                     "CustomResourceDefinition/batchrlschedules.batchrl.io"):
        assert expected in kinds
    assert "minio" not in rendered["s3:text"].lower(), "the s3 overlay deploys and names no MinIO"
    namespaces = {"minio": "kubeflow", "s3": "kubeflow", "multi-user": PROFILE}
    for overlay in OVERLAYS:
        assert all(o["metadata"].get("namespace") == namespaces[overlay] for o in rendered[overlay]
                   if o["kind"] not in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"))


def _kfp_owned() -> set[tuple[str, str]]:
    data = yaml.safe_load((ROOT / "tests" / "resources" / "kfp_owned_objects.yaml").read_text())
    return {tuple(pair) for group in data.values() for pair in group}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_object_kubeflow_pipelines_owns(rendered, overlay):
    """Applying an overlay must never replace an object of KFP's install or of the profile controller
    (list and sources: tests/resources/kfp_owned_objects.yaml, from kubeflow/manifests): e.g. kfp-launcher,
    whose defaultPipelineRoot every pipeline of the namespace uses and which KFP regenerates."""
    owned = _kfp_owned()
    assert ("ConfigMap", "kfp-launcher") in owned and ("Role", "pipeline-runner") in owned
    shipped = {(o["kind"], o["metadata"]["name"]) for o in rendered[overlay]}
    assert not shipped & owned
    assert not {name for _, name in shipped} & {name for _, name in owned}, "no name KFP uses, of any kind"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_without_an_istio_sidecar(rendered, overlay):
    """Kubeflow namespaces are Istio-injected; a sidecar keeps a Job's pod alive after its container exits."""
    templates = [t for o in rendered[overlay] for t in pod_templates(o)]
    assert templates
    for template in templates:
        assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"


def _overlay_images(overlay: str) -> list[dict]:
    return yaml.safe_load((MANIFESTS / "overlays" / overlay / "kustomization.yaml").read_text()).get("images", [])


@pytest.mark.parametrize("overlay", ("minio", "s3"))
def test_every_image_comes_from_the_overlays_override(rendered, overlay, tmp_path):
    """A user who pushed the images to their own registry edits the overlay's `images:` (as
    `kustomize edit set image` does) and every pod then pulls from there."""
    from batchrl import __version__
    from batchrl.kfp.images import REGISTRY

    entries = _overlay_images(overlay)
    names = {entry["name"] for entry in entries}
    assert {image.rsplit(":", 1)[0] for image in images(rendered[overlay])} <= names, "no image escapes it"
    for entry in entries:
        if entry["name"].startswith(REGISTRY + "/"):
            assert str(entry["newTag"]) == __version__, "the project's images are the package version"
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    kustomization = copy / "overlays" / overlay / "kustomization.yaml"
    data = yaml.safe_load(kustomization.read_text())
    for entry in data["images"]:
        entry["newName"] = "registry.example.com/ml/" + entry["name"].rsplit("/", 1)[1]
        entry["newTag"] = "mine-1"
    kustomization.write_text(yaml.safe_dump(data))
    overridden = images(render(copy / "overlays" / overlay))
    assert overridden and all(image.startswith("registry.example.com/ml/") and image.endswith(":mine-1")
                              for image in overridden), overridden


def test_multi_user_binds_the_profiles_service_account(rendered):
    docs = rendered["multi-user"]
    editor = [{"kind": "ServiceAccount", "name": "default-editor", "namespace": PROFILE}]
    runner = next(o for o in docs if o["kind"] == "RoleBinding" and o["metadata"]["name"] == "batchrl-pipeline-runner")
    assert runner["subjects"] == editor
    [nodes] = [o for o in docs if o["kind"] == "ClusterRoleBinding"]
    assert nodes["subjects"] == editor and nodes["roleRef"]["name"] == "batchrl-node-reader"
    assert nodes["metadata"]["name"] == f"batchrl-node-reader-{PROFILE}", "one binding per profile"
    assert "pipeline-runner" not in yaml.safe_dump([o.get("subjects") for o in docs])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_are_non_root_limited_and_pinned(rendered, overlay):
    pods = [p for o in rendered[overlay] for p in pod_specs(o)]
    assert pods
    for pod in pods:
        for container in pod["containers"] + pod.get("initContainers", []):
            name = container["name"]
            context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True and context.get("runAsUser", 0) != 0, name
            assert context.get("allowPrivilegeEscalation") is False, name
            assert context.get("capabilities", {}).get("drop") == ["ALL"], name
            limits = container.get("resources", {}).get("limits", {})
            assert {"cpu", "memory"} <= set(limits), f"{name} has CPU and memory limits"
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: {image} is pinned"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_credentials_anywhere(rendered, overlay):
    assert not objects(rendered, overlay, "Secret"), "secrets are created by the user, never rendered"
    assert not CREDENTIAL.search(rendered[overlay + ":text"])
    for obj in rendered[overlay]:
        for pod in pod_specs(obj):
            for container in pod["containers"]:
                for env in container.get("env", []):
                    if re.search(r"(?i)(KEY|SECRET|PASSWORD|TOKEN)$", env["name"]):
                        assert "valueFrom" in env or env["name"].endswith("_PATH"), (
                            f"{env['name']} must come from a secret")


def test_the_secret_template_holds_no_values_and_is_not_applied():
    template = yaml.safe_load((MANIFESTS / "base" / "secret-template.yaml").read_text())
    assert set(template["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(value == "" for value in template["stringData"].values())
    kustomization = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    assert "secret-template.yaml" not in kustomization["resources"]


def test_compiled_pipeline_carries_no_credentials():
    pipeline = ROOT / "pipelines" / "batch_rl.yaml"
    if not pipeline.exists():
        pytest.skip("pipelines/batch_rl.yaml is not compiled in this checkout")
    assert not CREDENTIAL.search(pipeline.read_text())


def _role(rendered, name):
    return next(o for o in objects(rendered, "minio", "Role") if o["metadata"]["name"] == name)


def _granted(role) -> set[tuple[str, str, str]]:
    grants = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), "no wildcards"
                    grants.add((group, resource, verb))
    return grants


def _verbs_used(requests: list[tuple[str, str]]) -> set[tuple[str, str, str]]:
    """Kubernetes RBAC (group, resource, verb) of the HTTP requests a client made."""
    used = set()
    for method, path in requests:
        parts = path.split("?")[0].strip("/").split("/")
        group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
        rest = rest[2:] if rest[:1] == ["namespaces"] else rest
        resource = rest[0] + ("/" + rest[2] if len(rest) > 2 else "")
        named = len(rest) > 1
        verb = {"POST": "create", "DELETE": "delete", "PATCH": "patch", "GET": "get" if named else "list"}[method]
        used.add((group, resource, verb))
    return used


def test_runner_rbac_grants_exactly_what_the_launcher_uses(rendered, tmp_path, monkeypatch):
    """A step in its pod: reads its own pod (ownerReference), creates/watches/deletes an application, adopts
    one from an earlier attempt (patch: adds its pod to the owners), reads a failed driver's log."""
    import batchrl.kube.sparkapp as sparkapp
    from batchrl.kube.launcher import SparkApplicationLauncher, run_stage_on_kubernetes
    from batchrl.kube.sparkapp import SparkKubernetesOptions, build_spark_application, stage_payload

    (tmp_path / "namespace").write_text("kubeflow")
    monkeypatch.setattr(sparkapp, "SERVICE_ACCOUNT_NAMESPACE_FILE", tmp_path / "namespace")
    monkeypatch.setenv("KFP_POD_NAME", "step-pod")
    kube = FakeKubernetes().start()
    try:
        kube.add_pod("kubeflow", "step-pod", "uid-step")
        options = SparkKubernetesOptions(poll_seconds=0.01, timeout_seconds=30)
        run_stage_on_kubernetes("timeline", "s3://b/i", "s3://b/o", {}, options, api_client=kube.api_client())
        earlier = build_spark_application(stage_payload("prepare", "s3://b/i", "s3://b/o", {}), options,
                                          owner=kube.add_pod("kubeflow", "attempt-1", "uid-1"))
        kube.put(earlier, "RUNNING")
        kube.scripts[earlier["metadata"]["name"]] = ["COMPLETED"]
        run_stage_on_kubernetes("prepare", "s3://b/i", "s3://b/o", {}, options, api_client=kube.api_client())
        launcher = SparkApplicationLauncher(kube.api_client(), sleep=lambda s: None)
        failing = build_spark_application(stage_payload("normalize", "s3://b/i", "s3://b/n", {}), options)
        kube.scripts[failing["metadata"]["name"]] = ["RUNNING", "FAILED"]
        with pytest.raises(Exception, match="FAILED"):
            launcher.run(failing, timeout_seconds=60)
        used = _verbs_used(kube.requests)
    finally:
        kube.stop()
    assert used == _granted(_role(rendered, "batchrl-pipeline-runner"))
    binding = next(o for o in objects(rendered, "minio", "RoleBinding")
                   if o["metadata"]["name"] == "batchrl-pipeline-runner")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]


# the schedule reconciler's Role and Deployment: tests/test_schedule_reconciler.py


#: What the Spark driver does with its executors' objects, from the upstream sources:
#: - apache/spark resource-managers/kubernetes/core/.../KubernetesClusterSchedulerBackend.scala (commit
#:   00c026d93e2a): stop() deletes the services, PVCs (spark.kubernetes.driver.ownPersistentVolumeClaim) and
#:   executor configmaps *by label* (fabric8 `withLabel(...).delete()` is a DELETE on the collection, the
#:   `deletecollection` verb); ExecutorPodsAllocator.stop() deletes the executor pods by label likewise;
#:   the driver endpoint labels each executor pod with its id by `patch`;
#: - kubeflow/spark-operator charts/spark-operator-chart/templates/spark/rbac.yaml (commit 15dbe99c8f76):
#:   the chart's Role for the `spark` service account grants exactly this set.
SPARK_DRIVER_RESOURCES = ("pods", "configmaps", "persistentvolumeclaims", "services")
SPARK_DRIVER_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


def test_spark_driver_role_is_what_spark_on_kubernetes_needs(rendered):
    granted = _granted(_role(rendered, "batchrl-spark-driver"))
    assert granted == {("", resource, verb) for resource in SPARK_DRIVER_RESOURCES for verb in SPARK_DRIVER_VERBS}
    assert ("", "pods", "deletecollection") in granted, "shutdown deletes executors by label"
    account = next(o for o in objects(rendered, "minio", "ServiceAccount") if o["metadata"]["name"] == "batchrl-spark")
    from batchrl.kube.sparkapp import SparkKubernetesOptions

    assert SparkKubernetesOptions().service_account == account["metadata"]["name"]


def test_gpu_request_can_list_nodes_and_nothing_else_cluster_wide(rendered):
    roles = objects(rendered, "minio", "ClusterRole")
    assert [r["metadata"]["name"] for r in roles] == ["batchrl-node-reader"]
    assert _granted(roles[0]) == {("", "nodes", "list")}
    [binding] = objects(rendered, "minio", "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]
