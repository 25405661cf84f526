"""A tiny Kubeflow Pipelines v2beta1 API server on 127.0.0.1 for the endpoints batchrl uses.

healthz; pipelines (list by display_name, upload, upload_version, list versions); experiments (list,
create); runs (create); recurring runs (create, list with paging, get, enable, disable, delete). Every
request (method, path, headers, body) is recorded so tests can check what the real ``kfp`` client sent.
"""

from __future__ import annotations

import json
import re
import threading
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

API = "/apis/v2beta1"


def _matches(item: dict[str, Any], filter_json: str | None) -> bool:
    if not filter_json:
        return True
    for predicate in json.loads(filter_json).get("predicates", []):
        if predicate.get("operation") in ("EQUALS", 1) and item.get(predicate["key"]) != predicate.get("stringValue",
                                                                                                       predicate.get("string_value")):
            return False
    return True


class FakeKFP:
    def __init__(self) -> None:
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.recurring: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.uploads: dict[str, bytes] = {}
        self.fail_next: tuple[int, str] | None = None
        self.page_size_cap = 2  # forces paging in list calls
        self.tag_name = "2.15.0"  # issue 14 (batchrl doctor): the version the v1beta1 healthz reports
        self.lock = threading.Lock()
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None

    def _id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter:04d}"

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_recurring(self, name: str, description: str = "", enabled: bool = True, cron: str = "0 0 1 * * *") -> str:
        rid = self._id("rr")
        self.recurring[rid] = {"recurring_run_id": rid, "display_name": name, "description": description,
                               "mode": "ENABLE" if enabled else "DISABLE", "max_concurrency": "1",
                               "no_catchup": True, "trigger": {"cron_schedule": {"cron": cron}},
                               "experiment_id": "exp-x", "status": "ENABLED"}
        return rid

    def calls(self, method: str | None = None) -> list[str]:
        return [f"{r['method']} {r['path']}" for r in self.requests if method in (None, r["method"])]

    # ------------------------------------------------------------ dispatch

    def handle(self, method: str, url: str, headers: Any, raw: bytes) -> tuple[int, Any]:
        parsed = urlparse(url)
        path, query = parsed.path, {k: v[0] for k, v in parse_qs(parsed.query).items()}
        body: Any = None
        if raw and headers.get("Content-Type", "").startswith("application/json"):
            body = json.loads(raw)
        self.requests.append({"method": method, "path": path, "query": query, "body": body,
                              "authorization": headers.get("Authorization")})
        if self.fail_next:
            code, message = self.fail_next
            self.fail_next = None
            return code, {"error": message, "code": code, "message": message}
        # -- issue 14 (batchrl doctor): the v1beta1 healthz carries the backend's version (backend/src/apiserver/main.go)
        if path == "/apis/v1beta1/healthz":
            return 200, {"commit_sha": "abc1234", "tag_name": self.tag_name, "multi_user": False}
        if path == f"{API}/healthz":
            return 200, {"multi_user": False, "pipeline_store": "database"}
        if path == f"{API}/pipelines" and method == "GET":
            # like the API server: a namespace lists that namespace's pipelines, none the shared ones
            items = [p for p in self.pipelines.values() if _matches(p, query.get("filter"))
                     and p["namespace"] == query.get("namespace", "")]
            return 200, {"pipelines": items, "total_size": len(items)}
        if path == f"{API}/pipelines/upload" and method == "POST":
            pid = self._id("pl")
            name = query.get("name") or query.get("display_name")
            self.pipelines[pid] = {"pipeline_id": pid, "display_name": name, "name": name,
                                   "namespace": query.get("namespace", "")}
            self.uploads[pid] = self._file(headers, raw)
            self._add_version(pid, name)
            return 200, self.pipelines[pid]
        if path == f"{API}/pipelines/upload_version" and method == "POST":
            pid = query["pipelineid"]
            if pid not in self.pipelines:
                return 404, {"message": f"pipeline {pid} not found", "code": 5}
            version = self._add_version(pid, query["name"])
            self.uploads[version["pipeline_version_id"]] = self._file(headers, raw)
            return 200, version
        match = re.fullmatch(rf"{API}/pipelines/([^/]+)/versions", path)
        if match and method == "GET":
            items = [v for v in self.versions.values()
                     if v["pipeline_id"] == match.group(1) and _matches(v, query.get("filter"))]
            return 200, {"pipeline_versions": items, "total_size": len(items)}
        if path == f"{API}/experiments":
            if method == "GET":
                items = [e for e in self.experiments.values() if _matches(e, query.get("filter"))]
                return 200, {"experiments": items, "total_size": len(items)}
            eid = self._id("exp")
            self.experiments[eid] = {**body, "experiment_id": eid}
            return 200, self.experiments[eid]
        if path == f"{API}/runs" and method == "POST":
            rid = self._id("run")
            self.runs[rid] = {**body, "run_id": rid, "state": "PENDING"}
            return 200, self.runs[rid]
        if path == f"{API}/recurringruns":
            if method == "POST":
                rid = self._id("rr")
                self.recurring[rid] = {**body, "recurring_run_id": rid,
                                       "status": "ENABLED" if body.get("mode") == "ENABLE" else "DISABLED"}
                return 200, self.recurring[rid]
            items = sorted(self.recurring.values(), key=lambda r: r["recurring_run_id"])
            start = int(query.get("page_token") or 0)
            size = min(int(query.get("page_size") or 10), self.page_size_cap)
            page = items[start:start + size]
            token = str(start + size) if start + size < len(items) else ""
            return 200, {"recurringRuns": page, "total_size": len(items), "next_page_token": token}
        match = re.fullmatch(rf"{API}/recurringruns/([^/:]+)(?::(enable|disable))?", path)
        if match:
            run = self.recurring.get(match.group(1))
            if run is None:
                return 404, {"message": f"recurring run {match.group(1)} not found", "code": 5}
            if method == "POST" and match.group(2):
                run["mode"] = "ENABLE" if match.group(2) == "enable" else "DISABLE"
                return 200, {}
            if method == "DELETE":
                del self.recurring[match.group(1)]
                return 200, {}
            return 200, run
        extra = self._schedule_routes(method, path, query)  # --- schedules (i20)
        if extra is not None:
            return extra
        return 404, {"message": f"no route {method} {path}", "code": 5}

    # ------------------------------------------------------------ schedules (i20): pipeline version
    # specs and the runs of a recurring run. backend/api/v2beta1/pipeline.proto GetPipelineVersion returns
    # the stored spec (``{"pipeline_spec", "platform_spec"}`` when the YAML has a platform document);
    # run.proto ListRuns filters on ``recurring_run_id`` (backend/src/apiserver/model/run.go,
    # runAPIToModelFieldMap, kubeflow/pipelines 7b70c7b) and sorts by ``created_at desc``.

    def add_run(self, recurring_run_id: str, state: str, created_at: str) -> str:
        rid = self._id("run")
        self.runs[rid] = {"run_id": rid, "recurring_run_id": recurring_run_id, "state": state,
                          "created_at": created_at, "display_name": f"run of {recurring_run_id}"}
        return rid

    def _version_spec(self, pid: str, vid: str) -> dict[str, Any]:
        import yaml

        raw = self.uploads.get(vid)
        if raw is None:  # the first version of a pipeline is stored with the pipeline's upload
            first = min((v for v in self.versions.values() if v["pipeline_id"] == pid),
                        key=lambda v: v["pipeline_version_id"])
            raw = self.uploads[pid] if first["pipeline_version_id"] == vid else b""
        docs = [d for d in yaml.safe_load_all(raw) if d]
        return {"pipeline_spec": docs[0], "platform_spec": docs[1]} if len(docs) > 1 else docs[0]

    def _schedule_routes(self, method: str, path: str, query: dict[str, str]) -> tuple[int, Any] | None:
        match = re.fullmatch(rf"{API}/pipelines/([^/]+)/versions/([^/]+)", path)
        if match and method == "GET":
            version = self.versions.get(match.group(2))
            if version is None or version["pipeline_id"] != match.group(1):
                return 404, {"message": f"pipeline version {match.group(2)} not found", "code": 5}
            return 200, {**version, "pipeline_spec": self._version_spec(*match.groups())}
        if path == f"{API}/runs" and method == "GET":
            items = [r for r in self.runs.values() if _matches(r, query.get("filter"))]
            if query.get("sort_by", "").startswith("created_at"):
                items.sort(key=lambda r: r.get("created_at", ""), reverse=query["sort_by"].endswith(" desc"))
            size = int(query.get("page_size") or 10)
            return 200, {"runs": items[:size], "total_size": len(items), "next_page_token": ""}
        return None

    def _add_version(self, pid: str, name: str) -> dict[str, Any]:
        vid = self._id("ver")
        self.versions[vid] = {"pipeline_id": pid, "pipeline_version_id": vid, "display_name": name, "name": name}
        return self.versions[vid]

    @staticmethod
    def _file(headers: Any, raw: bytes) -> bytes:
        message = BytesParser(policy=email_policy).parsebytes(
            f"Content-Type: {headers.get('Content-Type')}\r\n\r\n".encode() + raw)
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                return part.get_payload(decode=True)
        raise AssertionError("no uploadfile part")

    # ------------------------------------------------------------ server

    def start(self) -> FakeKFP:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _do(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with state.lock:
                    code, payload = state.handle(method, self.path, self.headers, raw)
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._do("GET")

            def do_POST(self) -> None:
                self._do("POST")

            def do_DELETE(self) -> None:
                self._do("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
