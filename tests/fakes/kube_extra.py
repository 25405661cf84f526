"""More of the fake Kubernetes API (:mod:`fakes.kube_api`): the step's own pod, secrets, service accounts,
nodes, API discovery and SubjectAccessReviews, for the launcher's ownerReference and ``batchrl doctor``.

The authorizer is ``granted``: a set of ``(user, namespace, group, resource, subresource, verb)``
tuples, namespace ``""`` for cluster scope; ``sar_forbidden`` makes creating a SubjectAccessReview
itself a 403 (a user who may not ask).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import yaml

_POD = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)$")
_NAMED = re.compile(r"^/api/v1/namespaces/([^/]+)/(secrets|serviceaccounts)/([^/]+)$")
SAR_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A Kubernetes ``Status`` error body."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class KubeExtras:
    """State and routes mixed into :class:`fakes.kube_api.FakeKubernetes`."""

    url: str

    def _init_extra(self) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.service_accounts: set[tuple[str, str]] = set()
        self.nodes: list[dict[str, Any]] = []
        self.api_groups: dict[str, list[str]] = {}
        self.granted: set[tuple[str, str, str, str, str, str]] = set()
        self.sar_forbidden = False
        self.reviews: list[dict[str, Any]] = []

    def add_pod(self, namespace: str, name: str, uid: str) -> dict[str, Any]:
        """Store a pod (what the step's own pod looks like to a GET)."""
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "uid": uid},
               "spec": {"containers": [{"name": "main", "image": "x"}]}}
        self.pods[(namespace, name)] = pod
        return pod

    def add_secret(self, namespace: str, name: str, values: dict[str, str]) -> None:
        self.secrets[(namespace, name)] = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}

    def write_kubeconfig(self, path: Any, namespace: str | None = None) -> str:
        """A kubeconfig file whose current context is this server; returns its path."""
        context: dict[str, Any] = {"cluster": "fake", "user": "me"}
        if namespace:
            context["namespace"] = namespace
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "contexts": [{"name": "fake", "context": context}],
            "users": [{"name": "me", "user": {"token": "kube-token-value-123"}}]}))
        return str(path)

    def _extra_route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        pod = _POD.match(path)
        named = _NAMED.match(path)
        if pod and method == "GET":
            found = self.pods.get((pod.group(1), pod.group(2)))
            return (200, found) if found else (404, status(404, "NotFound", f'pods "{pod.group(2)}" not found'))
        if named and method == "GET":
            ns, kind, name = named.groups()
            if kind == "secrets" and (ns, name) in self.secrets:
                return 200, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
                             "type": "Opaque", "data": self.secrets[(ns, name)]}
            if kind == "serviceaccounts" and (ns, name) in self.service_accounts:
                return 200, {"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": name, "namespace": ns}}
            return 404, status(404, "NotFound", f'{kind} "{name}" not found')
        if path == "/api/v1/nodes" and method == "GET":
            return 200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": self.nodes}
        if path in ("/apis", "/apis/") and method == "GET":
            groups = [{"name": group, "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                       "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]}}
                      for group, versions in self.api_groups.items()]
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        if path == SAR_PATH and method == "POST":
            if self.sar_forbidden:
                return 403, status(403, "Forbidden", "subjectaccessreviews.authorization.k8s.io is forbidden")
            self.reviews.append(body)
            spec = body["spec"]
            attrs = spec.get("resourceAttributes", {})
            key = (spec.get("user"), attrs.get("namespace", ""), attrs.get("group", ""), attrs.get("resource"),
                   attrs.get("subresource", ""), attrs.get("verb"))
            return 201, {**body, "status": {"allowed": key in self.granted}}
        return 404, status(404, "NotFound", f"no route {method} {path}")
