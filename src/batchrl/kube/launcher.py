"""Create a SparkApplication, watch it to the end, report the driver's last lines on failure, clean up.

The name is deterministic (see :func:`batchrl.kube.sparkapp.application_name`), so a retried step
adopts the object its previous attempt created instead of starting the work twice (and adds its own
pod to the object's owners); an object left in a failed state by that attempt is replaced.
``status.applicationState.state`` is polled until ``COMPLETED`` (success, the object is deleted) or
``FAILED`` / ``SUBMISSION_FAILED`` (a :class:`BatchRLError` carrying the driver log tail; the object
is kept until its ``timeToLiveSeconds`` so the driver's pod and log survive for ``kubectl``), or
until the timeout (the object is deleted so no executors keep running).

Cancel: while a run is watched, SIGTERM deletes the application and exits with 143 (128 + SIGTERM),
and Ctrl-C (SIGINT) deletes it before the interrupt goes on. In a KFP step the signal a cancel sends
reaches the kfp-launcher, which runs the component as a child without forwarding signals
(kubeflow/pipelines ``backend/src/v2/component/launcher_v2.go``), and the container is then torn
down; there the step pod's ownerReference on the object (:func:`batchrl.kube.sparkapp.owner_reference`)
is what cleans up: Kubernetes' garbage collector deletes the application with the pod (Argo deletes
a finished workflow's pods with it, after KFP's ``ttlStrategy``).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from batchrl.errors import BatchRLError
from batchrl.kube.sparkapp import API_GROUP, API_VERSION, PAYLOAD_ANNOTATION, PLURAL

logger = logging.getLogger(__name__)

#: Exit status after a SIGTERM (cancel): 128 + the signal number, as a shell reports it.
EXIT_ON_SIGTERM = 128 + signal.SIGTERM
COMPLETED = "COMPLETED"
FAILED_STATES = ("FAILED", "SUBMISSION_FAILED")
LOG_TAIL_LINES = 40
#: What a call to the API server can raise: an HTTP error status, or no answer at all.
_API_ERRORS = (ApiException, urllib3.exceptions.HTTPError)

_SECRET_PATTERNS = (
    re.compile(r"(?i)((?:secret|password|passwd|token|access[._-]?key)[\w.-]*\s*[=:]\s*)(\S+)"),
    re.compile(r"(?i)(authorization:\s*\w+\s+)(\S+)"),
)


def redact(text: str) -> str:
    """Mask values that look like credentials (``...secret...=VALUE``) and known secret env values."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "KF_PIPELINES_TOKEN"):
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def kubernetes_api_client() -> Any:
    """An API client from the pod's service account, else from kubeconfig (``KUBECONFIG``, context).

    The configuration is built for this client only; the ``kubernetes`` package's global default is
    left alone.
    """
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            # KUBECONFIG read now (the kubernetes package reads it once, at import)
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                    client_configuration=configuration)
        except (config.ConfigException, OSError) as exc:
            raise BatchRLError(
                "no Kubernetes credentials: not in a pod and no usable kubeconfig",
                where=os.environ.get("KUBECONFIG", "~/.kube/config"),
                fix="run inside the cluster with a service account, or set KUBECONFIG / kubectl config "
                    "use-context; for a local run use --spark-mode local") from exc
    return client.ApiClient(configuration)


class SparkApplicationLauncher:
    """Runs SparkApplications in one namespace through the ``kubernetes`` client."""

    def __init__(self, api_client: Any, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        from kubernetes import client

        # kubernetes.client.rest logs every raw response body at DEBUG, driver logs included: those may
        # carry credentials, so that logger never goes below INFO while batchrl talks to the cluster.
        rest_logger = logging.getLogger("kubernetes.client.rest")
        rest_logger.setLevel(max(rest_logger.getEffectiveLevel(), logging.INFO))
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._clock = clock
        self._sleep = sleep

    # ------------------------------------------------------------ API calls

    def _get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace,
                                                                              PLURAL, name)
            return found
        except _API_ERRORS as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise self._api_error("read", namespace, name, exc) from None

    def _delete(self, namespace: str, name: str) -> None:
        try:
            self._custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
        except _API_ERRORS as exc:
            if getattr(exc, "status", None) != 404:
                raise self._api_error("delete", namespace, name, exc) from None

    def _patch_owners(self, namespace: str, name: str, owners: list[dict[str, Any]]) -> None:
        try:
            self._custom.patch_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name,
                                                        {"metadata": {"ownerReferences": owners}})
        except _API_ERRORS as exc:
            raise self._api_error("patch", namespace, name, exc) from None

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod ``namespace/name`` as the API returns it; None (with a warning) when it cannot be read."""
        try:
            pod = self._core.read_namespaced_pod(name, namespace)
        except _API_ERRORS as exc:
            logger.warning("could not read this step's pod %s/%s (HTTP %s): the SparkApplication gets no owner, "
                           "so only the SIGTERM handler deletes it on cancel; grant get on pods (apply manifests/, "
                           "Role batchrl-pipeline-runner)", namespace, name, getattr(exc, "status", "-"))
            return None
        plain: dict[str, Any] = self._core.api_client.sanitize_for_serialization(pod)
        return plain

    def _create(self, app: dict[str, Any]) -> bool:
        """Create ``app``; False when an object of that name already exists."""
        namespace, name = app["metadata"]["namespace"], app["metadata"]["name"]
        try:
            self._custom.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, app)
            return True
        except _API_ERRORS as exc:
            if getattr(exc, "status", None) == 409:
                return False
            raise self._api_error("create", namespace, name, exc) from None

    @staticmethod
    def _api_error(action: str, namespace: str, name: str, exc: Exception) -> BatchRLError:
        if not hasattr(exc, "status"):  # the API server could not be reached at all
            return BatchRLError(f"could not {action} SparkApplication {name}: the Kubernetes API is unreachable "
                                f"({redact(str(exc)).splitlines()[0][:200]})", where=f"namespace {namespace}",
                                fix="check the kubeconfig's server / the pod's network, then retry")
        status = getattr(exc, "status", None)
        reason = redact(str(getattr(exc, "reason", "") or exc).splitlines()[0])
        fix = "check the cluster is reachable and the spark-operator is installed"
        if status in (401, 403):
            fix = ("the runner's service account needs create/get/patch/delete on sparkapplications in this "
                   "namespace: apply manifests/ (Role batchrl-pipeline-runner); `batchrl doctor` checks it")
        elif status == 404 and action == "create":
            fix = "install the spark-operator (it provides the SparkApplication CRD) or check the namespace"
        return BatchRLError(f"could not {action} SparkApplication {name}: HTTP {status} {reason}",
                            where=f"namespace {namespace}", fix=fix)

    def driver_log_tail(self, namespace: str, pod: str, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the driver pod's log, credentials masked."""
        try:
            text = self._core.read_namespaced_pod_log(pod, namespace, tail_lines=lines)
        except _API_ERRORS as exc:
            return f"(driver log unavailable: HTTP {getattr(exc, 'status', '-')} {getattr(exc, 'reason', exc)})"
        return redact(text or "(driver log is empty)").rstrip()

    # ------------------------------------------------------------ the run

    def _start(self, app: dict[str, Any]) -> bool:
        """Create the object or adopt the one a previous attempt created; True when adopted."""
        namespace, name = app["metadata"]["namespace"], app["metadata"]["name"]
        if self._create(app):
            logger.info("created SparkApplication %s/%s", namespace, name)
            return False
        existing = self._get(namespace, name) or {}
        digest = existing.get("metadata", {}).get("annotations", {}).get(PAYLOAD_ANNOTATION)
        if digest != app["metadata"]["annotations"][PAYLOAD_ANNOTATION]:
            raise BatchRLError(
                f"SparkApplication {name} exists but was not created for this stage and payload",
                where=f"namespace {namespace}",
                fix=f"delete it (kubectl -n {namespace} delete sparkapplication {name}) and retry")
        state = _state(existing)
        if state in FAILED_STATES:
            logger.info("SparkApplication %s/%s from an earlier attempt ended %s; replacing it",
                        namespace, name, state)
            self._delete(namespace, name)
            self._wait_gone(namespace, name)
            if not self._create(app):
                raise BatchRLError(f"SparkApplication {name} reappeared while being replaced",
                                   where=f"namespace {namespace}", fix="retry the step")
            return False
        ours = app["metadata"].get("ownerReferences") or []
        owners = existing.get("metadata", {}).get("ownerReferences") or []
        missing = [ref for ref in ours if ref["uid"] not in {o.get("uid") for o in owners}]
        if missing:  # the earlier attempt's pod owns it: when that pod goes, the collector would delete it
            self._patch_owners(namespace, name, owners + missing)
        logger.info("adopted SparkApplication %s/%s (state %s)", namespace, name, state or "new")
        return True

    def _wait_gone(self, namespace: str, name: str, limit_s: float = 120.0) -> None:
        deadline = self._clock() + limit_s
        while self._get(namespace, name) is not None:
            if self._clock() > deadline:
                raise BatchRLError(f"SparkApplication {name} was not deleted within {limit_s:.0f}s",
                                   where=f"namespace {namespace}", fix="check for finalizers and retry")
            self._sleep(1.0)

    def run(self, app: dict[str, Any], timeout_seconds: float, poll_seconds: float = 5.0,
            cleanup: bool = True) -> dict[str, Any]:
        """Run ``app`` to completion; returns a summary, raises :class:`BatchRLError` on failure/timeout.

        ``cleanup``: delete the object after success or timeout (a failed one is always kept until its
        TTL, for its logs). SIGTERM meanwhile deletes it and exits with :data:`EXIT_ON_SIGTERM`; Ctrl-C
        deletes it and goes on as KeyboardInterrupt."""
        namespace, name = app["metadata"]["namespace"], app["metadata"]["name"]
        try:
            with _sigterm_raises():
                return self._run(app, timeout_seconds, poll_seconds, cleanup)
        except _Terminated:
            logger.warning("SIGTERM (the run was cancelled): deleting SparkApplication %s/%s", namespace, name)
            self._delete(namespace, name)
            raise SystemExit(EXIT_ON_SIGTERM) from None
        except KeyboardInterrupt:
            logger.warning("interrupted: deleting SparkApplication %s/%s", namespace, name)
            self._delete(namespace, name)
            raise

    def _run(self, app: dict[str, Any], timeout_seconds: float, poll_seconds: float,
             cleanup: bool) -> dict[str, Any]:
        namespace, name = app["metadata"]["namespace"], app["metadata"]["name"]
        started = self._clock()
        adopted = self._start(app)
        last_state = None
        while True:
            current = self._get(namespace, name)
            if current is None:
                raise BatchRLError(f"SparkApplication {name} disappeared while running",
                                   where=f"namespace {namespace}",
                                   fix="someone deleted it, or its TTL is shorter than the run; retry")
            state = _state(current)
            if state != last_state:
                logger.info("SparkApplication %s/%s: %s", namespace, name, state or "PENDING")
                last_state = state
            if state == COMPLETED:
                break
            if state in FAILED_STATES:
                raise self._failure(current, state)
            if self._clock() - started > timeout_seconds:
                error = self._failure(current, f"still {state or 'PENDING'} after {timeout_seconds:.0f}s "
                                      "(timed out)", timed_out=True)
                if cleanup:
                    self._delete(namespace, name)
                raise error
            self._sleep(poll_seconds)
        if cleanup:
            self._delete(namespace, name)
        return {"name": name, "namespace": namespace, "state": COMPLETED, "adopted": adopted,
                "driver_pod": _driver_pod(current), "deleted": cleanup,
                "spark_application_id": current.get("status", {}).get("sparkApplicationId")}

    def _failure(self, current: dict[str, Any], state: str, timed_out: bool = False) -> BatchRLError:
        namespace, name = current["metadata"]["namespace"], current["metadata"]["name"]
        pod = _driver_pod(current)
        message = redact(current.get("status", {}).get("applicationState", {}).get("errorMessage") or "")
        tail = self.driver_log_tail(namespace, pod)
        what = f"Spark stage failed: SparkApplication {name} {'is' if timed_out else 'ended'} {state}"
        if message:
            what += f": {message}"
        what += f"\n  driver log (last {LOG_TAIL_LINES} lines of {pod}):\n" + "\n".join(
            f"    | {line}" for line in tail.splitlines())
        if timed_out:
            fix = f"raise --timeout-seconds or look at the driver: kubectl logs {pod} -n {namespace}"
        else:
            ttl = current.get("spec", {}).get("timeToLiveSeconds")
            kept = f"for {ttl}s (its timeToLiveSeconds)" if ttl is not None else "until you delete it"
            what += (f"\n  the SparkApplication is kept {kept}: full driver log: kubectl logs {pod} -n {namespace}; "
                     f"events and state: kubectl describe sparkapplication {name} -n {namespace}")
            fix = ("read the driver log above; SUBMISSION_FAILED usually means a wrong image, service account or "
                   f"missing RBAC (kubectl describe sparkapplication {name} -n {namespace}; `batchrl doctor`)")
        return BatchRLError(what, where=f"namespace {namespace}", fix=fix)


class _Terminated(BaseException):
    """Raised in the watching thread by the SIGTERM handler (a BaseException, like KeyboardInterrupt, so
    no ``except Exception`` on the way swallows it)."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`_Terminated` (only the main thread can install handlers;
    elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def step_pod() -> tuple[str, str] | None:
    """``(namespace, name)`` of the pod this process runs in: the namespace from the service-account
    file, the name from ``KFP_POD_NAME`` (set from ``metadata.name`` by the downward API in every KFP
    executor: kubeflow/pipelines ``backend/src/v2/compiler/argocompiler/common.go`` ``commonEnvs``) or
    else ``HOSTNAME`` (a pod's hostname is its name, cut to 63 characters); None outside a pod."""
    from batchrl.kube.sparkapp import pod_namespace

    namespace = pod_namespace()
    name = os.environ.get("KFP_POD_NAME") or os.environ.get("HOSTNAME")
    return (namespace, name) if namespace and name else None


def _state(app: dict[str, Any]) -> str:
    return (app.get("status") or {}).get("applicationState", {}).get("state") or ""


def _driver_pod(app: dict[str, Any] | None) -> str:
    app = app or {}
    pod = (app.get("status") or {}).get("driverInfo", {}).get("podName")
    return pod or f"{app.get('metadata', {}).get('name', 'unknown')}-driver"


def run_stage_on_kubernetes(stage: str, input_uri: str, output_uri: str, stage_options: dict[str, Any],
                            options: Any, api_client: Any = None) -> dict[str, Any]:
    """Run one Spark stage as a SparkApplication; ``options`` is a :class:`SparkKubernetesOptions`.

    Inside a pod (a KFP step) the application is owned by that pod (:func:`step_pod`)."""
    from batchrl.kube.sparkapp import build_spark_application, stage_payload

    payload = stage_payload(stage, input_uri, output_uri, stage_options)
    launcher = SparkApplicationLauncher(api_client if api_client is not None else kubernetes_api_client())
    pod = step_pod()
    owner = launcher.read_pod(*pod) if pod else None
    app = build_spark_application(payload, options, owner=owner)
    summary = launcher.run(app, timeout_seconds=options.timeout_seconds, poll_seconds=options.poll_seconds,
                           cleanup=options.cleanup)
    return {"stage": stage, "input": input_uri, "output": output_uri, "spark_application": summary}


def run_stage_for_pipeline(stage: str, input_uri: str, output_uri: str, stage_options: dict[str, Any],
                           kubernetes_options: dict[str, Any] | None, api_client: Any = None) -> dict[str, Any]:
    """What a KFP component does with ``spark_mode="kubernetes"``: ``kubernetes_options`` is the
    pipeline's dict parameter (the fields of :class:`SparkKubernetesOptions`; unknown keys are errors)."""
    from pydantic import ValidationError

    from batchrl.kube.sparkapp import SparkKubernetesOptions

    try:
        options = SparkKubernetesOptions.model_validate(kubernetes_options or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise BatchRLError(f"invalid Spark-on-Kubernetes options: {problems}",
                           where=f"{stage} component, parameter spark_kubernetes",
                           fix=f"use the fields of SparkKubernetesOptions: "
                               f"{', '.join(SparkKubernetesOptions.model_fields)}") from None
    return run_stage_on_kubernetes(stage, input_uri, output_uri, stage_options, options, api_client=api_client)
