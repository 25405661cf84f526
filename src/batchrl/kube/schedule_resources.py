"""``BatchRLSchedule`` custom resources: read as :class:`ScheduleSpec`, their finalizer, status and watch.

The CRD is ``manifests/base/crds/batchrlschedules.yaml`` (group ``batchrl.io``, version ``v1alpha1``).
The API server validates the spec (cron pattern, types, bounds, unknown keys under ``kubectl``'s default
strict field validation); the reconciler reads the objects, adds the :data:`FINALIZER` so a deleted
schedule's recurring run is removed before the object goes, and writes what it did to the ``status``
subresource: the recurring run id, the pinned pipeline version, the last run and a ``Ready`` condition.
A cluster without the CRD (HTTP 404 on the list) simply has no such objects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from batchrl.errors import BatchRLError
from batchrl.kube.schedules import ScheduleSpec, manifest_documents

logger = logging.getLogger(__name__)

GROUP = "batchrl.io"
VERSION = "v1alpha1"
PLURAL = "batchrlschedules"
KIND = "BatchRLSchedule"
FINALIZER = "batchrl.io/recurring-run"

#: the CRD's spec keys -> ScheduleSpec fields (the recurring run is named after the object)
SPEC_FIELDS = {"cron": "cron", "enabled": "enabled", "pipeline": "pipeline", "pipelineVersion": "pipeline_version",
               "experiment": "experiment", "maxConcurrency": "max_concurrency", "noCatchup": "no_catchup",
               "parameters": "parameters", "pipelineRoot": "pipeline_root", "serviceAccount": "service_account",
               "description": "description"}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ScheduleResource:
    """One ``BatchRLSchedule`` as listed: its identity, its spec (or why it cannot be read), its status."""

    name: str
    namespace: str
    generation: int
    resource_version: str
    finalizers: tuple[str, ...]
    deleting: bool
    spec: ScheduleSpec | None
    error: str | None = None
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{KIND} {self.namespace}/{self.name}"


def resource_from_object(obj: dict[str, Any], default_version: str) -> ScheduleResource:
    """A :class:`ScheduleResource`; ``spec.pipelineVersion`` defaults to ``default_version`` (the shipped one)."""
    meta = obj.get("metadata") or {}
    spec, error = None, None
    raw = dict(obj.get("spec") or {})
    unknown = sorted(set(raw) - set(SPEC_FIELDS))
    if unknown:
        error = f"unknown key(s) in spec: {unknown}; known: {', '.join(SPEC_FIELDS)}"
    else:
        values = {SPEC_FIELDS[key]: value for key, value in raw.items() if value is not None}
        values.setdefault("pipeline_version", default_version)
        try:
            spec = ScheduleSpec(name=meta.get("name", ""), **values)
        except ValidationError as exc:
            error = "invalid spec: " + "; ".join(
                f"{'.'.join(_camel(str(p)) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return ScheduleResource(
        name=meta.get("name", ""), namespace=meta.get("namespace", ""), generation=int(meta.get("generation") or 0),
        resource_version=str(meta.get("resourceVersion") or ""), finalizers=tuple(meta.get("finalizers") or ()),
        deleting=bool(meta.get("deletionTimestamp")), spec=spec, error=error, status=dict(obj.get("status") or {}))


def resources_from_files(paths: list[str], default_version: str) -> list[ScheduleResource]:
    """The BatchRLSchedule objects in YAML files (a preview: no status, no finalizer)."""
    return sorted((resource_from_object(doc, default_version) for doc in manifest_documents(paths)
                   if doc.get("kind") == KIND and str(doc.get("apiVersion", "")).startswith(GROUP + "/")),
                  key=lambda r: r.name)


def _camel(name: str) -> str:
    return next((key for key, value in SPEC_FIELDS.items() if value == name), name)


def _api_error(action: str, exc: Any, namespace: str) -> BatchRLError:
    fix = "check the reconciler's log"
    if exc.status in (401, 403):
        fix = ("the reconciler's service account needs this verb on batchrlschedules (Role "
               "batchrl-schedule-reconciler in manifests/base/schedule-reconciler.yaml)")
    return BatchRLError(f"could not {action}: HTTP {exc.status} {exc.reason}", where=f"namespace {namespace}",
                        fix=fix)


def list_schedule_resources(api_client: Any, namespace: str,
                            default_version: str) -> tuple[list[ScheduleResource] | None, str]:
    """The namespace's ``BatchRLSchedule`` objects and the list's resourceVersion (to watch from);
    ``None`` when the CRD is not installed."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        result = client.CustomObjectsApi(api_client).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    except ApiException as exc:
        if exc.status == 404:
            return None, ""
        raise _api_error("list BatchRLSchedules", exc, namespace) from None
    items = [resource_from_object(item, default_version) for item in result.get("items") or []]
    return sorted(items, key=lambda r: r.name), str((result.get("metadata") or {}).get("resourceVersion") or "")


def set_finalizer(api_client: Any, resource: ScheduleResource, present: bool) -> None:
    """Add or remove :data:`FINALIZER` (a merge patch guarded by the object's resourceVersion)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    finalizers = [f for f in resource.finalizers if f != FINALIZER] + ([FINALIZER] if present else [])
    body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource.resource_version}}
    try:
        client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            GROUP, VERSION, resource.namespace, PLURAL, resource.name, body)
    except ApiException as exc:
        if exc.status in (404, 409):  # gone, or changed since listed: the next pass sees the new object
            return
        raise _api_error(f"update the finalizer of {resource.where}", exc, resource.namespace) from None


def write_status(api_client: Any, resource: ScheduleResource, status: dict[str, Any]) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        client.CustomObjectsApi(api_client).patch_namespaced_custom_object_status(
            GROUP, VERSION, resource.namespace, PLURAL, resource.name, {"status": status})
    except ApiException as exc:
        if exc.status == 404:
            return
        raise _api_error(f"write the status of {resource.where}", exc, resource.namespace) from None


#: why a schedule is not Ready, from the error's text (KFP client errors say "could not reach" / "HTTP 403")
def failure_reason(message: str) -> str:
    if "could not reach" in message:
        return "KFPUnreachable"
    if "HTTP 401" in message or "HTTP 403" in message:
        return "PermissionDenied"
    if "parameter" in message:
        return "InvalidParameters"
    if "pipeline version" in message:
        return "PipelineVersionMissing"
    return "ReconcileFailed"


def ready_condition(resource: ScheduleResource, error: str | None) -> dict[str, Any]:
    """The ``Ready`` condition; its lastTransitionTime moves only when its status changes."""
    status = "False" if error else "True"
    old: dict[str, Any] = next((c for c in resource.status.get("conditions") or () if c.get("type") == "Ready"), {})
    return {"type": "Ready", "status": status,
            "reason": failure_reason(error) if error else "Reconciled",
            "message": error or "the KFP recurring run matches the spec",
            "observedGeneration": resource.generation,
            "lastTransitionTime": old["lastTransitionTime"] if old.get("status") == status else now()}


def needs_reconcile(obj: dict[str, Any]) -> bool:
    """A watch event worth a pass: a new spec, a deletion to finish, or no finalizer yet (own status
    writes change neither, so they do not loop)."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return FINALIZER in (meta.get("finalizers") or ())
    observed = (obj.get("status") or {}).get("observedGeneration")
    return observed != meta.get("generation") or FINALIZER not in (meta.get("finalizers") or ())


def wait_for_change(api_client: Any, namespace: str, resource_version: str, timeout_seconds: int) -> bool:
    """Watch the namespace's BatchRLSchedules from ``resource_version`` until one needs a pass (True) or
    ``timeout_seconds`` pass (False: the periodic resync)."""
    import urllib3
    from kubernetes import client, watch
    from kubernetes.client.exceptions import ApiException

    stream = watch.Watch()
    try:
        for event in stream.stream(client.CustomObjectsApi(api_client).list_namespaced_custom_object, GROUP,
                                   VERSION, namespace, PLURAL, resource_version=resource_version,
                                   timeout_seconds=timeout_seconds):
            if event["type"] == "ERROR" or (event["type"] != "DELETED" and needs_reconcile(event["object"])):
                return True
    except (ApiException, urllib3.exceptions.HTTPError) as exc:  # 410 Gone, a dropped connection: relist
        logger.info("watch of %s ended: %s", PLURAL, getattr(exc, "status", None) or exc)
        return True
    finally:
        stream.stop()
    return False
