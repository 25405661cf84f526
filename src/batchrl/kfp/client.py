"""Talking to a Kubeflow Pipelines cluster through ``kfp.Client``: runs, pinned versions, recurring runs.

Connection: ``--host`` (or ``KF_PIPELINES_ENDPOINT``); a bearer token from ``KF_PIPELINES_TOKEN``, or
the projected service-account token at ``KF_PIPELINES_SA_TOKEN_PATH`` (in-cluster, audience
``pipelines.kubeflow.org``); without a host, kfp falls back to the kubeconfig's cluster. Tokens never
appear in output or errors.

Multi-user Kubeflow: every action takes the profile ``namespace``; pipelines are uploaded into it
(namespaced pipelines, looked up there too), runs and recurring runs are created in it.

Pipeline root: the KFP backend takes a run's artifact root from the run itself (``runtime_config``),
else from the ``kfp-launcher`` ConfigMap of the run's namespace; it never reads the compiled
``defaultPipelineRoot`` (only the KFP UI copies that into the runs it creates). So :func:`submit` and
schedules send the package's compiled-in root explicitly unless a root is given.

Recurring runs are always pinned to an uploaded pipeline version (named ``<package version>-<sha256 of
the compiled YAML>``), never catch up on missed runs, and run at most ``max_concurrency`` at once.
The schedule reconciler (:mod:`batchrl.kfp.reconciler`) builds on these calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from batchrl import __version__
from batchrl.errors import BatchRLError
from batchrl.kube.launcher import redact
from batchrl.kube.schedules import ExistingRun, ScheduleSpec

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "batchrl"
PIPELINE_FILE = Path("pipelines") / "batch_rl.yaml"
TOKEN_ENV = "KF_PIPELINES_TOKEN"
SA_TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"


@contextlib.contextmanager
def _kfp_calls(action: str, host: str | None) -> Iterator[None]:
    """Turn kfp/HTTP failures into a BatchRLError; keep kfp's ``print`` off our stdout (JSON only)."""
    import kfp_server_api
    import urllib3

    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except kfp_server_api.ApiException as exc:
        body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
        try:
            body = json.loads(body).get("message", body)
        except (ValueError, AttributeError):
            pass
        fix = "check the parameters and the KFP API server's log"
        if exc.status in (401, 403):
            fix = ("authenticate: set KF_PIPELINES_TOKEN (or KF_PIPELINES_SA_TOKEN_PATH in a pod), and check "
                   "your access to the namespace (--namespace) in multi-user Kubeflow")
        raise BatchRLError(f"Kubeflow Pipelines refused to {action}: HTTP {exc.status} "
                           f"{redact(str(body)).strip()[:500]}", where=host or "KFP API", fix=fix) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise BatchRLError(f"could not reach Kubeflow Pipelines to {action}: {redact(str(exc))[:300]}",
                           where=host or "KFP API",
                           fix="check --host (e.g. http://localhost:8080 after `kubectl -n kubeflow "
                               "port-forward svc/ml-pipeline-ui 8080:80`)") from None
    except ValueError as exc:  # kfp's own checks (duplicate names, bad package)
        raise BatchRLError(f"could not {action}: {redact(str(exc))}", where=host or "KFP API",
                           fix="check the names and the pipeline file") from None


def connect(host: str | None = None, namespace: str | None = None) -> Any:
    """A ``kfp.Client`` with credentials from the usual places (see the module docstring)."""
    import kfp

    host = host or os.environ.get("KF_PIPELINES_ENDPOINT")
    kwargs: dict[str, Any] = {"host": host}
    if namespace:
        kwargs["namespace"] = namespace
    token = os.environ.get(TOKEN_ENV)
    if token:
        kwargs["existing_token"] = token
    elif os.environ.get(SA_TOKEN_PATH_ENV):
        from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

        path = os.environ[SA_TOKEN_PATH_ENV]
        if not os.path.exists(path):
            raise BatchRLError(f"no service-account token at {path}", where=SA_TOKEN_PATH_ENV,
                               fix="mount a projected token with audience pipelines.kubeflow.org there")
        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path)
    import warnings

    with warnings.catch_warnings(), _kfp_calls("connect", host):
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(**kwargs)


# ---------------------------------------------------------------- the pipeline package


def pipeline_package(pipeline_file: str | None, workdir: str | Path = ".") -> str:
    """The compiled pipeline to send: ``pipeline_file``, else ``pipelines/batch_rl.yaml`` here, else
    the installed package's pipeline compiled now (to a temporary file)."""
    if pipeline_file:
        if not Path(pipeline_file).is_file():
            raise BatchRLError(f"pipeline file not found: {pipeline_file}",
                               fix="compile it with `batchrl pipeline compile` or omit --pipeline-file")
        return str(pipeline_file)
    checked_in = Path(workdir) / PIPELINE_FILE
    if checked_in.is_file():
        return str(checked_in)
    from batchrl.kfp.compile import compile_pipeline

    out = Path(tempfile.mkdtemp(prefix="batchrl-pipeline-")) / "batch_rl.yaml"
    compile_pipeline(out)
    return str(out)


def _pipeline_document(package: str) -> dict[str, Any]:
    with open(package, encoding="utf-8") as fh:
        return next(yaml.safe_load_all(fh))


def pipeline_name_of(package: str) -> str:
    name: str = _pipeline_document(package)["pipelineInfo"]["name"]
    return name


def pipeline_root_of(package: str) -> str | None:
    """The package's compiled-in default pipeline root (``defaultPipelineRoot``), if any."""
    return _pipeline_document(package).get("defaultPipelineRoot") or None


def with_pipeline_root(package: str, pipeline_root: str) -> str:
    """A copy of ``package`` (in a temporary folder) whose default pipeline root is ``pipeline_root``."""
    from batchrl.kfp.compile import check_pipeline_root

    check_pipeline_root(pipeline_root)
    text = Path(package).read_text(encoding="utf-8")
    documents = list(yaml.safe_load_all(text))
    documents[0]["defaultPipelineRoot"] = pipeline_root
    out = Path(tempfile.mkdtemp(prefix="batchrl-pipeline-")) / Path(package).name
    out.write_text(yaml.safe_dump_all(documents, sort_keys=True), encoding="utf-8")
    return str(out)


def default_version_name(package: str) -> str:
    """``<package version>-<first 12 hex of sha256(compiled YAML)>``: same pipeline, same version."""
    digest = hashlib.sha256(Path(package).read_bytes()).hexdigest()[:12]
    return f"{__version__}-{digest}"


def _equals_filter(key: str, value: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": key, "stringValue": value}]})


def pipeline_id(client: Any, pipeline_name: str, namespace: str | None = None) -> str | None:
    """The id of the pipeline named ``pipeline_name``: in ``namespace`` (multi-user), else shared."""
    found = client.list_pipelines(page_size=2, filter=_equals_filter("display_name", pipeline_name),
                                  namespace=namespace).pipelines or []
    if len(found) > 1:
        raise BatchRLError(f"{len(found)} pipelines are named '{pipeline_name}'", where=namespace or "KFP API",
                           fix="pass --pipeline-name with a unique name")
    return found[0].pipeline_id if found else None


def find_pipeline_version(client: Any, pipeline_name: str, version_name: str,
                          namespace: str | None = None) -> tuple[str, str] | None:
    """(pipeline id, version id) of an uploaded version, or None."""
    found_id = pipeline_id(client, pipeline_name, namespace)
    if found_id is None:
        return None
    versions = client.list_pipeline_versions(found_id, page_size=2,
                                             filter=_equals_filter("display_name", version_name)).pipeline_versions
    return (found_id, versions[0].pipeline_version_id) if versions else None


def lookup_pipeline_version(client: Any, pipeline_name: str, version_name: str,
                            host: str | None = None) -> tuple[str, str] | None:
    """:func:`find_pipeline_version` with KFP errors as BatchRLError."""
    with _kfp_calls("look up the pipeline version", host):
        return find_pipeline_version(client, pipeline_name, version_name)


def ensure_pipeline_version(client: Any, package: str, pipeline_name: str | None = None,
                            version_name: str | None = None, host: str | None = None,
                            namespace: str | None = None) -> dict[str, Any]:
    """Upload ``package`` as version ``version_name`` of ``pipeline_name`` (in ``namespace`` when given:
    multi-user Kubeflow) unless it is there already."""
    pipeline_name = pipeline_name or pipeline_name_of(package)
    version_name = version_name or default_version_name(package)
    with _kfp_calls("upload the pipeline", host):
        found = find_pipeline_version(client, pipeline_name, version_name, namespace)
        uploaded = found is None
        if found is None:
            found_id = pipeline_id(client, pipeline_name, namespace)
            if found_id is None:
                found_id = client.upload_pipeline(package, pipeline_name=pipeline_name,
                                                  description="batchrl batch-RL pipeline",
                                                  namespace=namespace).pipeline_id
            version = client.upload_pipeline_version(package, pipeline_version_name=version_name,
                                                     pipeline_id=found_id)
            found = (found_id, version.pipeline_version_id)
    return {"pipeline": pipeline_name, "pipeline_id": found[0], "version": version_name,
            "version_id": found[1], "uploaded": uploaded, "namespace": namespace,
            "pipeline_root": pipeline_root_of(package)}


# ---------------------------------------------------------------- runs


def submit(client: Any, package: str, arguments: dict[str, Any], experiment: str = DEFAULT_EXPERIMENT,
           run_name: str | None = None, namespace: str | None = None, pipeline_root: str | None = None,
           service_account: str | None = None, host: str | None = None) -> dict[str, Any]:
    """Start one run of the compiled pipeline; returns its id and experiment. ``pipeline_root`` None: the
    package's compiled-in root (sent explicitly: the backend ignores it), else kfp-launcher's default."""
    run_name = run_name or f"{pipeline_name_of(package)}-{__version__}"
    pipeline_root = pipeline_root or pipeline_root_of(package)
    with _kfp_calls("create the run", host):
        result = client.create_run_from_pipeline_package(
            package, arguments=arguments, run_name=run_name, experiment_name=experiment, namespace=namespace,
            pipeline_root=pipeline_root, service_account=service_account)
    return {"run_id": result.run_id, "run_name": run_name, "experiment": experiment, "namespace": namespace,
            "pipeline_root": pipeline_root, "pipeline_file": package}


def _experiment_id(client: Any, name: str, namespace: str | None) -> str:
    experiment_id: str = client.create_experiment(name, namespace=namespace).experiment_id
    return experiment_id


# ---------------------------------------------------------------- recurring runs


def _cron_of(run: Any) -> str | None:
    trigger = getattr(run, "trigger", None)
    cron = getattr(trigger, "cron_schedule", None) if trigger else None
    return getattr(cron, "cron", None)


def _recurring_runs(client: Any, namespace: str | None) -> list[Any]:
    runs: list[Any] = []
    token = ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, namespace=namespace)
        runs += page.recurring_runs or []
        token = page.next_page_token or ""
        if not token:
            return runs


def _summary(run: Any) -> dict[str, Any]:
    version = getattr(run, "pipeline_version_reference", None)
    return {"id": run.recurring_run_id, "name": run.display_name, "cron": _cron_of(run),
            "enabled": str(run.mode).upper().endswith("ENABLE"), "max_concurrency": run.max_concurrency,
            "no_catchup": run.no_catchup, "experiment_id": run.experiment_id,
            "pipeline_version_id": getattr(version, "pipeline_version_id", None),
            "managed_by_reconciler": ExistingRun(run.recurring_run_id, run.display_name, run.description or "",
                                                 True).managed}


def list_schedules(client: Any, namespace: str | None = None, host: str | None = None) -> list[dict[str, Any]]:
    with _kfp_calls("list recurring runs", host):
        return [_summary(run) for run in _recurring_runs(client, namespace)]


def create_schedule(client: Any, spec: ScheduleSpec, namespace: str | None = None, managed: bool = False,
                    version: dict[str, Any] | None = None, host: str | None = None) -> dict[str, Any]:
    """Create the recurring run ``spec`` describes, pinned to ``version`` (or the spec's named version).

    The run's pipeline root: the spec's, else the version's compiled-in one (``version["pipeline_root"]``),
    sent explicitly because the KFP backend ignores a compiled-in root (it falls back to kfp-launcher's).
    """
    with _kfp_calls("create the recurring run", host):
        if version is None:
            found = find_pipeline_version(client, spec.pipeline, spec.pipeline_version, namespace)
            if found is None:
                raise BatchRLError(
                    f"pipeline version '{spec.pipeline_version}' of pipeline '{spec.pipeline}' is not uploaded",
                    where=f"schedule {spec.name}",
                    fix="upload it (`batchrl pipeline upload --version NAME`) or correct pipeline_version")
            version = {"pipeline_id": found[0], "version_id": found[1]}
        run = client.create_recurring_run(
            experiment_id=_experiment_id(client, spec.experiment, namespace), job_name=spec.name,
            description=spec.managed_description() if managed else (spec.description or None),
            cron_expression=spec.cron, max_concurrency=spec.max_concurrency, no_catchup=spec.no_catchup,
            params=spec.parameters, pipeline_id=version["pipeline_id"], version_id=version["version_id"],
            enabled=spec.enabled, pipeline_root=spec.pipeline_root or version.get("pipeline_root"),
            service_account=spec.service_account)
    return _summary(run)


def find_schedule(client: Any, name_or_id: str, namespace: str | None = None, host: str | None = None) -> str:
    """The id of the recurring run named (or with id) ``name_or_id``; an error when none or several."""
    with _kfp_calls("list recurring runs", host):
        runs = _recurring_runs(client, namespace)
    by_id = [r for r in runs if r.recurring_run_id == name_or_id]
    matches = by_id or [r for r in runs if r.display_name == name_or_id]
    if not matches:
        raise BatchRLError(f"no recurring run named or with id '{name_or_id}'", where=host or "KFP API",
                           fix="see `batchrl pipeline list-schedules`")
    if len(matches) > 1:
        ids = ", ".join(r.recurring_run_id for r in matches)
        raise BatchRLError(f"{len(matches)} recurring runs are named '{name_or_id}' ({ids})",
                           where=host or "KFP API", fix="pass the id instead of the name")
    run_id: str = matches[0].recurring_run_id
    return run_id


def existing_runs(client: Any, namespace: str | None = None, host: str | None = None) -> list[ExistingRun]:
    """Every recurring run (managed or not), as the reconciler's plan sees them."""
    with _kfp_calls("list recurring runs", host):
        return [ExistingRun(r.recurring_run_id, r.display_name, r.description or "",
                            str(r.mode).upper().endswith("ENABLE")) for r in _recurring_runs(client, namespace)]


def enable_schedule(client: Any, run_id: str, host: str | None = None) -> None:
    with _kfp_calls("enable the recurring run", host):
        client.enable_recurring_run(run_id)


def disable_schedule(client: Any, run_id: str, host: str | None = None) -> None:
    with _kfp_calls("disable the recurring run", host):
        client.disable_recurring_run(run_id)


def delete_schedule(client: Any, run_id: str, host: str | None = None) -> None:
    with _kfp_calls("delete the recurring run", host):
        client.delete_recurring_run(run_id)


def last_run(client: Any, recurring_run_id: str, namespace: str | None = None,
             host: str | None = None) -> dict[str, Any] | None:
    """The newest run a recurring run started (KFP's run filter key ``recurring_run_id``), or None."""
    with _kfp_calls("list the recurring run's runs", host):
        runs = client.list_runs(page_size=1, sort_by="created_at desc", namespace=namespace,
                                filter=_equals_filter("recurring_run_id", recurring_run_id)).runs or []
    if not runs:
        return None
    created = runs[0].created_at
    return {"id": runs[0].run_id, "state": str(runs[0].state or "") or None,
            "createdAt": created.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(created, "strftime") else created}


def pipeline_version_spec(client: Any, pipeline_id: str, version_id: str, host: str | None = None) -> dict[str, Any]:
    """The compiled pipeline spec KFP stored for a version (without the platform spec)."""
    with _kfp_calls("read the pipeline version", host):
        spec = client.get_pipeline_version(pipeline_id, version_id).pipeline_spec or {}
    return spec.get("pipeline_spec", spec) if isinstance(spec, dict) else {}
