"""BatchRLSchedule objects for the fake Kubernetes API (an extension of :class:`fakes.kube_api.FakeKubernetes`).

What the real API server does for a namespaced custom resource with a status subresource, as far as the
reconciler sees it: list (with a resourceVersion), watch from a resourceVersion (the events since, then
the stream ends as after ``timeoutSeconds``), merge-patch of the object (``metadata.finalizers``, guarded by
``metadata.resourceVersion``: a stale one is HTTP 409) and of ``/status``; a delete of an object with
finalizers only sets ``deletionTimestamp``, and the object goes when its last finalizer is removed.
``generation`` moves only when ``spec`` changes; ``metadata.resourceVersion`` on every write.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any
from urllib.parse import parse_qs

_PATH = re.compile(r"^/apis/batchrl\.io/v1alpha1/namespaces/([^/]+)/batchrlschedules(?:/([^/]+))?(/status)?$")


def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                  "reason": reason, "code": code}


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class ScheduleObjects:
    """Stored BatchRLSchedules, their event history, and switches for failures."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.version = 100
        self.installed = True  # False: the CRD is not installed (HTTP 404)
        self.deny_status: int | None = None  # e.g. 403 on status writes

    # -- what kubectl would do
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        stored = self.objects.get(key)
        if stored is None:
            stored = {"apiVersion": "batchrl.io/v1alpha1", "kind": "BatchRLSchedule",
                      "metadata": {**copy.deepcopy(meta), "generation": 1, "uid": f"uid-{meta['name']}"},
                      "spec": copy.deepcopy(obj.get("spec") or {})}
            self.objects[key] = stored
            return self._event("ADDED", stored)
        if stored["spec"] != obj.get("spec"):
            stored["spec"] = copy.deepcopy(obj.get("spec") or {})
            stored["metadata"]["generation"] += 1
        return self._event("MODIFIED", stored)

    def delete(self, namespace: str, name: str) -> None:
        stored = self.objects[(namespace, name)]
        if stored["metadata"].get("finalizers"):
            stored["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            self._event("MODIFIED", stored)
        else:
            del self.objects[(namespace, name)]
            self._event("DELETED", stored)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((namespace, name))

    def _event(self, kind: str, stored: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.events.append((self.version, kind, copy.deepcopy(stored)))
        return stored

    # -- the HTTP side (called by FakeKubernetes with its lock held)
    def handle(self, method: str, parsed: Any, body: Any) -> tuple[int, Any] | None:
        match = _PATH.match(parsed.path)
        if not match:
            return None
        if not self.installed:
            return _status(404, "NotFound", "the server could not find the requested resource")
        namespace, name, status = match.groups()
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        if name is None and method == "GET":
            if query.get("watch") in ("true", "True", "1"):
                since = int(query.get("resourceVersion") or 0)
                lines = [json.dumps({"type": kind, "object": obj}) for rv, kind, obj in self.events
                         if rv > since and obj["metadata"]["namespace"] == namespace]
                return 200, "\n".join(lines) + ("\n" if lines else "")
            items = [copy.deepcopy(o) for (ns, _), o in sorted(self.objects.items()) if ns == namespace]
            return 200, {"apiVersion": "batchrl.io/v1alpha1", "kind": "BatchRLScheduleList",
                         "metadata": {"resourceVersion": str(self.version)}, "items": items}
        stored = self.objects.get((namespace, name or ""))
        if stored is None:
            return _status(404, "NotFound", f'batchrlschedules.batchrl.io "{name}" not found')
        if method == "GET":
            return 200, stored
        if method != "PATCH":
            return _status(405, "MethodNotAllowed", method)
        if status:
            if self.deny_status:
                return _status(self.deny_status, "Forbidden", "cannot patch resource batchrlschedules/status")
            _merge(stored.setdefault("status", {}), body.get("status") or {})
            return 200, self._event("MODIFIED", stored)
        meta_patch = dict(body.get("metadata") or {})
        wanted_rv = meta_patch.pop("resourceVersion", None)
        if wanted_rv is not None and wanted_rv != stored["metadata"]["resourceVersion"]:
            return _status(409, "Conflict", "the object has been modified; please apply your changes to the "
                                            "latest version and try again")
        if set(body) - {"metadata"} or set(meta_patch) - {"finalizers"}:
            raise AssertionError(f"the reconciler patches only metadata.finalizers, not {body}")
        _merge(stored["metadata"], meta_patch)
        if stored["metadata"].get("deletionTimestamp") and not stored["metadata"].get("finalizers"):
            del self.objects[(namespace, name)]
            self._event("DELETED", stored)
            return 200, stored
        return 200, self._event("MODIFIED", stored)
