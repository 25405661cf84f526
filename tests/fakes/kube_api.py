"""A tiny Kubernetes API server on 127.0.0.1: SparkApplications (create/get/patch/delete), pod logs, ConfigMap
lists; and (``_extra_route``) pods, secrets, service accounts, nodes, API discovery and SubjectAccessReviews.

Only the endpoints batchrl uses exist. Each created SparkApplication walks through the states
in ``script`` (one per GET), so a test decides how the "operator" behaves. Every request is recorded.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.fakes.kube_extra import KubeExtras, status

_APPS = re.compile(r"^/apis/sparkoperator\.k8s\.io/v1beta2/namespaces/([^/]+)/sparkapplications(?:/([^/]+))?$")
_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
_CONFIGMAPS = re.compile(r"^/api/v1/namespaces/([^/]+)/configmaps$")


_status = status


class FakeKubernetes(KubeExtras):
    """State shared with the handler: stored objects, state scripts, pod logs, the request log."""

    def __init__(self) -> None:
        self.apps: dict[tuple[str, str], dict[str, Any]] = {}
        self.scripts: dict[str, list[str]] = {}
        self.default_script: list[str] = ["SUBMITTED", "RUNNING", "COMPLETED"]
        self.error_message: str = ""
        self.logs: dict[str, str] = {}
        self.configmaps: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.deny_create: int | None = None
        # --- schedules (i20): more routes, each ``handle(method, parsed_url, body) -> (code, body) | None``,
        # e.g. fakes.kube_schedules.ScheduleObjects; consulted before the 404 fallback.
        self.extensions: list[Any] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._init_extra()

    # -- helpers for tests
    def put(self, app: dict[str, Any], state: str) -> None:
        """Store ``app`` as if an earlier attempt had created it and it reached ``state``."""
        ns, name = app["metadata"]["namespace"], app["metadata"]["name"]
        stored = json.loads(json.dumps(app))
        stored["status"] = {"applicationState": {"state": state}, "driverInfo": {"podName": f"{name}-driver"}}
        self.apps[(ns, name)] = stored
        self.scripts[name] = [state]

    def calls(self, method: str) -> list[str]:
        return [path for m, path in self.requests if m == method]

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeKubernetes:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                parsed = urlparse(self.path)
                with state.lock:
                    state.requests.append((method, self.path))
                    body = None
                    if method in ("POST", "PATCH"):
                        length = int(self.headers.get("Content-Length") or 0)
                        body = json.loads(self.rfile.read(length) or b"{}")
                        state.bodies.append(body)
                    apps = _APPS.match(parsed.path)
                    log = _LOG.match(parsed.path)
                    configmaps = _CONFIGMAPS.match(parsed.path)
                    if configmaps and method == "GET":
                        selector = parse_qs(parsed.query).get("labelSelector", [""])[0]
                        wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
                        items = [c for c in state.configmaps if c["metadata"].get("namespace") == configmaps.group(1)
                                 and all(c["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]
                        self._send(200, {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {},
                                         "items": items})
                    elif apps:
                        self._apps(method, apps.group(1), apps.group(2), body)
                    elif log and method == "GET":
                        pod = log.group(2)
                        if pod not in state.logs:
                            self._send(404, _status(404, "NotFound", f'pods "{pod}" not found'))
                            return
                        lines = state.logs[pod].splitlines()
                        tail = int(parse_qs(parsed.query).get("tailLines", [len(lines)])[0])
                        self._send(200, "\n".join(lines[-tail:]) + "\n", "text/plain")
                    else:
                        handled = next((r for ext in state.extensions
                                        if (r := ext.handle(method, parsed, body)) is not None), None)
                        if handled is None:  # the doctor's routes (kube_extra), else 404
                            handled = state._extra_route(method, parsed.path, parse_qs(parsed.query), body)
                        self._send(*handled)

            def _apps(self, method: str, ns: str, name: str | None, body: Any) -> None:
                if method == "POST" and name is None:
                    if state.deny_create:
                        self._send(state.deny_create, _status(state.deny_create, "Forbidden", "denied"))
                        return
                    key = (ns, body["metadata"]["name"])
                    if key in state.apps:
                        self._send(409, _status(409, "AlreadyExists", f"{key[1]} already exists"))
                        return
                    stored = json.loads(json.dumps(body))
                    stored["metadata"]["uid"] = f"uid-{len(state.requests)}"
                    state.apps[key] = stored
                    state.scripts.setdefault(key[1], list(state.default_script))
                    self._send(201, stored)
                elif method == "GET" and name:
                    app = state.apps.get((ns, name))
                    if app is None:
                        self._send(404, _status(404, "NotFound", f"{name} not found"))
                        return
                    script = state.scripts.get(name) or ["RUNNING"]
                    current = script.pop(0) if len(script) > 1 else script[0]
                    status = {"applicationState": {"state": current},
                              "driverInfo": {"podName": f"{name}-driver"},
                              "sparkApplicationId": f"spark-{name}"}
                    if current in ("FAILED", "SUBMISSION_FAILED") and state.error_message:
                        status["applicationState"]["errorMessage"] = state.error_message
                    app["status"] = status
                    self._send(200, app)
                elif method == "DELETE" and name:
                    if state.apps.pop((ns, name), None) is None:
                        self._send(404, _status(404, "NotFound", f"{name} not found"))
                        return
                    state.scripts.pop(name, None)
                    self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                elif method == "PATCH" and name:  # JSON merge patch of metadata.ownerReferences only
                    app = state.apps.get((ns, name))
                    if app is None:
                        self._send(404, _status(404, "NotFound", f"{name} not found"))
                        return
                    app["metadata"].update(body.get("metadata", {}))
                    self._send(200, app)
                else:
                    self._send(405, _status(405, "MethodNotAllowed", method))

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

            def do_PATCH(self) -> None:
                self._route("PATCH")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def api_client(self):
        """A real ``kubernetes`` ApiClient pointed at this server."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        return client.ApiClient(config)

