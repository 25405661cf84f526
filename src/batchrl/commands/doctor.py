"""``batchrl doctor``: preflight of the current kube context and KFP endpoint before the first run.

Prints a table of checks (pass/FAIL, what was found) and the fix for each failure; exits 0 only when
every check passes, 1 when one fails, 2 on bad options. The checks are in :mod:`batchrl.kube.doctor`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check the cluster and KFP are ready for the pipeline (preflight)",
                       description="Check, against the current kube context and the KFP endpoint, what the "
                       "pipeline needs before its first run: KFP version, spark-operator, object-store secret, "
                       "service accounts and their RBAC verbs, GPU nodes, the bucket, the images. Exit 0 only "
                       "when every check passes.")
    p.add_argument("--host", default=os.environ.get("KF_PIPELINES_ENDPOINT"),
                   help="KFP API endpoint (default $KF_PIPELINES_ENDPOINT), e.g. http://localhost:8888")
    p.add_argument("--namespace", default="kubeflow",
                   help="namespace the pipeline runs in (default kubeflow; a profile namespace in multi-user KFP)")
    p.add_argument("--runner-service-account", default="pipeline-runner",
                   help="the steps' service account (default pipeline-runner; default-editor in a profile)")
    p.add_argument("--spark-service-account", default="batchrl-spark",
                   help="the Spark driver's service account (default batchrl-spark)")
    p.add_argument("--s3-secret", default="batchrl-s3", help="the object-store secret (default batchrl-s3)")
    p.add_argument("--bucket", help="s3://BUCKET the pipeline writes to: checked with HeadBucket")
    p.add_argument("--s3-endpoint", help="S3 endpoint as reachable from here (default $AWS_ENDPOINT_URL or AWS)")
    p.add_argument("--gpu", action="store_true", help="GPU training is wanted: require nodes with nvidia.com/gpu")
    p.add_argument("--spark-mode", choices=["local", "kubernetes"], default="kubernetes",
                   help="skip the spark-operator and driver checks with local (default kubernetes)")
    p.add_argument("--pipeline", type=Path,
                   help="the compiled pipeline YAML you will upload: its images are checked "
                   "(default: the package's default images)")
    p.add_argument("--registry", help="the registry every image must come from (your own)")
    p.add_argument("--manifests", type=Path,
                   help="batchrl's manifests/base: the Roles whose verbs are checked (default ./manifests/base)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from batchrl.errors import BatchRLError
    from batchrl.kfp.client import TOKEN_ENV
    from batchrl.kfp.images import DEFAULT_IMAGES, REGISTRY
    from batchrl.kube import doctor
    from batchrl.kube.launcher import kubernetes_api_client
    from batchrl.kube.sparkapp import DEFAULT_IMAGE

    if not args.host:
        raise BatchRLError("no KFP endpoint", where="--host", fix="pass --host or set KF_PIPELINES_ENDPOINT")
    if args.s3_endpoint:
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint
    spark = args.spark_mode == "kubernetes"
    if args.pipeline:
        images = doctor.pipeline_images(args.pipeline, spark=spark)
    else:
        images = [DEFAULT_IMAGES.runtime, DEFAULT_IMAGES.trainer] + ([DEFAULT_IMAGE] if spark else [])
    settings = doctor.DoctorSettings(
        kfp_host=args.host, namespace=args.namespace, runner_service_account=args.runner_service_account,
        spark_service_account=args.spark_service_account, s3_secret=args.s3_secret, bucket=args.bucket,
        gpu=args.gpu, spark_kubernetes=spark, images=tuple(images),
        unpublished_registry=REGISTRY, registry=args.registry, manifests=args.manifests,
        kfp_token=os.environ.get(TOKEN_ENV))
    results = doctor.run_checks(settings, kubernetes_api_client())
    print(doctor.render_table(results))
    return 0 if all(result.ok for result in results) else 1
