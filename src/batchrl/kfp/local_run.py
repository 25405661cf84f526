"""Run the *compiled* pipeline on this machine with ``kfp.local``: what runs here is what runs on a cluster.

The pipeline YAML is loaded with ``kfp.components.load_component_from_file`` and executed by
``kfp.local.SubprocessRunner`` in the current Python environment (Kubernetes-only settings such as
the GPU request and the secret are ignored there). Every step's outputs land under the pipeline root
in ``<pipeline-name>-<timestamp>/<task>/``; :func:`run_local` returns them with their metadata.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import yaml

from batchrl.errors import BatchRLError

log = logging.getLogger(__name__)

DEFAULT_PIPELINE_ROOT = "local_outputs/kfp"


def read_parameters(path: str) -> dict[str, Any]:
    """Pipeline parameters from a YAML or JSON mapping file."""
    from batchrl import storage

    try:
        data = yaml.safe_load(storage.read_bytes(path).decode())
    except yaml.YAMLError as exc:
        raise BatchRLError(f"not valid YAML/JSON: {exc}", where=path, fix="correct the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BatchRLError("pipeline parameters must be a mapping of parameter name -> value", where=path,
                           fix="write one 'name: value' line per parameter")
    return data


def load_pipeline(pipeline_file: str | Path) -> Any:
    """The compiled pipeline as a component (``kfp.components.load_component_from_file``)."""
    from kfp import components

    if not Path(pipeline_file).is_file():
        raise BatchRLError("no compiled pipeline here", where=str(pipeline_file),
                           fix="run `batchrl pipeline compile --output FILE` or leave --pipeline out")
    return components.load_component_from_file(str(pipeline_file))


def check_parameters(pipeline: Any, parameters: dict[str, Any], where: str) -> None:
    """Unknown names and missing required parameters are errors that name them."""
    inputs = pipeline.component_spec.inputs or {}
    check_parameter_names({name: spec.optional for name, spec in inputs.items()}, parameters, where)


def spec_inputs(pipeline_spec: dict[str, Any]) -> dict[str, bool]:
    """Parameter name -> optional, from a compiled pipeline spec (``root.inputDefinitions``)."""
    params = ((pipeline_spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    return {name: bool(p.get("isOptional") or "defaultValue" in p) for name, p in params.items()}


def check_parameter_names(inputs: dict[str, bool], parameters: dict[str, Any], where: str) -> None:
    """``inputs``: parameter name -> optional."""
    unknown = sorted(set(parameters) - set(inputs))
    if unknown:
        raise BatchRLError(f"unknown pipeline parameter(s) {unknown}", where=where,
                           fix=f"parameters of this pipeline: {', '.join(sorted(inputs))}")
    missing = sorted(name for name, optional in inputs.items() if not optional and name not in parameters)
    if missing:
        raise BatchRLError(f"missing required pipeline parameter(s) {missing}", where=where,
                           fix="add them to the parameter file")


def collect_outputs(run_dir: Path) -> dict[str, Any]:
    """Each task's output artifacts (uri, metadata) and parameters, from its ``executor_output.json``."""
    tasks: dict[str, Any] = {}
    for output_file in sorted(run_dir.glob("*/executor_output.json")):
        data = json.loads(output_file.read_text())
        artifacts = {name: {"uri": entry["artifacts"][0]["uri"], "metadata": entry["artifacts"][0].get("metadata", {})}
                     for name, entry in sorted(data.get("artifacts", {}).items()) if entry.get("artifacts")}
        tasks[output_file.parent.name] = {"artifacts": artifacts, "parameters": data.get("parameterValues", {})}
    return tasks


def run_local(parameters: dict[str, Any], pipeline_root: str | Path = DEFAULT_PIPELINE_ROOT,
              pipeline_file: str | Path | None = None, cache: bool = False, where: str = "parameters") -> dict[str, Any]:
    """Run the compiled pipeline with ``parameters``; returns the run folder and every task's outputs.

    ``pipeline_file`` defaults to the package's pipeline compiled now (the same YAML as
    ``pipelines/batch_rl.yaml``). ``cache`` reuses outputs of earlier local runs of cacheable steps.
    """
    from kfp import local

    from batchrl.kfp.compile import compile_pipeline

    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="batchrl-pipeline-") as tmp:
        compiled = Path(pipeline_file) if pipeline_file else compile_pipeline(Path(tmp) / "batch_rl.yaml")
        pipeline = load_pipeline(compiled)
    check_parameters(pipeline, parameters, where)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True,
               enable_caching=cache)
    before = {p.name for p in root.iterdir()}
    name = pipeline.component_spec.name
    log.info("running pipeline %s under kfp.local (outputs in %s)", name, root)
    # kfp.local prints the steps' logs on stdout: send them to stderr, so stdout is this run's summary
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        # the project images are not named "python": kfp.local warns, but the steps run in this environment
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        try:
            pipeline(**parameters)
        except TypeError as exc:
            raise BatchRLError(f"bad pipeline parameter: {exc}", where=where,
                               fix="give each parameter a value of its declared type") from None
        except RuntimeError as exc:
            runs = sorted(p for p in root.iterdir() if p.name not in before and p.is_dir())
            raise BatchRLError(f"the pipeline run failed: {str(exc).splitlines()[0]}",
                               where=str(runs[-1]) if runs else str(root),
                               fix="see the failing step's log above") from None
    runs = sorted(p for p in root.iterdir() if p.name not in before and p.is_dir() and p.name.startswith(name))
    if not runs:
        raise BatchRLError("the run left no output folder", where=str(root), fix="check the pipeline root")
    run_dir = runs[-1]
    return {"pipeline": name, "run_dir": str(run_dir), "tasks": collect_outputs(run_dir)}
