"""The schedule reconciler against the fake KFP and Kubernetes APIs: BatchRLSchedule objects (create,
replace, disable, delete through the finalizer, the shipped version uploaded, status and the failure
condition) and ConfigMaps as a second source.

KFP behaviour encoded in the fakes and asserted here: recurring runs cannot be edited, only created,
enabled, disabled and deleted (kubeflow/pipelines backend/api/v2beta1/recurring_run.proto, commit
7b70c7b: Create/Get/List/Enable/Disable/DeleteRecurringRun, no Update); ``max_concurrency`` 1..10 and
the cron parsed by robfig/cron (backend/src/apiserver/server/api_converter.go); a run's
``recurring_run_id`` is a filter key of ListRuns (backend/src/apiserver/model/run.go). KFP's RBAC
resources and verbs (multi-user mode) are those of backend/src/apiserver/common/const.go.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from batchrl import __version__
from batchrl.kfp import client as kfp_client
from batchrl.kfp import reconciler
from batchrl.kube import schedule_resources as resources
from batchrl.kube.schedules import MARKER
from tests.fakes.kfp_api import FakeKFP
from tests.fakes.kube_api import FakeKubernetes
from tests.fakes.kube_schedules import ScheduleObjects
from tests.fakes.tiny_pipeline import compile_to

ROOT = Path(__file__).resolve().parents[2]
NS = "kubeflow"
TOKEN = "tok-reconciler-abcdef-123456"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return compile_to(str(tmp_path_factory.mktemp("pipe") / "pipeline.yaml"))


@pytest.fixture
def kfp(monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)
    server = FakeKFP().start()
    yield server
    server.stop()


@pytest.fixture
def kube():
    server = FakeKubernetes()
    server.schedules = ScheduleObjects()
    server.extensions.append(server.schedules)
    server.start()
    yield server
    server.stop()


class World:
    """A reconciler wired to both fakes; ``reconcile()`` is one pass as the Deployment makes it."""

    def __init__(self, kfp: FakeKFP, kube: FakeKubernetes, package: str) -> None:
        self.kfp, self.kube, self.objects = kfp, kube, kube.schedules
        self.api = kube.api_client()
        self.shipped = reconciler.ShippedPipeline(package)
        self.url = kfp.url

    def connect(self):
        return kfp_client.connect(self.url)

    def apply(self, name="nightly", **spec):
        body = {"cron": "0 0 2 * * *", "pipeline": "batch-rl-test", "parameters": {"workdir": "s3://b/w"}, **spec}
        return self.objects.apply({"metadata": {"name": name, "namespace": NS}, "spec": body})

    def reconcile(self):
        sources = reconciler.read_sources(self.api, NS, self.shipped)
        return reconciler.reconcile(self.connect, sources, self.shipped, NS, self.api, host=self.url)

    def status(self, name="nightly"):
        return self.objects.get(NS, name).get("status", {})

    def ready(self, name="nightly"):
        return next(c for c in self.status(name)["conditions"] if c["type"] == "Ready")

    def runs(self):
        return {r["display_name"]: r for r in self.kfp.recurring.values()}


@pytest.fixture
def world(kfp, kube, package):
    return World(kfp, kube, package)


def test_create_uploads_the_shipped_version_pins_it_and_writes_status(world, package):
    world.apply(maxConcurrency=2, noCatchup=False)
    summary = world.reconcile()
    assert summary["errors"] == [] and summary["uploaded"] == [f"batch-rl-test@{__version__}"]
    [version] = [v for v in world.kfp.versions.values() if v["display_name"] == __version__]
    assert world.kfp.uploads[version["pipeline_version_id"]] == Path(package).read_bytes(), "the shipped file"
    run = world.runs()["nightly"]
    assert run["pipeline_version_reference"]["pipeline_version_id"] == version["pipeline_version_id"]
    assert run["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *" and run["mode"] == "ENABLE"
    assert run["max_concurrency"] in (2, "2") and run["no_catchup"] is False
    assert run["runtime_config"]["parameters"] == {"workdir": "s3://b/w"} and MARKER in run["description"]

    obj = world.objects.get(NS, "nightly")
    assert obj["metadata"]["finalizers"] == [resources.FINALIZER]
    status = world.status()
    assert status["recurringRunId"] == run["recurring_run_id"] and status["observedGeneration"] == 1
    assert status["pipelineVersion"] == __version__ and status["pipelineVersionId"] == version["pipeline_version_id"]
    assert status["lastReconcileTime"].endswith("Z") and "lastRun" not in status
    assert world.ready()["status"] == "True" and world.ready()["reason"] == "Reconciled"

    # KFP starts a run; the next pass reports it and changes nothing else
    world.kfp.add_run(run["recurring_run_id"], "RUNNING", "2026-01-02T02:00:00Z")
    newest = world.kfp.add_run(run["recurring_run_id"], "SUCCEEDED", "2026-01-03T02:00:00Z")
    world.kfp.add_run("rr-other", "FAILED", "2026-01-04T02:00:00Z")
    summary = world.reconcile()
    assert [a["action"] for a in summary["actions"]] == ["keep"] and summary["uploaded"] == []
    assert world.status()["lastRun"] == {"id": newest, "state": "SUCCEEDED", "createdAt": "2026-01-03T02:00:00Z"}
    assert len(world.kfp.versions) == 2, "uploaded once (KFP's first version of a new pipeline + ours)"


def test_update_replaces_and_disable_toggles_in_place(world):
    world.apply()
    world.reconcile()
    first = world.status()["recurringRunId"]
    world.apply(cron="0 30 3 * * *")
    summary = world.reconcile()
    assert {(a["action"], a["schedule"]) for a in summary["actions"]} == {("delete", "nightly"),
                                                                          ("replace", "nightly")}
    second = world.status()["recurringRunId"]
    assert second != first and first not in world.kfp.recurring
    assert world.runs()["nightly"]["trigger"]["cron_schedule"]["cron"] == "0 30 3 * * *"
    assert world.status()["observedGeneration"] == 2

    world.apply(cron="0 30 3 * * *", enabled=False)
    assert [a["action"] for a in world.reconcile()["actions"]] == ["disable"]
    assert world.status()["recurringRunId"] == second and world.kfp.recurring[second]["mode"] == "DISABLE"
    world.apply(cron="0 30 3 * * *", enabled=True)
    assert [a["action"] for a in world.reconcile()["actions"]] == ["enable"]
    assert world.kfp.recurring[second]["mode"] == "ENABLE"


def test_delete_removes_the_recurring_run_then_the_object(world):
    world.apply()
    world.apply("other")
    world.reconcile()
    gone = world.status()["recurringRunId"]
    hand_made = world.kfp.add_recurring("nightly-by-hand")
    world.objects.delete(NS, "nightly")
    assert world.objects.get(NS, "nightly")["metadata"]["deletionTimestamp"], "held by the finalizer"
    summary = world.reconcile()
    assert ("delete", "nightly", gone) in {(a["action"], a["schedule"], a["id"]) for a in summary["actions"]}
    assert gone not in world.kfp.recurring and world.objects.get(NS, "nightly") is None
    assert set(world.runs()) == {"other", "nightly-by-hand"} and hand_made in world.kfp.recurring


def test_an_unknown_parameter_is_reported_before_anything_is_created(world):
    world.apply(parameters={"workdir": "s3://b/w", "learning_rat": 0.1})
    summary = world.reconcile()
    assert "learning_rat" in summary["errors"][0]["error"]
    assert world.kfp.recurring == {} and world.kfp.pipelines == {}, "nothing uploaded, nothing created"
    ready = world.ready()
    assert ready["status"] == "False" and ready["reason"] == "InvalidParameters" and "learning_rat" in ready["message"]
    assert "workdir, seed" in ready["message"] or "seed" in ready["message"], "the message lists the known ones"
    assert world.status()["observedGeneration"] == 1


def test_a_broken_edit_keeps_the_running_schedule_and_says_why(world):
    world.apply()
    world.reconcile()
    kept = world.status()["recurringRunId"]
    transition = world.ready()["lastTransitionTime"]
    world.apply(parameters={})  # the required 'workdir' is gone
    world.reconcile()
    assert kept in world.kfp.recurring, "never deleted for a bad edit"
    assert world.status()["recurringRunId"] == kept and world.status()["observedGeneration"] == 2
    assert world.ready()["status"] == "False" and "workdir" in world.ready()["message"]
    world.apply()  # fixed: the digest equals the running one again
    assert [a["action"] for a in world.reconcile()["actions"]] == ["keep"]
    assert world.ready()["status"] == "True" and world.ready()["lastTransitionTime"] >= transition


def test_a_version_kfp_lacks_and_the_image_does_not_ship_is_an_error(world):
    world.apply(pipelineVersion="9.9.9")
    world.reconcile()
    assert world.ready()["reason"] == "PipelineVersionMissing" and "9.9.9" in world.ready()["message"]
    assert world.kfp.pipelines == {} and world.kfp.recurring == {}


def test_parameters_are_checked_against_the_version_kfp_stores(world, package):
    client = world.connect()
    uploaded = kfp_client.ensure_pipeline_version(client, package, version_name="v2")
    world.apply(pipelineVersion="v2", parameters={"workdir": "s3://b/w", "seed": 4, "epochs": 3})
    world.reconcile()
    assert "epochs" in world.ready()["message"] and world.kfp.recurring == {}
    world.apply(pipelineVersion="v2", parameters={"workdir": "s3://b/w", "seed": 4})
    summary = world.reconcile()
    assert summary["errors"] == [] and summary["uploaded"] == [], "an existing version is pinned, not uploaded"
    run = world.runs()["nightly"]
    assert run["pipeline_version_reference"]["pipeline_version_id"] == uploaded["version_id"]
    assert any(p.endswith(f"/versions/{uploaded['version_id']}") for p in world.kfp.calls("GET"))


def test_kfp_unreachable_or_forbidden_is_the_condition(world):
    world.apply()
    world.url = "http://127.0.0.1:9"  # nothing listens there
    summary = world.reconcile()
    assert summary["errors"] and world.ready()["reason"] == "KFPUnreachable"
    assert "could not reach" in world.ready()["message"]
    assert world.objects.get(NS, "nightly")["metadata"]["finalizers"] == [resources.FINALIZER]
    world.url = world.kfp.url

    def connect_then_refuse():  # connected; KFP's authorizer refuses the first call
        client = kfp_client.connect(world.url)
        world.kfp.fail_next = (403, "user is not authorized to list jobs")
        return client

    world.connect = connect_then_refuse
    world.reconcile()
    ready = world.ready()
    assert ready["reason"] == "PermissionDenied" and "HTTP 403" in ready["message"] and TOKEN not in ready["message"]
    world.connect = lambda: kfp_client.connect(world.url)
    world.reconcile()
    assert world.ready()["status"] == "True", "recovers on the next pass"


def test_status_write_refused_is_a_clear_error(world):
    from batchrl.errors import BatchRLError

    world.apply()
    world.objects.deny_status = 403
    with pytest.raises(BatchRLError, match="batchrlschedules/status|status of BatchRLSchedule") as caught:
        world.reconcile()
    assert "Role batchrl-schedule-reconciler" in caught.value.fix


def test_configmaps_are_a_second_source_and_the_object_wins_a_name(world):
    def configmap(name, **fields):
        body = {"cron": "0 0 4 * * *", "pipeline": "batch-rl-test", "pipeline_version": __version__,
                "parameters": {"workdir": "s3://b/cm"}, **fields}
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": NS, "labels": {"batchrl.io/schedule": "true"}},
                "data": {"schedule.yaml": yaml.safe_dump(body)}}

    world.kube.configmaps = [configmap("from-configmap"), configmap("nightly")]
    world.apply()
    summary = world.reconcile()
    runs = world.runs()
    assert set(runs) == {"from-configmap", "nightly"}
    assert runs["nightly"]["runtime_config"]["parameters"] == {"workdir": "s3://b/w"}, "the object's spec"
    assert [e["schedule"] for e in summary["errors"]] == ["nightly (ConfigMap)"]
    assert summary["uploaded"] == [f"batch-rl-test@{__version__}"], "both pin the shipped version: one upload"

    world.objects.installed = False  # a namespace without the CRD: ConfigMaps alone
    world.kube.configmaps = [configmap("from-configmap", enabled=False)]
    summary = world.reconcile()
    assert summary["errors"] == [] and world.runs()["from-configmap"]["mode"] == "DISABLE"
    assert "nightly" not in world.runs(), "no object, no ConfigMap: its recurring run goes"


def test_moving_a_configmap_schedule_to_an_object_keeps_its_recurring_run(world):
    """docs/deploy.md: apply the object with the same settings, then delete the ConfigMap."""
    body = {"cron": "0 0 2 * * *", "pipeline": "batch-rl-test", "parameters": {"workdir": "s3://b/w"}}
    world.kube.configmaps = [{"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "nightly", "namespace": NS,
                                           "labels": {"batchrl.io/schedule": "true"}},
                              "data": {"schedule.yaml": yaml.safe_dump({**body, "pipeline_version": __version__})}}]
    world.reconcile()
    [run_id] = world.kfp.recurring
    world.apply()
    assert {a["action"] for a in world.reconcile()["actions"]} == {"keep"}
    world.kube.configmaps = []
    summary = world.reconcile()
    assert summary["errors"] == [] and [a["action"] for a in summary["actions"]] == ["keep"]
    assert list(world.kfp.recurring) == [run_id] and world.status()["recurringRunId"] == run_id


def test_the_watch_wakes_on_a_change_but_not_on_the_reconcilers_own_writes(world):
    world.apply()
    world.reconcile()  # adds the finalizer, writes the status
    listed = reconciler.read_sources(world.api, NS, world.shipped).resource_version
    world.reconcile()  # writes the status again (lastReconcileTime)
    assert int(world.objects.version) > int(listed), "there are events since the list"
    assert resources.wait_for_change(world.api, NS, listed, 1) is False, "its own status write: no pass"
    world.apply(cron="0 0 3 * * *")
    assert resources.wait_for_change(world.api, NS, listed, 1) is True
    world.objects.delete(NS, "nightly")
    assert resources.wait_for_change(world.api, NS, str(world.objects.version - 1), 1) is True
    assert any("watch=True" in path or "watch=true" in path for _, path in world.kube.requests)


@pytest.mark.parametrize("obj, wanted", [
    ({"metadata": {"generation": 2, "finalizers": [resources.FINALIZER]}, "status": {"observedGeneration": 2}},
     False),
    ({"metadata": {"generation": 3, "finalizers": [resources.FINALIZER]}, "status": {"observedGeneration": 2}},
     True),
    ({"metadata": {"generation": 1}, "status": {"observedGeneration": 1}}, True),
    ({"metadata": {"generation": 1, "deletionTimestamp": "t", "finalizers": [resources.FINALIZER]}}, True),
    ({"metadata": {"generation": 1, "deletionTimestamp": "t", "finalizers": ["other"]}}, False),
])
def test_needs_reconcile(obj, wanted):
    assert resources.needs_reconcile(obj) is wanted


def test_run_forever_reconciles_then_waits(world):
    world.apply()
    reports, sleeps = [], []
    reconciler.run_forever(world.connect, world.api, NS, world.shipped, 5, host=world.url, report=reports.append,
                           passes=2, sleep=sleeps.append)
    assert len(reports) == 2 and reports[0]["errors"] == [] and [a["action"] for a in reports[1]["actions"]] == ["keep"]
    world.objects.installed = False
    reports.clear()
    reconciler.run_forever(world.connect, world.api, NS, world.shipped, 5, host=world.url, report=reports.append,
                           passes=2, sleep=sleeps.append)
    assert sleeps == [5], "no CRD: the resync sleeps instead of watching"


# ------------------------------------------------------------------ least privilege


def _role():
    docs = yaml.safe_load_all((ROOT / "manifests" / "base" / "schedule-reconciler.yaml").read_text())
    [role] = [d for d in docs if d["kind"] == "Role"]
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def _kube_verbs(requests):
    used = set()
    for method, path in requests:
        base, _, query = path.partition("?")
        parts = base.strip("/").split("/")
        group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
        rest = rest[2:] if rest[:1] == ["namespaces"] else rest
        resource = rest[0] + ("/" + rest[2] if len(rest) > 2 else "")
        verb = {"PATCH": "patch", "POST": "create", "DELETE": "delete"}.get(method)
        if verb is None:
            verb = "watch" if "watch=" in query else ("get" if len(rest) > 1 else "list")
        used.add((group, resource, verb))
    return used


def _kfp_verbs(calls):
    """KFP API calls -> the (resource, verb) its authorizer checks (backend/src/apiserver/server/*_server.go)."""
    used = set()
    for call in calls:
        method, path = call.split(" ", 1)
        path = path.removeprefix("/apis/v2beta1/")
        if path == "healthz":
            continue
        if path.startswith("recurringruns"):
            action = path.rpartition(":")[2] if ":" in path else None
            verb = action or {"POST": "create", "DELETE": "delete"}.get(method, "list" if path == "recurringruns"
                                                                        else "get")
            used.add(("jobs", verb))
        elif path.startswith("experiments"):
            used.add(("experiments", "create" if method == "POST" else "list"))
        elif path.startswith("runs"):
            used.add(("runs", "list"))
        elif path.startswith("pipelines"):
            used.add(("pipelines", "create" if method == "POST" else ("get" if path.count("/") == 3 else "list")))
    return used


def test_the_role_grants_exactly_what_the_reconciler_uses(world):
    world.apply()
    world.reconcile()
    world.kfp.add_run(world.status()["recurringRunId"], "RUNNING", "2026-01-02T02:00:00Z")
    world.apply(cron="0 0 3 * * *")
    world.reconcile()
    world.apply(cron="0 0 3 * * *", enabled=False)
    world.reconcile()
    world.apply(cron="0 0 3 * * *", enabled=True)
    world.reconcile()
    resources.wait_for_change(world.api, NS, str(world.objects.version), 1)
    world.objects.delete(NS, "nightly")
    world.reconcile()
    granted = _role()
    kube_used = _kube_verbs(world.kube.requests)
    assert kube_used == {g for g in granted if g[0] in ("", resources.GROUP)}
    kfp_granted = {(r, v) for g, r, v in granted if g == "pipelines.kubeflow.org"}
    assert _kfp_verbs(world.kfp.calls()) == kfp_granted


# ------------------------------------------------------------------ the CLI and the shipped manifests


def test_cli_previews_the_example_schedule_against_the_checked_in_pipeline(kfp, monkeypatch, capsys):
    from tests.support.cli import cluster_cli

    if not (ROOT / "pipelines" / "batch_rl.yaml").exists():
        pytest.skip("pipelines/batch_rl.yaml is not compiled in this checkout")
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv(reconciler.PIPELINE_FILE_ENV, raising=False)
    code, out, err = cluster_cli(capsys, "reconcile", "--host", kfp.url, "--manifest",
                                 "manifests/schedules/nightly.yaml", "--dry-run")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["actions"] == [{"action": "create", "schedule": "batchrl-nightly", "id": None}]
    assert kfp.pipelines == {} and kfp.recurring == {}, "a dry run uploads and creates nothing"


def test_the_deployment_watches_with_a_short_resync_and_ships_the_pipeline():
    docs = list(yaml.safe_load_all((ROOT / "manifests" / "base" / "schedule-reconciler.yaml").read_text()))
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[:3] == ["pipeline", "reconcile", "--watch"] and int(args[args.index("--interval") + 1]) <= 60
    assert container["image"].endswith(f":{__version__}")
    dockerfile = (ROOT / "images" / "runtime" / "Dockerfile").read_text()
    assert "COPY pipelines/batch_rl.yaml /opt/batchrl/pipelines/batch_rl.yaml" in dockerfile
    assert f"{reconciler.PIPELINE_FILE_ENV}=/opt/batchrl/pipelines/batch_rl.yaml" in dockerfile
    assert "!pipelines/batch_rl.yaml" in (ROOT / "images" / "runtime" / "Dockerfile.dockerignore").read_text()


def test_a_deletion_kfp_refuses_keeps_the_finalizer_and_says_why(world, monkeypatch):
    from batchrl.errors import BatchRLError

    world.apply()
    world.reconcile()
    run_id = world.status()["recurringRunId"]
    world.objects.delete(NS, "nightly")

    def refuse(client, rid, host=None):
        raise BatchRLError("Kubeflow Pipelines refused to delete the recurring run: HTTP 403 denied", where="KFP")

    original = kfp_client.delete_schedule
    monkeypatch.setattr(kfp_client, "delete_schedule", refuse)
    world.reconcile()
    obj = world.objects.get(NS, "nightly")
    assert obj["metadata"]["finalizers"] == [resources.FINALIZER] and run_id in world.kfp.recurring
    assert world.ready()["reason"] == "PermissionDenied"
    monkeypatch.setattr(kfp_client, "delete_schedule", original)
    world.reconcile()
    assert world.objects.get(NS, "nightly") is None and run_id not in world.kfp.recurring


def test_the_shipped_pipeline_root_is_sent_with_the_recurring_run(kfp, kube, package):
    """The KFP backend ignores a compiled-in ``defaultPipelineRoot`` (it takes the run's root, else
    kfp-launcher's: kubeflow/pipelines ``backend/src/v2/driver`` RootDAG, 2.5.0 and master ``root_dag.go``), so
    the reconciler sends it with the recurring run when the schedule names none; a schedule's own root wins."""
    rooted = kfp_client.with_pipeline_root(package, "s3://team-bucket/kfp-root")
    world = World(kfp, kube, rooted)
    world.apply()
    world.apply(name="own-root", pipelineRoot="s3://other/root")
    assert world.reconcile()["errors"] == []
    runs = world.runs()
    assert runs["nightly"]["runtime_config"]["pipeline_root"] == "s3://team-bucket/kfp-root"
    assert runs["own-root"]["runtime_config"]["pipeline_root"] == "s3://other/root"
