"""``batchrl doctor``: what a cluster lacks before the first pipeline run, one check per function.

Each check returns a :class:`CheckResult` (name, pass/fail, what was found, the fix); :func:`run_checks`
runs those that apply and the CLI prints them as a table. The checks:

- ``kfp``: the KFP API answers and its backend version (``tag_name`` of ``/apis/v1beta1/healthz``,
  kubeflow/pipelines ``backend/src/apiserver/main.go``) is at least every entry of
  :mod:`batchrl.kfp.backend` (the features the compiled pipeline uses);
- ``spark-operator``: the API group ``sparkoperator.k8s.io`` is served with version ``v1beta2``;
- ``object-store secret``: the secret exists with non-empty ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``;
- ``service account <name>``: it exists, and a SubjectAccessReview allows it every verb that our own
  manifests' Roles grant it (:func:`required_permissions`: one source for what the pipeline needs);
- ``gpu nodes`` (when GPU training is asked for): some node has allocatable ``nvidia.com/gpu``;
- ``bucket``: HeadBucket through the storage layer with the configured endpoint and credentials;
- ``images``: no image reference is one of the unpublished defaults, and all are under the expected
  registry when one is given.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from batchrl.errors import BatchRLError
from batchrl.kfp.backend import FULL_KFP_BACKEND, backend_problems

SPARK_OPERATOR_GROUP = "sparkoperator.k8s.io"
SPARK_OPERATOR_VERSION = "v1beta2"
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
GPU_RESOURCE = "nvidia.com/gpu"
#: The service accounts our manifests bind Roles to, and which setting names the real one.
RUNNER_ACCOUNT = "pipeline-runner"
SPARK_ACCOUNT = "batchrl-spark"
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class CheckResult:
    """One line of the doctor's table."""

    check: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Permission:
    """One verb on one resource that a service account needs (from a Role or ClusterRole rule)."""

    group: str
    resource: str
    subresource: str
    verb: str
    cluster: bool = False

    def __str__(self) -> str:
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {resource}" + (f" ({self.group})" if self.group else "") + (
            " cluster-wide" if self.cluster else "")


# ---------------------------------------------------------------- what the manifests grant


def default_manifests_dir() -> Path:
    """``manifests/base`` of the working directory, else of the source tree this package runs from."""
    here = Path("manifests/base")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[3] / "manifests" / "base"


def required_permissions(manifests: Path) -> dict[str, list[Permission]]:
    """Service-account name (as the manifests bind it) -> every permission its Roles grant.

    Reads the Roles/ClusterRoles and their (Cluster)RoleBindings in ``manifests`` (``*.yaml``)."""
    if not manifests.is_dir():
        raise BatchRLError(f"no manifests folder at {manifests}", where="--manifests",
                           fix="run from the batchrl repository root or pass --manifests PATH/manifests/base")
    docs = [doc for path in sorted(manifests.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]
    roles = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs if doc.get("kind") in ("Role", "ClusterRole")}
    needed: dict[str, list[Permission]] = {}
    for binding in (doc for doc in docs if doc.get("kind") in ("RoleBinding", "ClusterRoleBinding")):
        role = roles.get((binding["roleRef"]["kind"], binding["roleRef"]["name"]))
        if role is None:
            continue
        cluster = binding["kind"] == "ClusterRoleBinding"
        for subject in binding.get("subjects", []):
            if subject.get("kind") != "ServiceAccount":
                continue
            granted = needed.setdefault(subject["name"], [])
            for rule in role.get("rules", []):
                for group in rule.get("apiGroups", [""]):
                    for resource in rule.get("resources", []):
                        name, _, sub = resource.partition("/")
                        granted += [Permission(group, name, sub, verb, cluster) for verb in rule.get("verbs", [])
                                    if Permission(group, name, sub, verb, cluster) not in granted]
    return needed


# ---------------------------------------------------------------- the checks


def _version(text: str) -> tuple[int, int, int] | None:
    match = _VERSION.match(text.strip())
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def check_kfp(host: str, token: str | None = None, timeout: float = 10.0) -> CheckResult:
    """The KFP API answers and its backend is new enough for every feature the compiled pipeline uses
    (:mod:`batchrl.kfp.backend`, the one table of which KFP release honours which IR feature)."""
    name = "kfp api"
    request = urllib.request.Request(f"{host.rstrip('/')}/apis/v1beta1/healthz")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (the user's endpoint)
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        fix = ("set KF_PIPELINES_TOKEN (multi-user Kubeflow)" if exc.code in (401, 403)
               else "check --host points at the ml-pipeline API (port 8888) or its UI proxy")
        return CheckResult(name, False, f"{host}: HTTP {exc.code}", fix)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return CheckResult(name, False, f"{host} is unreachable: {getattr(exc, 'reason', exc)}",
                           "check --host (e.g. kubectl -n kubeflow port-forward svc/ml-pipeline 8888:8888, "
                           "then --host http://localhost:8888)")
    tag = str(body.get("tag_name") or "unknown")
    found = _version(tag)
    if found is None:
        return CheckResult(name, False, f"{host} answers but reports version {tag!r}",
                           "install a released KFP backend (its ml-pipeline deployment sets TAG_NAME)")
    too_old = backend_problems(".".join(map(str, found)))
    if too_old:
        return CheckResult(name, False, f"KFP backend {tag}: " + "; ".join(too_old),
                           f"upgrade Kubeflow Pipelines to >= {FULL_KFP_BACKEND}")
    return CheckResult(name, True, f"KFP backend {tag} at {host}")


def _api_status(exc: Exception) -> str:
    return f"HTTP {exc.status}" if hasattr(exc, "status") else f"unreachable ({str(exc).splitlines()[0][:120]})"


def check_spark_operator(api_client: Any) -> CheckResult:
    """The spark-operator's CRD is installed: its API group serves ``v1beta2`` (the version we create)."""
    from kubernetes import client

    name = "spark-operator crd"
    fix = ("install the spark-operator (helm install spark-operator spark-operator/spark-operator "
           "--namespace spark-operator --set 'spark.jobNamespaces={kubeflow}'), or use --spark-mode local")
    try:
        groups = client.ApisApi(api_client).get_api_versions().groups or []
    except Exception as exc:  # noqa: BLE001 (ApiException or no answer: both are a failed check)
        return CheckResult(name, False, f"API discovery failed: {_api_status(exc)}", "check the kube context")
    group = next((g for g in groups if g.name == SPARK_OPERATOR_GROUP), None)
    if group is None:
        return CheckResult(name, False, f"API group {SPARK_OPERATOR_GROUP} is not served", fix)
    versions = [v.version for v in group.versions]
    if SPARK_OPERATOR_VERSION not in versions:
        return CheckResult(name, False, f"{SPARK_OPERATOR_GROUP} serves {', '.join(versions)}, not "
                           f"{SPARK_OPERATOR_VERSION}", "upgrade the spark-operator (kubeflow/spark-operator >= 1.1)")
    return CheckResult(name, True, f"{SPARK_OPERATOR_GROUP} serves {', '.join(versions)}")


def check_secret(api_client: Any, namespace: str, secret: str) -> CheckResult:
    """The object-store secret exists in ``namespace`` with every key of :data:`SECRET_KEYS`, non-empty."""
    from kubernetes import client

    name = "object-store secret"
    create = (f"kubectl -n {namespace} create secret generic {secret} --from-literal=AWS_ACCESS_KEY_ID=... "
              "--from-literal=AWS_SECRET_ACCESS_KEY=...")
    try:
        data = client.CoreV1Api(api_client).read_namespaced_secret(secret, namespace).data or {}
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "status", None) == 404:
            return CheckResult(name, False, f"secret {namespace}/{secret} not found", create)
        return CheckResult(name, False, f"cannot read secret {namespace}/{secret}: {_api_status(exc)}",
                           "run doctor with a kube context that may read secrets in the namespace")
    missing = [key for key in SECRET_KEYS if not data.get(key)]
    if missing:
        return CheckResult(name, False, f"secret {namespace}/{secret} lacks {', '.join(missing)} (or they are empty)",
                           f"recreate it: {create}")
    return CheckResult(name, True, f"secret {namespace}/{secret} has {', '.join(SECRET_KEYS)}")


def check_service_account(api_client: Any, namespace: str, account: str,
                          permissions: Iterable[Permission]) -> CheckResult:
    """``account`` exists and a SubjectAccessReview allows it each of ``permissions``."""
    from kubernetes import client

    name = f"service account {account}"
    permissions = list(permissions)
    apply = "kubectl apply -k manifests/overlays/<yours> (Roles batchrl-pipeline-runner, batchrl-spark-driver)"
    try:
        client.CoreV1Api(api_client).read_namespaced_service_account(account, namespace)
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "status", None) == 404:
            return CheckResult(name, False, f"service account {namespace}/{account} not found", apply)
        return CheckResult(name, False, f"cannot read service account {namespace}/{account}: {_api_status(exc)}",
                           "check the kube context")
    auth = client.AuthorizationV1Api(api_client)
    user = f"system:serviceaccount:{namespace}:{account}"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]
    denied = []
    for permission in permissions:
        attributes = client.V1ResourceAttributes(
            namespace=None if permission.cluster else namespace, verb=permission.verb, group=permission.group,
            resource=permission.resource, subresource=permission.subresource or None)
        review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user=user, groups=groups, resource_attributes=attributes))
        try:
            answer = auth.create_subject_access_review(review)
        except Exception as exc:  # noqa: BLE001
            return CheckResult(name, False, f"cannot ask the API server (SubjectAccessReview: {_api_status(exc)})",
                               "run doctor as a user who may create subjectaccessreviews (a cluster admin), or "
                               f"check by hand: kubectl auth can-i --as={user} -n {namespace} --list")
        if not (answer.status and answer.status.allowed):
            denied.append(str(permission))
    if denied:
        return CheckResult(name, False, f"{user} may not: {'; '.join(denied)}", apply)
    return CheckResult(name, True, f"{namespace}/{account} exists and has all {len(permissions)} verbs")


def check_gpu_nodes(api_client: Any, resource: str = GPU_RESOURCE) -> CheckResult:
    """Some node has allocatable ``resource`` (the NVIDIA device plugin advertises ``nvidia.com/gpu``)."""
    from kubernetes import client

    name = "gpu nodes"
    try:
        nodes = client.CoreV1Api(api_client).list_node().items or []
    except Exception as exc:  # noqa: BLE001
        return CheckResult(name, False, f"cannot list nodes: {_api_status(exc)}",
                           "run doctor with a kube context that may list nodes")
    counts = {node.metadata.name: int(str((node.status.allocatable or {}).get(resource, "0")) or 0)
              for node in nodes if node.status}
    with_gpu = {node: count for node, count in counts.items() if count > 0}
    if not with_gpu:
        return CheckResult(name, False, f"none of {len(counts)} nodes has allocatable {resource}",
                           "add GPU nodes with the NVIDIA device plugin (or GPU operator), or train with "
                           "gpu_mode=never")
    return CheckResult(name, True, f"{sum(with_gpu.values())} {resource} on {len(with_gpu)} node(s): "
                       + ", ".join(f"{n}={c}" for n, c in sorted(with_gpu.items())))


def check_bucket(bucket_uri: str) -> CheckResult:
    """HeadBucket on ``s3://BUCKET`` through :mod:`batchrl.storage` (its endpoint and credentials)."""
    from urllib.parse import urlparse

    from batchrl import storage

    name = "bucket"
    parsed = urlparse(bucket_uri)
    if parsed.scheme not in ("s3", "s3a") or not parsed.netloc:
        return CheckResult(name, False, f"{bucket_uri!r} is not an s3://BUCKET URI", "pass --bucket s3://BUCKET")
    bucket = f"s3://{parsed.netloc}"
    endpoint = storage.s3_endpoint() or "AWS S3"
    try:
        found = storage.exists(bucket)
    except BatchRLError as exc:
        return CheckResult(name, False, f"{bucket} via {endpoint}: {exc.message.splitlines()[0]}",
                           "check --s3-endpoint and the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY you run with")
    if not found:
        return CheckResult(name, False, f"{bucket} does not exist at {endpoint}",
                           "create it (mc mb / aws s3 mb), or pass the bucket the pipeline writes to")
    return CheckResult(name, True, f"{bucket} reachable at {endpoint}")


def pipeline_images(package: Path, spark: bool = True) -> list[str]:
    """Every image a compiled pipeline (KFP IR YAML) runs: its executors', and with ``spark`` the Spark
    image of its ``spark_kubernetes`` default (else the package default)."""
    from batchrl.kube.sparkapp import DEFAULT_IMAGE

    try:
        docs = [doc for doc in yaml.safe_load_all(package.read_text()) if isinstance(doc, dict)]
    except (OSError, yaml.YAMLError) as exc:
        raise BatchRLError(f"cannot read the compiled pipeline: {exc}", where=str(package),
                           fix="pass the YAML `batchrl pipeline compile` wrote") from None
    spec = next((doc for doc in docs if "deploymentSpec" in doc), None)
    if spec is None:
        raise BatchRLError("not a compiled KFP pipeline (no deploymentSpec)", where=str(package),
                           fix="pass the YAML `batchrl pipeline compile` wrote")
    images = {executor["container"]["image"] for executor in spec["deploymentSpec"]["executors"].values()
              if "container" in executor}
    if spark:
        inputs = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
        images.add((inputs.get("spark_kubernetes", {}).get("defaultValue") or {}).get("image") or DEFAULT_IMAGE)
    return sorted(images)


def check_images(images: Iterable[str], unpublished_registry: str, registry: str | None = None) -> CheckResult:
    """No reference is under ``unpublished_registry`` (the project's defaults, which nobody pushes), and
    all are under ``registry`` when one is expected (images built and pushed by the user)."""
    name = "images"
    images = sorted(set(images))
    unpublished = [image for image in images if image.startswith(f"{unpublished_registry.rstrip('/')}/")]
    elsewhere = [image for image in images if registry and not image.startswith(f"{registry.rstrip('/')}/")]
    compile_fix = ("build and push images/ to your registry (BATCHRL_IMAGE_REGISTRY=REGISTRY make images; docker "
                   "push), compile the pipeline for it (batchrl pipeline compile --registry REGISTRY) and pass the "
                   "Spark image in spark_kubernetes")
    if unpublished:
        return CheckResult(name, False, f"unpublished default image(s): {', '.join(unpublished)}", compile_fix)
    if elsewhere:
        return CheckResult(name, False, f"not under {registry}: {', '.join(elsewhere)}", compile_fix)
    return CheckResult(name, True, ", ".join(images))


# ---------------------------------------------------------------- all of them


@dataclass(frozen=True)
class DoctorSettings:
    """What the pipeline will run with (the CLI's options)."""

    kfp_host: str
    #: The registry of the package's default image references (``batchrl.kfp.images.REGISTRY``).
    unpublished_registry: str
    namespace: str = "kubeflow"
    runner_service_account: str = RUNNER_ACCOUNT
    spark_service_account: str = SPARK_ACCOUNT
    s3_secret: str = "batchrl-s3"
    bucket: str | None = None
    gpu: bool = False
    spark_kubernetes: bool = True
    images: tuple[str, ...] = ()
    registry: str | None = None
    manifests: Path | None = None
    kfp_token: str | None = None


def run_checks(settings: DoctorSettings, api_client: Any) -> list[CheckResult]:
    """Every check that applies to ``settings``, in the order the table shows them."""
    needed = required_permissions(settings.manifests or default_manifests_dir())
    accounts = {RUNNER_ACCOUNT: settings.runner_service_account}
    if settings.spark_kubernetes:
        accounts[SPARK_ACCOUNT] = settings.spark_service_account
    results = [check_kfp(settings.kfp_host, settings.kfp_token)]
    if settings.spark_kubernetes:
        results.append(check_spark_operator(api_client))
    results.append(check_secret(api_client, settings.namespace, settings.s3_secret))
    for in_manifests, account in accounts.items():
        if in_manifests not in needed:
            raise BatchRLError(f"the manifests bind no Role to service account {in_manifests}",
                               where=str(settings.manifests or default_manifests_dir()),
                               fix="pass the batchrl manifests/base folder with --manifests")
        results.append(check_service_account(api_client, settings.namespace, account, needed[in_manifests]))
    if settings.gpu:
        results.append(check_gpu_nodes(api_client))
    if settings.bucket:
        results.append(check_bucket(settings.bucket))
    results.append(check_images(settings.images, settings.unpublished_registry, settings.registry))
    return results


def render_table(results: list[CheckResult]) -> str:
    """The results as a plain-text table, then the fix of each failed check."""
    width = max(len(r.check) for r in results)
    lines = [f"{'CHECK'.ljust(width)}  RESULT  DETAIL"]
    lines += [f"{r.check.ljust(width)}  {'pass' if r.ok else 'FAIL'}    {r.detail}" for r in results]
    failed = [r for r in results if not r.ok]
    if failed:
        lines += ["", "to fix:"] + [f"- {r.check}: {r.fix}" for r in failed]
    return "\n".join(lines)
