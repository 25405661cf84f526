"""``--spark-mode kubernetes`` on the command line: dry-run YAML, local fall-through, a run via kubeconfig."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from batchrl.commands._spark_options import add_spark_mode_options, run_on_kubernetes
from batchrl.errors import BatchRLError
from tests.fakes.kube_api import FakeKubernetes


class ToyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0


def toy_command(capsys, *argv):
    """A Spark stage command wired like timeline/normalize: its own options + the shared Spark-mode ones."""
    parser = argparse.ArgumentParser(prog="batchrl normalize")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--seed", type=int, default=0)
    add_spark_mode_options(parser)
    args = parser.parse_args([str(a) for a in argv])
    try:
        code = run_on_kubernetes(args, "normalize", args.input, args.output, ToyOptions(seed=args.seed))
    except BatchRLError as exc:
        print(exc.message, file=__import__("sys").stderr)
        code = 2
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dry_run_prints_the_sparkapplication(capsys):
    code, out, _ = toy_command(capsys, "--input", "s3://b/timeline", "--output", "s3://b/norm.json", "--seed", "4",
                               "--spark-mode", "kubernetes", "--dry-run", "--executor-instances", "5",
                               "--executor-memory", "6g", "--namespace", "team-a", "--s3-endpoint",
                               "http://batchrl-minio.kubeflow:9000", "--ttl-seconds", "120",
                               "--spark-image", "registry.local/batchrl-spark:dev", "--service-account", "sa-x",
                               "--s3-secret", "my-s3")
    assert code == 0
    app = yaml.safe_load(out)
    assert app["kind"] == "SparkApplication" and app["metadata"]["namespace"] == "team-a"
    spec = app["spec"]
    assert spec["executor"]["instances"] == 5 and spec["executor"]["memory"] == "6g"
    assert spec["image"] == "registry.local/batchrl-spark:dev" and spec["driver"]["serviceAccount"] == "sa-x"
    assert spec["timeToLiveSeconds"] == 120
    assert json.loads(spec["arguments"][0]) == {"stage": "normalize", "input": "s3://b/timeline",
                                                "output": "s3://b/norm.json", "options": {"seed": 4}}
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in spec["driver"]["env"] if "valueFrom" in e} == {"my-s3"}


def test_local_mode_falls_through_and_dry_run_needs_kubernetes(capsys):
    assert toy_command(capsys, "--input", "a", "--output", "b")[0] is None
    code, _, err = toy_command(capsys, "--input", "a", "--output", "b", "--dry-run")
    assert code == 2 and "--spark-mode kubernetes" in err


@pytest.mark.parametrize("extra, message", [(["--executor-memory", "lots"], "Spark memory size"),
                                            (["--namespace", "Bad_NS"], "Kubernetes name")])
def test_bad_kubernetes_options_are_clear_errors(capsys, extra, message):
    code, _, err = toy_command(capsys, "--input", "s3://b/i", "--output", "s3://b/o", "--spark-mode", "kubernetes",
                               "--dry-run", *extra)
    assert code == 2 and message in err


def test_local_paths_are_refused_in_kubernetes_mode(capsys):
    code, _, err = toy_command(capsys, "--input", "data/timeline", "--output", "s3://b/o", "--spark-mode",
                               "kubernetes", "--dry-run")
    assert code == 2 and "s3://" in err


def test_kubernetes_mode_runs_through_the_kubeconfig(capsys, tmp_path, monkeypatch):
    kube = FakeKubernetes().start()
    try:
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
            "users": [{"name": "me", "user": {"token": "kube-token-value-123"}}]}))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        code, out, err = toy_command(capsys, "--input", "s3://b/timeline", "--output", "s3://b/norm.json",
                                     "--spark-mode", "kubernetes", "--timeout-seconds", "30", "--poll-seconds", "0.01")
        assert code == 0, err
        summary = json.loads(out)["spark_application"]
        assert summary["state"] == "COMPLETED" and summary["deleted"] is True
        assert "kube-token-value-123" not in out + err
    finally:
        kube.stop()


def test_no_cluster_credentials_is_a_clear_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, _, err = toy_command(capsys, "--input", "s3://b/i", "--output", "s3://b/o", "--spark-mode", "kubernetes")
    assert code == 2 and "no Kubernetes credentials" in err


def test_timeline_and_normalize_commands_take_the_kubernetes_options(cli):
    from batchrl import spark_job
    from batchrl.data.timeline import make_options

    code, out, err = cli("timeline", "--input", "s3://b/logged", "--output", "s3://b/timeline", "--start-ds",
                         "2019-01-01", "--end-ds", "2019-01-03", "--add-terminal-state-row", "--spark-mode",
                         "kubernetes", "--dry-run", "--executor-instances", "4")
    assert code == 0, err
    app = yaml.safe_load(out)
    assert app["metadata"]["name"].startswith("batchrl-timeline-") and app["spec"]["executor"]["instances"] == 4
    payload = spark_job.parse_payload(app["spec"]["arguments"][0])
    options = make_options(payload["options"], where="driver")
    assert (options.start_ds, options.end_ds, options.add_terminal_state_row) == ("2019-01-01", "2019-01-03", True)

    code, out, err = cli("normalize", "--input", "s3://b/timeline", "--output", "s3://b/norm.json", "--seed", "3",
                         "--spark-mode", "kubernetes", "--dry-run")
    assert code == 0, err
    assert json.loads(yaml.safe_load(out)["spec"]["arguments"][0])["options"]["seed"] == 3

    code, _, err = cli("timeline", "--input", "data/logged", "--output", "s3://b/t", "--start-ds", "2019-01-01",
                       "--end-ds", "2019-01-01", "--no-add-terminal-state-row", "--spark-mode", "kubernetes",
                       "--dry-run")
    assert code == 2 and "s3://" in err
