"""The BatchRLSchedule CRD, checked offline: what the API server admits, and that the CRD itself is valid.

What ``kubectl apply`` does with a custom resource (encoded here, no cluster needed):

- Values are validated against ``openAPIV3Schema`` (types, pattern, bounds): a JSON-schema validator
  over the schema (``nullable`` as OpenAPI means it) gives the same verdict.
- Unknown fields are not rejected by the schema: a structural schema *prunes* them (no
  ``additionalProperties: false`` is possible: "additionalProperties and properties are mutual
  exclusive", kubernetes/kubernetes staging/src/k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/
  validation/validation.go). What turns a pruned field into an error is server-side field validation:
  with ``fieldValidation=Strict`` the CR handler's ``unstructuredSchemaCoercer.apply`` prunes with
  ``ReturnPruned: true`` and returns ``runtime.NewStrictDecodingError`` of ``unknown field "<path>"``
  (pkg/apiserver/customresource_handler.go, kubernetes commit 01aa0f3f), and kubectl sends Strict by
  default: ``--validate='strict'`` ("Must be one of: strict (or true), warn, ignore (or false)",
  kubectl v1.32 ``kubectl apply --help``; KEP-2885, GA in 1.27). With ``--validate=warn|ignore`` the
  field is silently dropped. :func:`pruned_paths` walks an object like ``structuralpruning.Prune``.
- The CRD must be structural (pkg/apiserver/schema/validation.go ``ValidateStructural``, kubernetes
  commit 01d1e251): every field has a type unless ``x-kubernetes-preserve-unknown-fields``; no
  ``additionalProperties`` at the root or beside ``properties``; root metadata may only restrict
  ``name``/``generateName``; ``pattern`` must compile as Go RE2; with the status subresource the root
  holds only type/properties/required/description.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from batchrl.kube import schedules
from batchrl.kube.schedule_resources import GROUP, KIND, PLURAL, SPEC_FIELDS, VERSION
from batchrl.kube.schedules import ScheduleSpec, cron_pattern, validate_cron

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "manifests" / "base" / "crds" / "batchrlschedules.yaml"
EXAMPLE = ROOT / "manifests" / "schedules" / "nightly.yaml"


@pytest.fixture(scope="module")
def crd() -> dict:
    return yaml.safe_load(CRD_FILE.read_text())


@pytest.fixture(scope="module")
def schema(crd) -> dict:
    [version] = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def _jsonschema(node):
    """OpenAPI v3 -> JSON schema: ``nullable: true`` admits null; Kubernetes extensions are annotations."""
    if isinstance(node, list):
        return [_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def pruned_paths(value, node, path="") -> list[str]:
    """The fields a structural schema prunes from ``value`` (what Strict field validation reports)."""
    if not isinstance(node, dict) or node.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in pruned_paths(item, node.get("items"), f"{path}[{i}]")]
    if not isinstance(value, dict):
        return []
    found = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if "properties" in node:
            if key in node["properties"]:
                found += [] if (not path and key == "metadata") else pruned_paths(item, node["properties"][key], where)
            elif not (not path and key in ("apiVersion", "kind", "metadata")):
                found.append(where)
        elif isinstance(node.get("additionalProperties"), dict):
            found += pruned_paths(item, node["additionalProperties"], where)
    return found


def admission_errors(obj: dict, schema: dict, field_validation: str = "Strict") -> list[str]:
    """What the API server says about ``obj``: schema violations, plus unknown fields under Strict."""
    errors = [e.message for e in jsonschema.Draft7Validator(_jsonschema(schema)).iter_errors(obj)]
    if field_validation == "Strict":
        errors += [f'unknown field "{p}"' for p in pruned_paths(obj, schema)]
    return errors


def _example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def _with(spec_changes: dict | None = None, **top) -> dict:
    obj = _example()
    obj["spec"].update(spec_changes or {})
    obj.update(top)
    return obj


# ------------------------------------------------------------------ the schema admits / refuses


def test_the_example_is_admitted_and_is_a_valid_schedule(schema):
    obj = _example()
    assert obj["apiVersion"] == f"{GROUP}/{VERSION}" and obj["kind"] == KIND
    assert admission_errors(obj, schema) == []
    assert set(obj["spec"]) <= set(SPEC_FIELDS)


@pytest.mark.parametrize("cron", ["0 2 * * *", "0 0 24 * * *", "60 * * * * *", "0 0 0 0 * *", "0 0 0 * 13 *",
                                  "0 0 0 * * 7", "0 */0 * * * *", "every day", "0 0 2 * * * *", "@sometimes", ""])
def test_a_bad_cron_is_refused(schema, cron):
    errors = admission_errors(_with({"cron": cron}), schema)
    assert errors and "does not match" in errors[0]


@pytest.mark.parametrize("obj, path", [
    (_with({"maxConcurency": 2}), "spec.maxConcurency"),                 # a typo in a spec key
    (_with(specs={"cron": "0 0 2 * * *"}), "specs"),                    # an unknown top-level key
    (_with(status={"recurringRunId": "x", "colour": "red"}), "status.colour"),
])
def test_an_unknown_key_is_refused_under_strict_field_validation(schema, obj, path):
    assert admission_errors(obj, schema, "Strict") == [f'unknown field "{path}"']
    # what --validate=ignore (or an old client) gets instead: the field is pruned, silently
    assert admission_errors(obj, schema, "Ignore") == []


@pytest.mark.parametrize("change", [{"enabled": "yes"}, {"maxConcurrency": "1"}, {"maxConcurrency": 1.5},
                                    {"maxConcurrency": 11}, {"maxConcurrency": 0}, {"parameters": ["env"]},
                                    {"cron": 5}, {"noCatchup": "false"}, {"pipelineVersion": ""}])
def test_a_wrong_type_or_bound_is_refused(schema, change):
    assert admission_errors(_with(change), schema)


def test_missing_spec_or_cron_is_refused_and_parameters_are_free_form(schema):
    no_cron = _example()
    del no_cron["spec"]["cron"]
    assert admission_errors(no_cron, schema)
    no_spec = _example()
    del no_spec["spec"]
    assert admission_errors(no_spec, schema)
    nested = _with({"parameters": {"model": {"layers": [64, 64]}, "seed": 3, "gpu": True, "rate": 0.5}})
    assert admission_errors(nested, schema) == []


def test_the_name_fits_a_recurring_run_name(schema):
    assert admission_errors(_with(metadata={"name": "n" * 128, "namespace": "kubeflow"}), schema) == []
    assert admission_errors(_with(metadata={"name": "n" * 129, "namespace": "kubeflow"}), schema)


# ------------------------------------------------------------------ one cron syntax, two checkers


def test_the_crd_pattern_is_the_reconcilers_cron_syntax(schema):
    assert schema["properties"]["spec"]["properties"]["cron"]["pattern"] == cron_pattern(), (
        "regenerate the pattern in the CRD from batchrl.kube.schedules.cron_pattern()")


@pytest.mark.parametrize("cron", ["0 0 2 * * *", "*/30 * * * * *", "0 0 9-17 * * MON-FRI", "0 15 2 1,15 * ?",
                                  "0 0 0 * jan,Jul sun", "0 0 0 1 1/2 *", "05 07 09 01 02 03", "@daily",
                                  "@every 1h30m", "0 2 * * *", "0 0 24 * * *", "0 1-2-3 * * * *", "0 0 0 * * 7",
                                  "0 0 0 * FOO *", "0  0  2 * * *", "0 0 2 * * * ", "0 0 0 * * 1-"])
def test_pattern_and_validate_cron_agree(cron):
    """robfig/cron v1 (kubeflow/pipelines go.mod: github.com/robfig/cron v1.2.0, ``cron.Parse`` in
    backend/src/apiserver/server/api_converter.go): names case-insensitive, ``*``/``?``, ``a-b``, ``/n``."""
    try:
        validate_cron(cron)
        valid = True
    except ValueError:
        valid = False
    assert bool(re.fullmatch(cron_pattern(), cron)) == valid


def test_backwards_ranges_pass_the_pattern_but_not_the_reconciler():
    assert re.fullmatch(cron_pattern(), "0 0 5-1 * * *")
    with pytest.raises(ValueError, match="backwards"):
        validate_cron("0 0 5-1 * * *")


@pytest.mark.parametrize("field", schedules._CRON_FIELDS, ids=lambda f: f[0])
def test_each_fields_number_regex_is_exactly_its_range(field):
    _, low, high, numbers, _ = field
    for n in range(0, 100):
        for text in {str(n), f"{n:02d}"}:
            assert bool(re.fullmatch(numbers, text)) == (low <= n <= high), (field[0], text)


# ------------------------------------------------------------------ the CRD itself


def _nodes(node, path="openAPIV3Schema"):
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from _nodes(child, f"{path}.properties[{key}]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}.additionalProperties")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}.items")


def structural_problems(schema: dict, status_subresource: bool) -> list[str]:
    problems = []
    for path, node in _nodes(schema):
        if not node.get("type") and not (node.get("x-kubernetes-preserve-unknown-fields")
                                         or node.get("x-kubernetes-int-or-string")):
            problems.append(f"{path}: type must not be empty")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: additionalProperties and properties are mutual exclusive")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: items must be specified")
        if node.get("x-kubernetes-preserve-unknown-fields") is False or node.get("uniqueItems"):
            problems.append(f"{path}: preserve-unknown-fields false / uniqueItems")
        pattern = node.get("pattern")
        if pattern is not None:
            re.compile(pattern)
            if re.search(r"\(\?[=!<]|\\[1-9]", pattern):
                problems.append(f"{path}: lookarounds and backreferences are not RE2")
    if schema.get("type") != "object" or "additionalProperties" in schema:
        problems.append("root: type object, no additionalProperties")
    metadata = schema["properties"].get("metadata", {})
    if set(metadata.get("properties", {})) - {"name", "generateName"}:
        problems.append("root metadata may only restrict name and generateName")
    if status_subresource and set(schema) - {"type", "properties", "required", "description",
                                             "x-kubernetes-validations"}:
        problems.append("with the status subresource the root holds only type/properties/required/description")
    return problems


def _resolves(schema, json_path: str) -> bool:
    node = schema
    for part in re.sub(r"\[\?\(.*?\)\]", "", json_path).strip(".").split("."):
        if part == "metadata":
            return True
        node = node.get("items", node) if node.get("type") == "array" else node
        node = (node.get("properties") or {}).get(part)
        if node is None:
            return False
    return True


def test_the_crd_is_structural_and_valid(crd, schema):
    [version] = crd["spec"]["versions"]
    assert structural_problems(schema, "status" in version.get("subresources", {})) == []
    for k8s in ("1.30.0", "1.33.0"):
        kubernetes_validate.validate(crd, k8s, strict=True)
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}" and names["kind"] == KIND and names["shortNames"]
    assert version["name"] == VERSION and version["served"] and version["storage"]


def test_structural_check_catches_what_the_api_server_refuses(schema):
    broken = copy.deepcopy(schema)
    broken["properties"]["spec"]["additionalProperties"] = False
    del broken["properties"]["spec"]["properties"]["cron"]["type"]
    problems = structural_problems(broken, True)
    assert any("mutual exclusive" in p for p in problems) and any("type must not be empty" in p for p in problems)


def test_printer_columns_show_the_schedule_and_its_last_run(crd, schema):
    [version] = crd["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    for name in ("Cron", "Enabled", "Recurring-Run", "Last-Run", "Last-State", "Ready", "Age"):
        assert name in columns, name
    for column in columns.values():
        assert _resolves(schema, column["jsonPath"]), column
    assert columns["Age"]["type"] == "date" and columns["Enabled"]["type"] == "boolean"


def test_crd_spec_keys_are_the_schedule_fields(schema):
    spec = schema["properties"]["spec"]["properties"]
    assert set(spec) == set(SPEC_FIELDS)
    assert set(SPEC_FIELDS.values()) == set(ScheduleSpec.model_fields) - {"name"}
    assert spec["maxConcurrency"]["maximum"] == ScheduleSpec.model_fields["max_concurrency"].metadata[1].le
    for key, field_name in SPEC_FIELDS.items():
        if "default" in spec[key]:
            assert spec[key]["default"] == ScheduleSpec.model_fields[field_name].default, key


def test_kustomize_renders_the_crd_cluster_scoped_with_the_reconciler():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    text = subprocess.run(["kubectl", "kustomize", str(ROOT / "manifests" / "overlays" / "minio")], check=True,
                          capture_output=True, text=True, timeout=120).stdout
    docs = [d for d in yaml.safe_load_all(text) if d]
    [crd] = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert "namespace" not in crd["metadata"], "a CRD is cluster-scoped"
    assert any(d["kind"] == "Deployment" and d["metadata"]["name"] == "batchrl-schedule-reconciler" for d in docs)
