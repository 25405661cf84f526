"""Submission, pinned versions and recurring runs through the real ``kfp.Client`` against a fake KFP API."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml

from batchrl.commands.pipeline_cluster import register_cluster_actions
from batchrl.errors import BatchRLError
from batchrl.kfp import client as kfp_client
from batchrl.kube.schedules import MARKER, ScheduleSpec
from tests.fakes.kfp_api import FakeKFP
from tests.fakes.tiny_pipeline import compile_to
from tests.support.cli import cluster_cli

TOKEN = "tok-abcdef-123456-secret"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A small compiled pipeline with two parameters (same shape as the real one: IR YAML)."""
    path = tmp_path_factory.mktemp("pipe") / "pipeline.yaml"
    return compile_to(str(path))


@pytest.fixture
def kfp_server(monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    server = FakeKFP().start()
    yield server
    server.stop()


@pytest.fixture
def client(kfp_server):
    return kfp_client.connect(kfp_server.url)


def _spec(**overrides):
    values = {"name": "nightly", "cron": "0 0 2 * * *", "pipeline": "batch-rl-test",
              "pipeline_version": "v1", "parameters": {"workdir": "s3://b/w"}}
    return ScheduleSpec(**{**values, **overrides})


def test_token_from_the_environment_is_sent_as_bearer(kfp_server, client):
    kfp_client.list_schedules(client)
    assert kfp_server.requests[-1]["authorization"] == f"Bearer {TOKEN}"


def test_submit_creates_experiment_and_run(kfp_server, client, package, capsys):
    summary = kfp_client.submit(client, package, {"workdir": "s3://b/w", "seed": 7}, experiment="exp-a",
                                run_name="r1")
    run = kfp_server.runs[summary["run_id"]]
    assert run["display_name"] == "r1"
    assert run["runtime_config"]["parameters"] == {"workdir": "s3://b/w", "seed": 7}
    assert run["pipeline_spec"]["pipelineInfo"]["name"] == "batch-rl-test"
    assert [e["display_name"] for e in kfp_server.experiments.values()] == ["exp-a"]
    assert run["experiment_id"] in kfp_server.experiments
    assert "Experiment details" not in capsys.readouterr().out, "kfp's prints stay off stdout"


def test_pipeline_version_is_uploaded_once_and_pinned(kfp_server, client, package):
    first = kfp_client.ensure_pipeline_version(client, package, version_name="v1")
    again = kfp_client.ensure_pipeline_version(client, package, version_name="v1")
    assert first["uploaded"] is True and again["uploaded"] is False
    assert again["version_id"] == first["version_id"]
    assert kfp_server.uploads[first["version_id"]] == open(package, "rb").read()
    assert len(kfp_server.calls("POST")) == 2, "one pipeline upload, one version upload"


def test_default_version_name_follows_the_content(package, tmp_path):
    name = kfp_client.default_version_name(package)
    assert name.startswith("0.1.0-") and name == kfp_client.default_version_name(package)
    other = tmp_path / "p.yaml"
    other.write_text(open(package).read() + "\n# changed\n")
    assert kfp_client.default_version_name(str(other)) != name


def test_create_schedule_is_pinned_with_no_catchup(kfp_server, client, package):
    version = kfp_client.ensure_pipeline_version(client, package, version_name="v1")
    summary = kfp_client.create_schedule(client, _spec(max_concurrency=2))
    body = kfp_server.recurring[summary["id"]]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert body["no_catchup"] is True and str(body["max_concurrency"]) == "2"
    assert body["mode"] == "ENABLE"
    assert body["pipeline_version_reference"] == {"pipeline_id": version["pipeline_id"],
                                                  "pipeline_version_id": version["version_id"]}
    assert body["runtime_config"]["parameters"] == {"workdir": "s3://b/w"}
    assert summary["cron"] == "0 0 2 * * *" and summary["enabled"] is True


def test_schedule_for_a_missing_version_is_a_clear_error(kfp_server, client):
    with pytest.raises(BatchRLError, match="not uploaded"):
        kfp_client.create_schedule(client, _spec(pipeline_version="nope"))


def test_list_pages_find_disable_delete(kfp_server, client):
    ids = [kfp_server.add_recurring(name) for name in ("a", "b", "c", "b")]
    listed = kfp_client.list_schedules(client)
    assert [s["id"] for s in listed] == ids, "all pages are read"
    assert kfp_client.find_schedule(client, "a") == ids[0]
    assert kfp_client.find_schedule(client, ids[3]) == ids[3]
    with pytest.raises(BatchRLError, match="2 recurring runs are named 'b'"):
        kfp_client.find_schedule(client, "b")
    with pytest.raises(BatchRLError, match="no recurring run"):
        kfp_client.find_schedule(client, "zzz")
    kfp_client.disable_schedule(client, ids[0])
    assert kfp_server.recurring[ids[0]]["mode"] == "DISABLE"
    kfp_client.delete_schedule(client, ids[2])
    assert ids[2] not in kfp_server.recurring


def test_api_errors_are_clear_and_carry_no_token(kfp_server, client):
    kfp_server.fail_next = (403, f"user not allowed (Authorization: Bearer {TOKEN})")
    with pytest.raises(BatchRLError) as caught:
        kfp_client.list_schedules(client, host=kfp_server.url)
    assert "HTTP 403" in caught.value.message and "KF_PIPELINES_TOKEN" in caught.value.message
    assert TOKEN not in caught.value.message


def test_unreachable_host_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    with pytest.raises(BatchRLError, match="could not reach Kubeflow Pipelines"):
        kfp_client.connect("http://127.0.0.1:9")  # the constructor asks healthz


def test_missing_sa_token_file_is_reported(monkeypatch, tmp_path):
    monkeypatch.delenv("KF_PIPELINES_TOKEN", raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "absent"))
    with pytest.raises(BatchRLError, match="no service-account token"):
        kfp_client.connect("http://127.0.0.1:9")


# ---------------------------------------------------------------- CLI


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("workdir: s3://batchrl/nightly\nseed: 3\n")
    return path


def test_cli_submit(kfp_server, package, params_file, capsys):
    code, out, err = cluster_cli(capsys, "submit", params_file, "--host", kfp_server.url, "--pipeline-file",
                                 package, "--experiment", "nightly-exp")
    assert code == 0, err
    summary = json.loads(out)
    assert kfp_server.runs[summary["run_id"]]["runtime_config"]["parameters"]["seed"] == 3
    assert TOKEN not in out + err


def test_cli_submit_rejects_unknown_parameters(kfp_server, package, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("workdir: s3://b/w\nlearning_rat: 0.1\n")
    code, _, err = cluster_cli(capsys, "submit", bad, "--host", kfp_server.url, "--pipeline-file", package)
    assert code == 2 and "learning_rat" in err
    assert not kfp_server.runs


def test_cli_schedule_list_disable_delete(kfp_server, package, params_file, capsys, caplog):
    caplog.set_level("DEBUG")
    base = ["--host", kfp_server.url]
    code, out, err = cluster_cli(capsys, "schedule", params_file, *base, "--pipeline-file", package,
                                 "--cron", "0 0 2 * * *", "--name", "nightly")
    assert code == 0, err
    created = json.loads(out)["recurring_run"]
    assert created["no_catchup"] is True and created["max_concurrency"] in (1, "1")
    assert json.loads(out)["pipeline_version"]["version"] == kfp_client.default_version_name(package)
    # the same name again is refused without --replace, replaced with it
    code, _, err = cluster_cli(capsys, "schedule", params_file, *base, "--pipeline-file", package,
                               "--cron", "0 30 3 * * *", "--name", "nightly")
    assert code == 2 and "--replace" in err
    code, out, _ = cluster_cli(capsys, "schedule", params_file, *base, "--pipeline-file", package,
                               "--cron", "0 30 3 * * *", "--name", "nightly", "--replace")
    assert code == 0 and json.loads(out)["replaced"] == [created["id"]]
    assert len(kfp_server.versions) == 2, "the pinned version was reused (1 default + 1 named)"
    code, out, _ = cluster_cli(capsys, "list-schedules", *base)
    [listed] = json.loads(out)["recurring_runs"]
    assert listed["cron"] == "0 30 3 * * *"
    assert cluster_cli(capsys, "disable-schedule", "nightly", *base)[0] == 0
    assert kfp_server.recurring[listed["id"]]["mode"] == "DISABLE"
    assert cluster_cli(capsys, "delete-schedule", listed["id"], *base)[0] == 0
    assert kfp_server.recurring == {}
    assert caplog.records and not any(TOKEN in r.getMessage() for r in caplog.records), "no token in log lines"


@pytest.mark.parametrize("cron", ["0 2 * * *", "0 0 25 * * *", "every day"])
def test_cli_schedule_rejects_bad_cron(kfp_server, package, params_file, capsys, cron):
    code, _, err = cluster_cli(capsys, "schedule", params_file, "--host", kfp_server.url, "--pipeline-file",
                               package, "--cron", cron)
    assert code == 2 and "6 fields" in err
    assert not kfp_server.recurring


def _manifest(tmp_path, name, **fields):
    body = {"cron": "0 0 2 * * *", "pipeline": "batch-rl-test", "pipeline_version": "v1",
            "parameters": {"workdir": "s3://b/w"}, **fields}
    doc = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "kubeflow", "labels": {"batchrl.io/schedule": "true"}},
           "data": {"schedule.yaml": yaml.safe_dump(body)}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_cli_reconcile_converges_and_leaves_unmanaged_runs_alone(kfp_server, client, package, tmp_path, capsys):
    kfp_client.ensure_pipeline_version(client, package, version_name="v1")
    unmanaged = kfp_server.add_recurring("hand-made")
    stale = kfp_server.add_recurring("removed-from-git", description=f"[{MARKER} spec=000000000000]")
    nightly = _manifest(tmp_path, "nightly")
    hourly = _manifest(tmp_path, "hourly", cron="0 0 * * * *", enabled=False)
    base = ["reconcile", "--host", kfp_server.url, "--manifest", nightly, "--manifest", hourly]

    code, out, _ = cluster_cli(capsys, *base, "--dry-run")
    plan = {(a["action"], a["schedule"]) for a in json.loads(out)["actions"]}
    assert plan == {("create", "nightly"), ("create", "hourly"), ("delete", "removed-from-git")}
    assert code == 0 and stale in kfp_server.recurring and len(kfp_server.recurring) == 2, "dry run changes nothing"

    code, out, err = cluster_cli(capsys, *base)
    assert code == 0, err
    names = {r["display_name"]: r for r in kfp_server.recurring.values()}
    assert set(names) == {"hand-made", "nightly", "hourly"} and unmanaged in kfp_server.recurring
    assert names["hourly"]["mode"] == "DISABLE" and names["nightly"]["no_catchup"] is True

    # converged: a second pass only keeps
    code, out, _ = cluster_cli(capsys, *base)
    assert {a["action"] for a in json.loads(out)["actions"]} == {"keep"}

    # a changed cron replaces; enabling flips the mode in place
    nightly = _manifest(tmp_path, "nightly", cron="0 15 2 * * *")
    hourly = _manifest(tmp_path, "hourly", cron="0 0 * * * *", enabled=True)
    hourly_id = names["hourly"]["recurring_run_id"]
    code, out, _ = cluster_cli(capsys, *base)
    actions = {(a["action"], a["schedule"]) for a in json.loads(out)["actions"]}
    assert ("replace", "nightly") in actions and ("enable", "hourly") in actions
    assert kfp_server.recurring[hourly_id]["mode"] == "ENABLE"
    crons = {r["display_name"]: r["trigger"]["cron_schedule"]["cron"] for r in kfp_server.recurring.values()}
    assert crons["nightly"] == "0 15 2 * * *"


def test_cli_reconcile_protects_schedules_whose_manifest_is_broken(kfp_server, client, package, tmp_path, capsys):
    kfp_client.ensure_pipeline_version(client, package, version_name="v1")
    good = _manifest(tmp_path, "nightly")
    assert cluster_cli(capsys, "reconcile", "--host", kfp_server.url, "--manifest", good)[0] == 0
    broken = _manifest(tmp_path, "nightly", cron="0 0 2 * *", colour="red")
    code, out, err = cluster_cli(capsys, "reconcile", "--host", kfp_server.url, "--manifest", broken)
    assert code == 2 and "colour" in err and "6 fields" in err
    assert [r["display_name"] for r in kfp_server.recurring.values()] == ["nightly"], "not deleted"


def test_documented_flow_with_the_checked_in_pipeline(kfp_server, cli, monkeypatch, tmp_path):
    """From the repository root, through the real ``batchrl`` CLI: submit, upload a named version, then let
    the reconciler apply manifests/schedules/configmap/nightly.yaml (which pins that version)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root / "pipelines" / "batch_rl.yaml").exists():
        pytest.skip("pipelines/batch_rl.yaml is not compiled in this checkout")
    monkeypatch.chdir(root)
    params = tmp_path / "nightly.yaml"
    params.write_text("env: CartPole-v0\ntransitions: 1000\n")
    code, out, err = cli("pipeline", "submit", params, "--host", kfp_server.url)
    assert code == 0, err
    run = kfp_server.runs[json.loads(out)["run_id"]]
    spec = run["pipeline_spec"]
    spec = spec.get("pipeline_spec", spec)  # with a platform spec (secrets, GPU) kfp sends both
    assert spec["pipelineInfo"]["name"] == "batch-rl"
    assert "platform_spec" in run["pipeline_spec"], "the Kubernetes platform settings are sent too"
    code, out, err = cli("pipeline", "upload", "--host", kfp_server.url, "--version", "0.1.0")
    assert code == 0 and json.loads(out)["version"] == "0.1.0", err
    code, out, err = cli("pipeline", "reconcile", "--host", kfp_server.url, "--manifest",
                         "manifests/schedules/configmap/nightly.yaml")
    assert code == 0, err
    [created] = kfp_server.recurring.values()
    assert created["display_name"] == "batchrl-nightly" and created["no_catchup"] is True
    assert created["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert TOKEN not in out + err


def test_multi_user_upload_goes_into_the_profile_namespace(kfp_server, package):
    """Multi-user Kubeflow: the pipeline is uploaded into (and found in) the profile namespace; the
    shared pipeline of the same name is another pipeline."""
    client = kfp_client.connect(kfp_server.url, "team-a")
    first = kfp_client.ensure_pipeline_version(client, package, version_name="v1", namespace="team-a")
    (pipeline,) = kfp_server.pipelines.values()
    assert pipeline["namespace"] == "team-a" and first["namespace"] == "team-a"
    upload = next(r for r in kfp_server.requests if r["path"].endswith("/pipelines/upload"))
    assert upload["query"]["namespace"] == "team-a"
    again = kfp_client.ensure_pipeline_version(client, package, version_name="v1", namespace="team-a")
    assert again["uploaded"] is False and again["version_id"] == first["version_id"]
    shared = kfp_client.ensure_pipeline_version(client, package, version_name="v1")
    assert shared["uploaded"] is True and shared["pipeline_id"] != first["pipeline_id"]


def test_the_compiled_pipeline_root_is_sent_with_each_run(kfp_server, client, package, tmp_path):
    """The KFP backend takes a run's pipeline root from the run's runtime config, else kfp-launcher's
    defaultPipelineRoot; it never reads the IR's defaultPipelineRoot (kubeflow/pipelines 2.5.0
    backend/src/v2/driver/driver.go RootDAG and master backend/src/v2/driver/root_dag.go:
    ``pipelineRoot := opts.RuntimeConfig.GetGcsOutputDirectory()`` then ``cfg.DefaultPipelineRoot()``;
    the API server copies only the run's ``runtime_config.pipeline_root``, backend/src/apiserver/
    template/template.go). So submit sends the compiled-in root explicitly."""
    rooted = kfp_client.with_pipeline_root(package, "s3://bucket/kfp")
    assert kfp_client.pipeline_root_of(rooted) == "s3://bucket/kfp" and kfp_client.pipeline_root_of(package) is None
    assert yaml.safe_load(open(rooted))["pipelineInfo"] == yaml.safe_load(open(package))["pipelineInfo"]
    run = kfp_server.runs[kfp_client.submit(client, rooted, {"workdir": "s3://b/w", "seed": 1})["run_id"]]
    assert run["runtime_config"]["pipeline_root"] == "s3://bucket/kfp"
    given = kfp_client.submit(client, rooted, {"workdir": "s3://b/w", "seed": 1}, pipeline_root="s3://other/x")
    assert kfp_server.runs[given["run_id"]]["runtime_config"]["pipeline_root"] == "s3://other/x"
    plain = kfp_server.runs[kfp_client.submit(client, package, {"workdir": "s3://b/w", "seed": 1})["run_id"]]
    assert not plain["runtime_config"].get("pipeline_root"), "none: kfp-launcher's default applies"
    with pytest.raises(BatchRLError, match="not a pipeline root"):
        kfp_client.with_pipeline_root(package, "file:///tmp/x")


def test_upload_cli_with_a_pipeline_root_and_namespace(kfp_server, package, capsys):
    parser = argparse.ArgumentParser()
    register_cluster_actions(parser.add_subparsers(dest="action"))
    args = parser.parse_args(["upload", "--host", kfp_server.url, "--namespace", "team-b", "--pipeline-file",
                              package, "--version", "v9", "--pipeline-root", "s3://bucket/kfp"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["namespace"] == "team-b" and summary["pipeline_root"] == "s3://bucket/kfp"
    uploaded = yaml.safe_load(kfp_server.uploads[summary["pipeline_id"]])
    assert uploaded["defaultPipelineRoot"] == "s3://bucket/kfp"


def test_submit_refuses_a_pipeline_root_kfp_cannot_store_under(kfp_server, package, tmp_path):
    config = tmp_path / "params.yaml"
    config.write_text("workdir: s3://b/w\nseed: 1\n")
    parser = argparse.ArgumentParser()
    register_cluster_actions(parser.add_subparsers(dest="action"))
    args = parser.parse_args(["submit", str(config), "--host", kfp_server.url, "--pipeline-file", package,
                              "--pipeline-root", "/data/kfp"])
    with pytest.raises(BatchRLError, match="not a pipeline root") as raised:
        args.func(args)
    assert "s3://BUCKET/PREFIX" in raised.value.fix
    assert not kfp_server.runs, "nothing was sent"
