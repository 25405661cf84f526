"""The SparkApplication (spark-operator, ``sparkoperator.k8s.io/v1beta2``) that runs one Spark stage.

The driver runs ``spark_job.py`` from the project's Spark image with one JSON argument,
``{"stage", "input", "output", "options"}``; S3 credentials come from a Kubernetes secret as the
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` environment variables (never inlined), and the
``s3a://`` connector is pointed at the same endpoint. The object is a plain dict built from typed
options and rendered once (:func:`to_yaml`); its name is a hash of the stage and its payload, so a
retry of the same work finds the same object.

Its namespace is the one given, else the namespace of the pod this code runs in (a KFP step: the
service-account namespace file, so a profile namespace works), else ``kubeflow``. Inside a step the
object is owned by the step's pod (``metadata.ownerReferences``), so Kubernetes' garbage collector
deletes it when the pod goes (a cancelled run): see :func:`owner_reference`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from batchrl import __version__
from batchrl.errors import BatchRLError
from batchrl.kfp.images import DEFAULT_IMAGES

logger = logging.getLogger(__name__)

API_GROUP = "sparkoperator.k8s.io"
API_VERSION = "v1beta2"
PLURAL = "sparkapplications"
KIND = "SparkApplication"

#: The Spark inside ``images/spark`` (the pyspark wheel pinned in requirements.lock).
SPARK_VERSION = "4.3.0"
#: Where ``images/spark/Dockerfile`` puts the stage entry point.
MAIN_APPLICATION_FILE = "local:///opt/batchrl/spark_job.py"
#: The uid/gid of the ``spark`` user in ``images/spark``.
SPARK_UID = 185
DEFAULT_IMAGE = DEFAULT_IMAGES.spark
SPARK_STAGES = ("timeline", "normalize", "prepare")
#: Labels put on every SparkApplication this package creates.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
STAGE_LABEL = "batchrl.io/stage"
PAYLOAD_ANNOTATION = "batchrl.io/payload-sha256"

#: Where Kubernetes mounts the pod's namespace (service-account token volume); read at call time, so a
#: test may point it elsewhere.
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: The namespace used outside a pod when none is given (single-user Kubeflow Pipelines).
DEFAULT_NAMESPACE = "kubeflow"

_MEMORY = re.compile(r"^[1-9][0-9]*[kmgt]?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class SparkKubernetesOptions(BaseModel):
    """Where and how a Spark stage runs on Kubernetes (spark-operator)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = DEFAULT_IMAGE
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    #: None: the namespace of the pod this runs in (its service-account namespace file), else kubeflow.
    namespace: str | None = None
    service_account: str = "batchrl-spark"
    driver_cores: int = Field(1, ge=1)
    driver_memory: str = "2g"
    executor_cores: int = Field(1, ge=1)
    executor_memory: str = "2g"
    executor_instances: int = Field(2, ge=1)
    #: Secret with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; None: the node's/IRSA identity.
    s3_secret: str | None = "batchrl-s3"
    #: S3 API endpoint (MinIO, SeaweedFS); None means AWS S3.
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    #: Seconds the operator keeps the finished object (timeToLiveSeconds).
    ttl_seconds: int = Field(3600, ge=0)
    timeout_seconds: float = Field(3 * 3600, gt=0)
    poll_seconds: float = Field(5.0, gt=0)
    #: Delete the SparkApplication when the launcher is done with it.
    cleanup: bool = True

    @field_validator("driver_memory", "executor_memory")
    @classmethod
    def _spark_memory(cls, value: str) -> str:
        if not _MEMORY.match(value):
            raise ValueError(f"'{value}' is not a Spark memory size; write e.g. 512m or 4g")
        return value

    @field_validator("namespace", "service_account", "s3_secret")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 63 or not _DNS_LABEL.match(value)):
            raise ValueError(f"'{value}' is not a Kubernetes name (lowercase letters, digits, '-')")
        return value

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"'{value}' is not an endpoint URL; write e.g. http://minio.kubeflow:9000")
        if parsed.username or parsed.password:
            raise ValueError("the endpoint URL must not carry credentials; put them in the secret")
        return value.rstrip("/")


def pod_namespace() -> str | None:
    """The namespace of the pod this process runs in (None outside a pod)."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE_FILE.read_text().strip() or None
    except OSError:
        return None


def resolve_namespace(options: SparkKubernetesOptions) -> str:
    """Where the SparkApplication goes: ``options.namespace``, else this pod's namespace, else kubeflow."""
    return options.namespace or pod_namespace() or DEFAULT_NAMESPACE


def owner_reference(pod: dict[str, Any], namespace: str) -> dict[str, Any] | None:
    """The ownerReference that makes ``pod`` (a Pod object as the API returns it) own an object in
    ``namespace``; None when it cannot (then nothing is set and the launcher's SIGTERM handler is the
    only clean-up on cancel).

    Kubernetes' rules (``plugin/pkg/admission/gc/gc_admission.go`` and the garbage collector): an owner
    must be in the dependent's namespace (a namespaced owner elsewhere counts as absent, and the
    dependent is collected at once); ``uid`` must be the live object's (a stale uid also counts as
    absent); ``blockOwnerDeletion: true`` would need ``update`` on ``pods/finalizers``, so it is
    false; setting any ownerReference needs ``delete`` on the dependent (sparkapplications), which the
    runner has.
    """
    meta = pod.get("metadata") or {}
    if not meta.get("uid") or not meta.get("name"):
        return None
    if meta.get("namespace") != namespace:
        logger.warning("the SparkApplication goes to namespace %s but this pod runs in %s: an owner must be in "
                       "the same namespace, so it is not owner-referenced", namespace, meta.get("namespace"))
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"],
            "controller": False, "blockOwnerDeletion": False}


def stage_payload(stage: str, input_uri: str | dict[str, str], output_uri: str | dict[str, str],
                  options: dict[str, Any]) -> dict[str, Any]:
    """The JSON argument of ``spark_job.py``; cluster stages read and write object storage only.

    ``input_uri``/``output_uri`` are one URI, or named URIs for stages with several (prepare:
    ``{"timeline", "normalization", "action_normalization" (optional)}`` in, ``{"train", "eval"}`` out)."""
    if stage not in SPARK_STAGES:
        raise BatchRLError(f"'{stage}' is not a Spark stage", fix=f"use one of {', '.join(SPARK_STAGES)}")
    for role, value in (("input", input_uri), ("output", output_uri)):
        named = value.items() if isinstance(value, dict) else [(None, value)]
        for part, uri in named:
            if urlparse(str(uri)).scheme not in ("s3", "s3a"):
                where = f"{stage} {role}" + (f".{part}" if part else "")
                raise BatchRLError(
                    f"the {role} of a Spark stage on Kubernetes must be an s3:// URI, got '{uri}'", where=where,
                    fix="the driver and executors cannot see local paths; use s3://BUCKET/PATH (MinIO, S3, "
                        "SeaweedFS) or run with --spark-mode local")

    def plain(v: str | dict[str, Any]) -> str | dict[str, str]:
        return {k: str(u) for k, u in v.items()} if isinstance(v, dict) else str(v)

    return {"stage": stage, "input": plain(input_uri), "output": plain(output_uri), "options": options}


def payload_digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def application_name(payload: dict[str, Any]) -> str:
    """``batchrl-<stage>-<first 10 hex of sha256(payload)>``: the same work always gets the same name."""
    return f"batchrl-{payload['stage']}-{payload_digest(payload)[:10]}"


def _security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": SPARK_UID,
        "runAsGroup": SPARK_UID,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(options: SparkKubernetesOptions) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "AWS_REGION", "value": options.s3_region}]
    if options.s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": options.s3_endpoint})
    if options.s3_secret:
        env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": options.s3_secret, "key": key}}}
                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    return env


def _s3a_conf(options: SparkKubernetesOptions) -> dict[str, str]:
    conf = {
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint.region": options.s3_region,
    }
    if options.s3_secret:
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
            "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider")
    if options.s3_endpoint:
        conf.update({
            "spark.hadoop.fs.s3a.endpoint": options.s3_endpoint,
            "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.connection.ssl.enabled": str(options.s3_endpoint.startswith("https")).lower(),
        })
    return conf


def _pod(options: SparkKubernetesOptions, cores: int, memory: str, stage: str) -> dict[str, Any]:
    return {
        "cores": cores,
        "coreLimit": str(cores),
        "memory": memory,
        "labels": {MANAGED_BY_LABEL: "batchrl", STAGE_LABEL: stage},
        "env": _env(options),
        "securityContext": _security_context(),
        "podSecurityContext": {"runAsNonRoot": True, "fsGroup": SPARK_UID,
                               "seccompProfile": {"type": "RuntimeDefault"}},
    }


def build_spark_application(payload: dict[str, Any], options: SparkKubernetesOptions,
                            owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """The SparkApplication running ``payload`` (from :func:`stage_payload`) with ``options``, owned by
    the ``owner`` pod (a Pod object) when given and allowed (:func:`owner_reference`)."""
    stage = payload["stage"]
    namespace = resolve_namespace(options)
    driver = _pod(options, options.driver_cores, options.driver_memory, stage)
    driver["serviceAccount"] = options.service_account
    executor = _pod(options, options.executor_cores, options.executor_memory, stage)
    executor["instances"] = options.executor_instances
    metadata: dict[str, Any] = {
        "name": application_name(payload),
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: "batchrl", STAGE_LABEL: stage, "app.kubernetes.io/version": __version__},
        "annotations": {PAYLOAD_ANNOTATION: payload_digest(payload)},
    }
    reference = owner_reference(owner, namespace) if owner else None
    if reference:
        metadata["ownerReferences"] = [reference]
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "type": "Python",
            "mode": "cluster",
            "image": options.image,
            "imagePullPolicy": options.image_pull_policy,
            "mainApplicationFile": MAIN_APPLICATION_FILE,
            "arguments": [json.dumps(payload, sort_keys=True)],
            "sparkVersion": SPARK_VERSION,
            "sparkConf": {"spark.sql.session.timeZone": "UTC", **_s3a_conf(options)},
            "restartPolicy": {"type": "Never"},
            "timeToLiveSeconds": options.ttl_seconds,
            "driver": driver,
            "executor": executor,
        },
    }


def to_yaml(obj: dict[str, Any]) -> str:
    """Render a Kubernetes object as YAML (keys in build order)."""
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)
