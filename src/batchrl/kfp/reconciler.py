"""The schedule reconciler: one pass makes KFP's managed recurring runs match the applied schedules.

Two sources, one reconciler: ``BatchRLSchedule`` objects (:mod:`batchrl.kube.schedule_resources`,
with status and a finalizer) and, for namespaces where a CRD cannot be installed, ConfigMaps labelled
``batchrl.io/schedule=true`` (:mod:`batchrl.kube.schedules`). A name defined by both is the object's.

Before anything is created, each schedule's pipeline version is resolved: when it is missing from KFP
and is the one this reconciler ships (``$BATCHRL_PIPELINE_FILE`` in the image, version = the package
version), its parameters are checked against that compiled pipeline and it is uploaded; when it exists,
the parameters are checked against the spec KFP stored for it. A schedule that fails any check keeps
its existing recurring run (never deleted for a typo) and reports why. Then :func:`plan` decides the
creates, replaces, enables, disables and deletes, the calls are made, and each object's status is written.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchrl import __version__
from batchrl.errors import BatchRLError
from batchrl.kfp import client as kfp
from batchrl.kfp.local_run import check_parameter_names, spec_inputs
from batchrl.kube import schedule_resources as resources
from batchrl.kube.schedules import Manifests, ScheduleSpec, plan

logger = logging.getLogger(__name__)

PIPELINE_FILE_ENV = "BATCHRL_PIPELINE_FILE"


class ShippedPipeline:
    """The compiled pipeline this reconciler can upload (``$BATCHRL_PIPELINE_FILE`` in the image), as
    version ``version`` (the package version). Read only when a schedule needs it."""

    def __init__(self, pipeline_file: str | None = None, version: str = __version__) -> None:
        self.pipeline_file = pipeline_file or os.environ.get(PIPELINE_FILE_ENV)
        self.version = version

    @functools.cached_property
    def package(self) -> str:
        return kfp.pipeline_package(self.pipeline_file)

    @functools.cached_property
    def name(self) -> str:
        return kfp.pipeline_name_of(self.package)

    def provides(self, pipeline: str, version: str) -> bool:
        return version == self.version and pipeline == self.name

    def inputs(self) -> dict[str, bool]:
        import yaml

        with open(self.package, encoding="utf-8") as fh:
            return spec_inputs(next(yaml.safe_load_all(fh)))


@dataclass
class Sources:
    """What one pass reads: the ConfigMap schedules and the BatchRLSchedule objects (None: no CRD)."""

    manifests: Manifests
    objects: list[resources.ScheduleResource] | None = None
    resource_version: str = ""


@dataclass
class _Pass:
    client: Any
    namespace: str | None
    shipped: ShippedPipeline
    dry_run: bool
    host: str | None
    versions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    uploaded: list[str] = field(default_factory=list)

    def version_for(self, spec: ScheduleSpec, where: str) -> dict[str, Any]:
        """Resolve (uploading the shipped one when missing) and check the parameters against it."""
        key = (spec.pipeline, spec.pipeline_version)
        if key not in self.versions:
            found = kfp.lookup_pipeline_version(self.client, *key, host=self.host)
            if found is not None:
                stored = kfp.pipeline_version_spec(self.client, found[0], found[1], self.host)
                self.versions[key] = {"pipeline_id": found[0], "version_id": found[1], "inputs": spec_inputs(stored),
                                      "pipeline_root": stored.get("defaultPipelineRoot")}
            elif self.shipped.provides(*key):
                self.versions[key] = {"pipeline_id": None, "version_id": None, "inputs": self.shipped.inputs(),
                                      "pipeline_root": kfp.pipeline_root_of(self.shipped.package)}
            else:
                raise BatchRLError(
                    f"pipeline version '{spec.pipeline_version}' of pipeline '{spec.pipeline}' is not in KFP, and the "
                    f"only version this reconciler ships (and uploads) is '{self.shipped.version}'",
                    where=where, fix="upload it (`batchrl pipeline upload --version NAME`), or leave "
                    "pipelineVersion out to use the shipped one")
        version = self.versions[key]
        check_parameter_names(version["inputs"], spec.parameters, where)
        if version["version_id"] is None and not self.dry_run:
            done = kfp.ensure_pipeline_version(self.client, self.shipped.package, spec.pipeline,
                                               spec.pipeline_version, self.host)
            version.update(pipeline_id=done["pipeline_id"], version_id=done["version_id"])
            self.uploaded.append(f"{spec.pipeline}@{spec.pipeline_version}")
        return version


def reconcile(connect: Callable[[], Any], sources: Sources, shipped: ShippedPipeline, namespace: str | None = None,
              kube_api: Any = None, dry_run: bool = False, host: str | None = None) -> dict[str, Any]:
    """One pass; returns what was done and the errors by schedule. ``connect`` makes the KFP client."""
    objects = sources.objects or []
    errors: dict[str, str] = dict(sources.manifests.errors)
    errors.update({o.name: o.error for o in objects if o.error and not o.deleting})
    if kube_api is not None and not dry_run:
        for obj in objects:
            if not obj.deleting and resources.FINALIZER not in obj.finalizers:
                resources.set_finalizer(kube_api, obj, present=True)
    try:
        work = _Pass(connect(), namespace, shipped, dry_run, host)
        existing = kfp.existing_runs(work.client, namespace, host)
    except BatchRLError as exc:  # KFP unreachable or refusing: every schedule says so
        for obj in objects:
            errors.setdefault(obj.name, exc.message)
        _write_statuses(kube_api, objects, {}, errors, None, namespace, host, dry_run)
        return {"namespace": namespace, "dry_run": dry_run, "actions": [], "uploaded": [],
                "errors": [{"schedule": n, "error": e} for n, e in sorted(errors.items())]}

    object_names = {o.name for o in objects if not o.deleting}
    candidates = [(o.spec, o.where) for o in objects if o.spec is not None and not o.deleting]
    for spec in sources.manifests.specs:
        if spec.name in object_names:
            errors[spec.name + " (ConfigMap)"] = f"a {resources.KIND} named '{spec.name}' defines this schedule"
        else:
            candidates.append((spec, f"ConfigMap {namespace}/{spec.name}"))
    desired, versions = [], {}
    for spec, where in candidates:
        try:
            versions[spec.name] = work.version_for(spec, where)
            desired.append(spec)
        except BatchRLError as exc:
            errors[spec.name] = exc.message
    actions = plan(tuple(sorted(desired, key=lambda s: s.name)), existing, protected=frozenset(errors))
    done, run_ids = [], {}
    for action in actions:
        record = {"action": action.kind, "schedule": action.name, "id": action.run_id}
        try:
            if dry_run or action.kind == "keep":
                pass
            elif action.kind == "delete":
                kfp.delete_schedule(work.client, action.existing_id, host)
            elif action.kind == "enable":
                kfp.enable_schedule(work.client, action.existing_id, host)
            elif action.kind == "disable":
                kfp.disable_schedule(work.client, action.existing_id, host)
            else:  # create / replace (the old ones were deleted by the preceding actions)
                record["id"] = kfp.create_schedule(work.client, action.desired, namespace, managed=True,
                                                   version=versions[action.name], host=host)["id"]
            if action.kind != "delete":
                run_ids[action.name] = record["id"]
            done.append(record)
        except BatchRLError as exc:
            errors[action.name] = exc.message
    for obj in objects:
        if obj.deleting and obj.name not in errors and kube_api is not None and not dry_run:
            resources.set_finalizer(kube_api, obj, present=False)
    shown = [o for o in objects if not o.deleting or o.name in errors]  # a stuck deletion says why
    _write_statuses(kube_api, shown, {n: (versions.get(n), run_ids.get(n)) for n in run_ids}, errors, work.client,
                    namespace, host, dry_run)
    return {"namespace": namespace, "dry_run": dry_run, "actions": done, "uploaded": work.uploaded,
            "errors": [{"schedule": n, "error": e} for n, e in sorted(errors.items())]}


def _write_statuses(kube_api: Any, objects: list[resources.ScheduleResource], pinned: dict[str, Any],
                    errors: dict[str, str], client: Any, namespace: str | None, host: str | None,
                    dry_run: bool) -> None:
    if kube_api is None or dry_run:
        return
    for obj in objects:
        version, run_id = pinned.get(obj.name, (None, obj.status.get("recurringRunId")))
        status: dict[str, Any] = {"observedGeneration": obj.generation, "lastReconcileTime": resources.now(),
                                  "recurringRunId": run_id,
                                  "conditions": [resources.ready_condition(obj, errors.get(obj.name))]}
        if version is not None and obj.spec is not None:
            status.update(pipeline=obj.spec.pipeline, pipelineVersion=obj.spec.pipeline_version,
                          pipelineVersionId=version["version_id"])
        if run_id and client is not None:
            try:
                status["lastRun"] = kfp.last_run(client, run_id, namespace, host)
            except BatchRLError as exc:
                logger.warning("%s: %s", obj.where, exc.message)
        resources.write_status(kube_api, obj, status)


def read_sources(kube_api: Any, namespace: str, shipped: ShippedPipeline) -> Sources:
    from batchrl.kube.schedules import read_schedule_manifests

    objects, resource_version = resources.list_schedule_resources(kube_api, namespace, shipped.version)
    return Sources(read_schedule_manifests(kube_api, namespace), objects, resource_version)


def run_forever(connect: Callable[[], Any], kube_api: Any, namespace: str, shipped: ShippedPipeline,
                interval_seconds: int, host: str | None = None, report: Callable[[dict[str, Any]], None] = print,
                passes: int | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
    """Reconcile, then wait for a BatchRLSchedule change (a watch) or ``interval_seconds`` (the resync
    that also picks up ConfigMap edits and new runs in KFP); ``passes`` bounds the loop for tests."""
    done = 0
    while passes is None or done < passes:
        done += 1
        try:
            sources = read_sources(kube_api, namespace, shipped)
            report(reconcile(connect, sources, shipped, namespace, kube_api, host=host))
        except BatchRLError as exc:  # the Kubernetes API refused: say so and retry at the next resync
            report({"namespace": namespace, "errors": [{"schedule": "*", "error": exc.message}]})
            sleep(interval_seconds)
            continue
        if passes is not None and done >= passes:
            break
        if sources.objects is None:
            sleep(interval_seconds)
        else:
            resources.wait_for_change(kube_api, namespace, sources.resource_version, interval_seconds)
