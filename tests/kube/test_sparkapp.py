"""The SparkApplication builder: schema-valid against the spark-operator CRD, secure, no credentials."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import yaml

from batchrl import __version__
from batchrl.errors import BatchRLError
from batchrl.kube.sparkapp import (
    SPARK_VERSION,
    SparkKubernetesOptions,
    application_name,
    build_spark_application,
    stage_payload,
    to_yaml,
)

#: Vendored from kubeflow/spark-operator (source and version: tests/resources/crds/README.md).
CRD = Path(__file__).resolve().parents[1] / "resources" / "crds" / "sparkoperator.k8s.io_sparkapplications.yaml"


def _nullable_to_json_schema(node):
    """OpenAPI ``nullable: true`` -> JSON Schema ``null`` type; drop the k8s ``x-kubernetes-*`` keys."""
    if isinstance(node, list):
        return [_nullable_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable_to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    return out


@pytest.fixture(scope="module")
def crd():
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta2")
    schema = version["schema"]["openAPIV3Schema"]
    return SimpleNamespace(validator=jsonschema.Draft7Validator(_nullable_to_json_schema(schema)), raw=schema)


def unknown_fields(obj, schema, path="") -> list[str]:
    """Keys the API server would prune silently (not in the structural schema)."""
    found = []
    if isinstance(obj, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                found += unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                found.append(f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for index, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{path}[{index}]")
    return found


def _payload(stage="timeline"):
    return stage_payload(stage, "s3://bucket/logged", f"s3://bucket/{stage}", {"seed": 1})


OPTIONS = SparkKubernetesOptions(s3_endpoint="http://minio.kubeflow:9000", namespace="team-a",
                                 executor_instances=3, executor_memory="3g", ttl_seconds=600)


@pytest.mark.parametrize("stage", ["timeline", "normalize", "prepare"])
def test_generated_application_validates_against_the_crd(crd, stage):
    app = build_spark_application(_payload(stage), OPTIONS)
    errors = sorted(crd.validator.iter_errors(app), key=str)
    assert not errors, [e.message for e in errors]
    assert unknown_fields(app, crd.raw) == []
    # and after a YAML round trip (what --dry-run prints)
    assert not list(crd.validator.iter_errors(yaml.safe_load(to_yaml(app))))


def test_crd_validation_catches_a_broken_object(crd):
    app = build_spark_application(_payload(), OPTIONS)
    app["spec"]["type"] = "Rust"
    del app["spec"]["sparkVersion"]
    messages = " ".join(e.message for e in crd.validator.iter_errors(app))
    assert "Rust" in messages and "sparkVersion" in messages
    app["spec"]["driver"]["coreLimitt"] = "1"
    assert unknown_fields(app, crd.raw) == [".spec.driver.coreLimitt"]


def test_options_map_to_the_spec():
    app = build_spark_application(_payload(), OPTIONS)
    spec = app["spec"]
    assert app["metadata"]["namespace"] == "team-a"
    assert spec["image"] == f"ghcr.io/batchrl/batchrl-spark:{__version__}"
    assert spec["sparkVersion"] == SPARK_VERSION
    assert spec["mainApplicationFile"] == "local:///opt/batchrl/spark_job.py"
    assert spec["timeToLiveSeconds"] == 600
    assert spec["executor"]["instances"] == 3 and spec["executor"]["memory"] == "3g"
    assert spec["driver"]["serviceAccount"] == "batchrl-spark"
    assert spec["sparkConf"]["spark.hadoop.fs.s3a.endpoint"] == "http://minio.kubeflow:9000"
    assert spec["sparkConf"]["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert spec["sparkConf"]["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert json.loads(spec["arguments"][0]) == _payload()
    for role in ("driver", "executor"):
        pod = spec[role]
        assert pod["coreLimit"] == str(pod["cores"]), "every pod has a CPU limit"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in pod["env"] if "valueFrom" in e}
        assert refs == {"AWS_ACCESS_KEY_ID": {"name": "batchrl-s3", "key": "AWS_ACCESS_KEY_ID"},
                        "AWS_SECRET_ACCESS_KEY": {"name": "batchrl-s3", "key": "AWS_SECRET_ACCESS_KEY"}}


def test_aws_s3_without_endpoint_has_no_endpoint_settings():
    spec = build_spark_application(_payload(), SparkKubernetesOptions())["spec"]
    assert not any(k.startswith("spark.hadoop.fs.s3a.endpoint") and k.endswith("endpoint") for k in spec["sparkConf"])
    assert all(e["name"] != "AWS_ENDPOINT_URL" for e in spec["driver"]["env"])


def test_name_is_deterministic_and_follows_the_payload():
    assert application_name(_payload()) == application_name(_payload())
    assert application_name(_payload()) != application_name(
        stage_payload("timeline", "s3://bucket/logged", "s3://bucket/other", {"seed": 1}))
    name = application_name(_payload("normalize"))
    assert name.startswith("batchrl-normalize-") and len(name) <= 40


def test_no_credential_in_the_rendered_object(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value-123")
    text = to_yaml(build_spark_application(_payload(), OPTIONS))
    assert "AKIAEXAMPLEKEY" not in text and "very-secret-value-123" not in text
    assert "secretKeyRef" in text


@pytest.mark.parametrize("uri", ["data/logged", "file:///tmp/x", "/abs/path"])
def test_local_paths_are_refused_on_kubernetes(uri):
    with pytest.raises(BatchRLError, match="s3://"):
        stage_payload("timeline", uri, "s3://bucket/out", {})


@pytest.mark.parametrize("field, value", [
    ("executor_memory", "2 GB"), ("driver_cores", 0), ("namespace", "Team_A"),
    ("s3_endpoint", "minio:9000"), ("s3_endpoint", "http://user:pw@minio:9000"), ("colour", "red")])
def test_bad_options_are_rejected(field, value):
    with pytest.raises(ValueError):
        SparkKubernetesOptions(**{field: value})


def test_unknown_stage_is_rejected():
    with pytest.raises(BatchRLError, match="not a Spark stage"):
        stage_payload("train", "s3://b/i", "s3://b/o", {})


def test_the_argument_is_what_spark_job_accepts():
    """Contract with src/batchrl/spark_job.py: the driver parses our JSON argument and the stage options."""
    from batchrl import spark_job
    from batchrl.data.timeline import make_options

    options = make_options({"start_ds": "2019-01-01", "end_ds": "2019-01-02", "add_terminal_state_row": True},
                           where="test")
    payload = stage_payload("timeline", "s3://b/logged", "s3://b/timeline", options.model_dump(mode="json"))
    app = build_spark_application(payload, OPTIONS)
    parsed = spark_job.parse_payload(app["spec"]["arguments"][0])
    assert parsed == payload
    assert make_options(parsed["options"], where="driver") == options
    assert "spark_master" not in parsed, "the master is the one spark-submit configured on the cluster"


def test_spark_job_knows_every_stage_the_cli_sends():
    from batchrl import spark_job

    missing = sorted({"timeline", "normalize"} - set(spark_job.STAGES))
    if missing:
        pytest.skip(f"spark_job.py has no {missing} stage yet: --spark-mode kubernetes cannot run it")
    from batchrl.data.normalize import NormalizeOptions

    options = NormalizeOptions(feature_overrides={3: "ENUM"}, seed=5)
    payload = stage_payload("normalize", "s3://b/timeline", "s3://b/norm.json", options.model_dump(mode="json"))
    parsed = spark_job.parse_payload(build_spark_application(payload, OPTIONS)["spec"]["arguments"][0])
    assert NormalizeOptions(**parsed["options"]) == options


def test_prepare_payload_carries_named_uris_and_checks_each(crd):
    payload = stage_payload("prepare", {"timeline": "s3://b/t", "normalization": "s3://b/n.json"},
                            {"train": "s3://b/train", "eval": "s3://b/eval"}, {})
    assert payload["input"] == {"timeline": "s3://b/t", "normalization": "s3://b/n.json"}
    app = build_spark_application(payload, SparkKubernetesOptions())
    assert json.loads(app["spec"]["arguments"][0])["output"]["eval"] == "s3://b/eval"
    with pytest.raises(BatchRLError, match="prepare output.eval"):
        stage_payload("prepare", {"timeline": "s3://b/t", "normalization": "s3://b/n.json"},
                      {"train": "s3://b/train", "eval": "/tmp/eval"}, {})


def test_namespace_is_the_given_one_else_the_pods_else_kubeflow(tmp_path, monkeypatch):
    """A KFP step in a profile namespace may not create objects in `kubeflow` (403): without an explicit
    namespace the application goes where the step's pod runs (its service-account namespace file)."""
    import batchrl.kube.sparkapp as sparkapp

    def namespace(options):
        return build_spark_application(_payload(), options)["metadata"]["namespace"]

    assert namespace(SparkKubernetesOptions()) == "kubeflow", "outside a pod"
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("team-a\n")
    monkeypatch.setattr(sparkapp, "SERVICE_ACCOUNT_NAMESPACE_FILE", namespace_file)
    assert namespace(SparkKubernetesOptions()) == "team-a", "the pod's own namespace"
    assert namespace(SparkKubernetesOptions(namespace="spark-jobs")) == "spark-jobs", "an explicit one wins"
