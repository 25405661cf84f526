"""``--engine``, ``--spark-mode {local,kubernetes}`` and the Spark-on-Kubernetes options of the data stages.

A Spark stage command calls :func:`add_spark_mode_options` on its parser and, in ``run``, returns
``run_on_kubernetes(args, stage, input, output, options)`` when it is not ``None``: with
``--spark-mode kubernetes`` the stage runs as a SparkApplication (``--dry-run`` prints it instead),
otherwise the command goes on locally.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import BaseModel

from batchrl.commands._common import build_options, print_json


def add_engine_option(parser: argparse.ArgumentParser) -> None:
    """``--engine auto|duckdb|spark`` and ``--spark-master`` (the local Spark's master)."""
    parser.add_argument("--engine", choices=["auto", "duckdb", "spark"], default="auto",
                        help="data engine: DuckDB in this process (auto, the default) or Spark (spark; always "
                        "with --spark-mode kubernetes)")
    parser.add_argument("--spark-master", default="local[*]", help="Spark master with --engine spark (default local[*])")


def add_spark_mode_options(parser: argparse.ArgumentParser) -> None:
    from batchrl.kfp.images import DEFAULT_IMAGES

    add_engine_option(parser)
    parser.add_argument("--spark-mode", choices=["local", "kubernetes"], default="local",
                        help="run Spark here (local, default) or as a SparkApplication on Kubernetes "
                        "(spark-operator; input and output must be s3:// URIs)")
    group = parser.add_argument_group("Spark on Kubernetes (with --spark-mode kubernetes)")
    group.add_argument("--spark-image", dest="k8s_image", help=f"Spark image (default {DEFAULT_IMAGES.spark})")
    group.add_argument("--driver-cores", dest="k8s_driver_cores", type=int, help="driver cores (default 1)")
    group.add_argument("--driver-memory", dest="k8s_driver_memory", help="driver memory, e.g. 2g (default 2g)")
    group.add_argument("--executor-cores", dest="k8s_executor_cores", type=int, help="cores per executor (default 1)")
    group.add_argument("--executor-memory", dest="k8s_executor_memory", help="memory per executor (default 2g)")
    group.add_argument("--executor-instances", dest="k8s_executor_instances", type=int,
                       help="number of executors (default 2)")
    group.add_argument("--service-account", dest="k8s_service_account",
                       help="the driver's service account (default batchrl-spark, from manifests/)")
    group.add_argument("--namespace", dest="k8s_namespace", help="namespace of the SparkApplication (default: this pod's own "
                       "namespace inside a pod, else kubeflow)")
    group.add_argument("--s3-secret", dest="k8s_s3_secret",
                       help="secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (default batchrl-s3)")
    group.add_argument("--s3-endpoint", dest="k8s_s3_endpoint",
                       help="S3 endpoint as seen from the cluster, e.g. http://batchrl-minio.kubeflow:9000 "
                       "(default: AWS S3)")
    group.add_argument("--ttl-seconds", dest="k8s_ttl_seconds", type=int,
                       help="seconds the operator keeps the finished SparkApplication (default 3600)")
    group.add_argument("--timeout-seconds", dest="k8s_timeout_seconds", type=float,
                       help="give up (and delete the application) after this long (default 10800)")
    group.add_argument("--poll-seconds", dest="k8s_poll_seconds", type=float,
                       help="seconds between status checks (default 5)")
    group.add_argument("--keep-application", dest="k8s_keep", action="store_true",
                       help="do not delete the SparkApplication when done (its TTL still applies)")
    group.add_argument("--dry-run", dest="k8s_dry_run", action="store_true",
                       help="print the SparkApplication YAML and exit")


def kubernetes_options(args: argparse.Namespace, where: str) -> Any:
    """The :class:`SparkKubernetesOptions` given on the command line (unset ones keep their defaults)."""
    from batchrl.kube.sparkapp import SparkKubernetesOptions

    return build_options(
        SparkKubernetesOptions, where, image=args.k8s_image, driver_cores=args.k8s_driver_cores,
        driver_memory=args.k8s_driver_memory, executor_cores=args.k8s_executor_cores,
        executor_memory=args.k8s_executor_memory, executor_instances=args.k8s_executor_instances,
        service_account=args.k8s_service_account, namespace=args.k8s_namespace, s3_secret=args.k8s_s3_secret,
        s3_endpoint=args.k8s_s3_endpoint, ttl_seconds=args.k8s_ttl_seconds,
        timeout_seconds=args.k8s_timeout_seconds, poll_seconds=args.k8s_poll_seconds, cleanup=False if args.k8s_keep else None)


def run_on_kubernetes(args: argparse.Namespace, stage: str, input_uri: str, output_uri: str,
                      stage_options: BaseModel) -> int | None:
    """Run (or with ``--dry-run`` print) the stage as a SparkApplication; ``None`` in local mode."""
    from batchrl.errors import BatchRLError

    where = f"batchrl {stage}"
    if args.spark_mode == "kubernetes" and args.engine == "duckdb":
        raise BatchRLError("--spark-mode kubernetes runs Spark; --engine duckdb runs in this process", where=where,
                           fix="drop --engine duckdb (or --spark-mode kubernetes)")
    if args.spark_mode != "kubernetes":
        if args.k8s_dry_run:
            raise BatchRLError("--dry-run prints the SparkApplication and needs --spark-mode kubernetes",
                               where=where, fix="add --spark-mode kubernetes, or drop --dry-run")
        return None
    from batchrl.kube.sparkapp import build_spark_application, stage_payload, to_yaml

    options = kubernetes_options(args, where)
    payload = stage_payload(stage, input_uri, output_uri, stage_options.model_dump(mode="json"))
    if args.k8s_dry_run:
        sys.stdout.write(to_yaml(build_spark_application(payload, options)))
        return 0
    from batchrl.kube.launcher import run_stage_on_kubernetes

    print_json(run_stage_on_kubernetes(stage, input_uri, output_uri, payload["options"], options))
    return 0
