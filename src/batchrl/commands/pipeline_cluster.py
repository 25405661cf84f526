"""`batchrl pipeline submit|upload|schedule|list-schedules|disable-schedule|delete-schedule|reconcile`.

The cluster actions of ``batchrl pipeline``: thin callers of :mod:`batchrl.kfp.client`. Every action
takes ``--host`` (default ``$KF_PIPELINES_ENDPOINT``) and ``--namespace`` (multi-user Kubeflow);
credentials come from the environment (``KF_PIPELINES_TOKEN``, ``KF_PIPELINES_SA_TOKEN_PATH``) or the
kubeconfig, never from the command line. Output is JSON on stdout.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from batchrl.commands._common import print_json


def register_cluster_actions(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the cluster actions to ``batchrl pipeline``'s action subparsers."""
    _submit(actions)
    _upload(actions)
    _schedule(actions)
    for name, help_text, func in (
        ("list-schedules", "list the recurring runs (all, managed or not)", run_list),
        ("disable-schedule", "disable a recurring run (by name or id); it keeps its history", run_disable),
        ("delete-schedule", "delete a recurring run (by name or id)", run_delete),
    ):
        p = actions.add_parser(name, help=help_text, description=help_text + ".")
        if name != "list-schedules":
            p.add_argument("schedule", metavar="NAME_OR_ID", help="recurring run name or id")
        _connection(p)
        p.set_defaults(func=func)
    _reconcile(actions)


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("KF_PIPELINES_ENDPOINT"),
                   help="KFP API URL, e.g. http://localhost:8080 (default $KF_PIPELINES_ENDPOINT; none: the "
                   "kubeconfig's cluster through the API server proxy)")
    p.add_argument("--namespace", help="Kubernetes namespace (your profile) in multi-user Kubeflow: pipelines "
                   "are uploaded into it, runs and recurring runs created in it")


def _pipeline_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline-file", metavar="FILE",
                   help="compiled pipeline YAML (default pipelines/batch_rl.yaml here, else compiled now)")
    _pipeline_root(p, "artifact root of the runs, e.g. s3://BUCKET/pipeline-root (default: the one compiled "
                   "into the pipeline, else kfp-launcher's defaultPipelineRoot)")
    p.add_argument("--service-account", help="Kubernetes service account of the run's pods")


def _pipeline_root(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--pipeline-root", metavar="URI", help=help_text)


def _submit(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = actions.add_parser("submit", help="start one run of the pipeline on a Kubeflow cluster",
                           description="Upload the compiled pipeline with the parameters in CONFIG and start "
                           "a run in an experiment (created when missing). Prints the run id.")
    p.add_argument("config", metavar="CONFIG", help="YAML/JSON file of pipeline parameters (name: value)")
    _connection(p)
    p.add_argument("--experiment", default="batchrl", help="experiment name (default batchrl)")
    p.add_argument("--run-name", help="run name (default <pipeline>-<version>)")
    _pipeline_source(p)
    p.set_defaults(func=run_submit)


def _upload(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = actions.add_parser("upload", help="upload the compiled pipeline as a named, pinned version",
                           description="Upload the compiled pipeline as version --version of --pipeline-name "
                           "(skipped when that version exists). Schedules pin runs to such a version.")
    _connection(p)
    p.add_argument("--pipeline-file", metavar="FILE",
                   help="compiled pipeline YAML (default pipelines/batch_rl.yaml here, else compiled now)")
    p.add_argument("--pipeline-name", help="pipeline name in KFP (default: the compiled pipeline's name)")
    p.add_argument("--version", help="version name (default <package version>-<sha256 of the YAML>)")
    _pipeline_root(p, "artifact root compiled into the uploaded version (the KFP UI fills it in for the runs "
                   "it creates); default: the file's own")
    p.set_defaults(func=run_upload)


def _schedule(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = actions.add_parser("schedule", help="create a recurring run (cron, pinned version, no catch-up)",
                           description="Upload the pipeline version if needed and create a recurring run "
                           "pinned to it: 6-field KFP cron (second minute hour day month weekday, UTC), "
                           "at most --max-concurrency runs at once, missed runs are not caught up.")
    p.add_argument("config", metavar="CONFIG", help="YAML/JSON file of pipeline parameters (name: value)")
    _connection(p)
    p.add_argument("--cron", required=True, help='KFP cron, 6 fields, e.g. "0 0 2 * * *" (02:00 every day)')
    p.add_argument("--name", default="batchrl-nightly", help="recurring run name (default batchrl-nightly)")
    p.add_argument("--experiment", default="batchrl", help="experiment name (default batchrl)")
    p.add_argument("--max-concurrency", type=int, default=1, help="runs allowed at once (default 1)")
    p.add_argument("--disabled", action="store_true", help="create it disabled")
    p.add_argument("--replace", action="store_true", help="delete an existing recurring run of that name first")
    p.add_argument("--pipeline-name", help="pipeline name in KFP (default: the compiled pipeline's name)")
    p.add_argument("--version", help="pipeline version name to pin (default <package version>-<sha256>)")
    _pipeline_source(p)
    p.set_defaults(func=run_schedule)


def _reconcile(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = actions.add_parser("reconcile", help="make KFP's recurring runs match the applied schedules",
                           description="Read the BatchRLSchedule objects and the schedule ConfigMaps (label "
                           "batchrl.io/schedule=true) in --namespace, or both kinds in the given --manifest "
                           "files, and create / replace / enable / disable / delete the recurring runs this "
                           "reconciler manages so they match; upload the shipped pipeline version when a "
                           "schedule pins it and KFP lacks it; write each object's status. Recurring runs it "
                           "did not create are left alone. Exit status 2 when a schedule or an API call failed "
                           "(the others are still applied).")
    _connection(p)
    p.add_argument("--manifest", action="append", metavar="FILE",
                   help="read BatchRLSchedules and schedule ConfigMaps from this YAML file instead of the cluster "
                   "(repeatable; no status is written)")
    p.add_argument("--pipeline-file", metavar="FILE",
                   help="the compiled pipeline to upload when a schedule pins its version and KFP lacks it "
                   "(default $BATCHRL_PIPELINE_FILE, else pipelines/batch_rl.yaml here, else compiled now)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--watch", action="store_true",
                   help="keep running: reconcile on every BatchRLSchedule change and every --interval seconds")
    p.add_argument("--interval", type=int, default=30, metavar="SECONDS",
                   help="with --watch: the resync period (ConfigMaps, run states; default 30)")
    p.set_defaults(func=run_reconcile)


# ---------------------------------------------------------------- actions


def _parameters(args: argparse.Namespace, package: str) -> dict[str, Any]:
    from batchrl.kfp.local_run import check_parameters, load_pipeline, read_parameters

    parameters = read_parameters(args.config)
    check_parameters(load_pipeline(package), parameters, where=args.config)
    return parameters


def _checked_pipeline_root(args: argparse.Namespace) -> str | None:
    from batchrl.kfp.compile import check_pipeline_root

    return check_pipeline_root(args.pipeline_root) if args.pipeline_root else None


def run_submit(args: argparse.Namespace) -> int:
    from batchrl.kfp import client as kfp_client

    package = kfp_client.pipeline_package(args.pipeline_file)
    parameters = _parameters(args, package)
    _checked_pipeline_root(args)
    client = kfp_client.connect(args.host, args.namespace)
    print_json(kfp_client.submit(client, package, parameters, experiment=args.experiment,
                                 run_name=args.run_name, namespace=args.namespace,
                                 pipeline_root=args.pipeline_root, service_account=args.service_account,
                                 host=args.host))
    return 0


def run_upload(args: argparse.Namespace) -> int:
    from batchrl.kfp import client as kfp_client

    package = kfp_client.pipeline_package(args.pipeline_file)
    if args.pipeline_root:
        package = kfp_client.with_pipeline_root(package, args.pipeline_root)
    client = kfp_client.connect(args.host, args.namespace)
    print_json(kfp_client.ensure_pipeline_version(client, package, args.pipeline_name, args.version, args.host,
                                                  args.namespace))
    return 0


def run_schedule(args: argparse.Namespace) -> int:
    from batchrl.commands._common import build_options
    from batchrl.errors import BatchRLError
    from batchrl.kfp import client as kfp_client
    from batchrl.kube.schedules import ScheduleSpec

    package = kfp_client.pipeline_package(args.pipeline_file)
    parameters = _parameters(args, package)
    pipeline_name = args.pipeline_name or kfp_client.pipeline_name_of(package)
    version_name = args.version or kfp_client.default_version_name(package)
    spec = build_options(ScheduleSpec, "batchrl pipeline schedule", name=args.name, cron=args.cron,
                         pipeline=pipeline_name, pipeline_version=version_name, experiment=args.experiment,
                         parameters=parameters, max_concurrency=args.max_concurrency, enabled=not args.disabled,
                         pipeline_root=_checked_pipeline_root(args) or kfp_client.pipeline_root_of(package),
                         service_account=args.service_account)
    client = kfp_client.connect(args.host, args.namespace)
    existing = [s for s in kfp_client.list_schedules(client, args.namespace, args.host) if s["name"] == spec.name]
    if existing and not args.replace:
        raise BatchRLError(f"a recurring run named '{spec.name}' exists ({existing[0]['id']})",
                           where=args.host or "KFP API",
                           fix="pass --replace to replace it, or choose another --name")
    version = kfp_client.ensure_pipeline_version(client, package, pipeline_name, version_name, args.host,
                                                 args.namespace)
    for old in existing:
        kfp_client.delete_schedule(client, old["id"], args.host)
    summary = kfp_client.create_schedule(client, spec, args.namespace, version=version, host=args.host)
    print_json({"recurring_run": summary, "pipeline_version": version,
                "replaced": [old["id"] for old in existing],
                "watch": "kubectl -n <namespace> get scheduledworkflows (swf)"})
    return 0


def run_list(args: argparse.Namespace) -> int:
    from batchrl.kfp import client as kfp_client

    client = kfp_client.connect(args.host, args.namespace)
    print_json({"recurring_runs": kfp_client.list_schedules(client, args.namespace, args.host)})
    return 0


def run_disable(args: argparse.Namespace) -> int:
    from batchrl.kfp import client as kfp_client

    client = kfp_client.connect(args.host, args.namespace)
    run_id = kfp_client.find_schedule(client, args.schedule, args.namespace, args.host)
    kfp_client.disable_schedule(client, run_id, args.host)
    print_json({"disabled": run_id})
    return 0


def run_delete(args: argparse.Namespace) -> int:
    from batchrl.kfp import client as kfp_client

    client = kfp_client.connect(args.host, args.namespace)
    run_id = kfp_client.find_schedule(client, args.schedule, args.namespace, args.host)
    kfp_client.delete_schedule(client, run_id, args.host)
    print_json({"deleted": run_id})
    return 0


def run_reconcile(args: argparse.Namespace) -> int:
    from batchrl.errors import BatchRLError
    from batchrl.kfp import client as kfp_client
    from batchrl.kfp import reconciler
    from batchrl.kube import schedules
    from batchrl.kube.schedule_resources import resources_from_files

    shipped = reconciler.ShippedPipeline(args.pipeline_file)

    def connect() -> Any:
        return kfp_client.connect(args.host, args.namespace)

    if args.manifest:
        if args.watch:
            raise BatchRLError("--watch reads the cluster", fix="drop --manifest, or --watch")
        sources = reconciler.Sources(schedules.schedules_from_files(args.manifest),
                                     resources_from_files(args.manifest, shipped.version))
        kube_api = None
    else:
        if not args.namespace:
            raise BatchRLError("reconcile needs --namespace (where the schedules are)",
                               fix="pass --namespace, or --manifest FILE")
        from batchrl.kube.launcher import kubernetes_api_client

        kube_api = kubernetes_api_client()
        if args.watch:
            if args.dry_run:
                raise BatchRLError("--watch changes things", fix="drop --dry-run, or --watch")
            reconciler.run_forever(connect, kube_api, args.namespace, shipped, max(args.interval, 1),
                                   host=args.host, report=_report)
            return 0
        sources = reconciler.read_sources(kube_api, args.namespace, shipped)
    summary = reconciler.reconcile(connect, sources, shipped, args.namespace, kube_api, dry_run=args.dry_run,
                                   host=args.host)
    _report(summary, one_line=False)
    return 2 if summary["errors"] else 0


def _report(summary: dict[str, Any], one_line: bool = True) -> None:
    """A pass's JSON summary on stdout (one line per pass under --watch), one line per error on stderr."""
    import json
    import sys

    if one_line:
        print(json.dumps(summary, sort_keys=True, default=str), flush=True)
    else:
        print_json(summary)
    for problem in summary["errors"]:
        print(f"batchrl pipeline reconcile: error: schedule {problem['schedule']}: {problem['error']}",
              file=sys.stderr, flush=True)
