"""`batchrl pipeline`: compile the Kubeflow pipeline and its components, or run the compiled pipeline locally.

Each action is one ``_register_<action>(actions)`` call in :func:`register`; cluster actions (submit,
schedules, reconcile) add theirs on the marked line.
"""

from __future__ import annotations

import argparse
import os
import sys

from batchrl.commands._common import print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pipeline", help="compile the Kubeflow pipeline, or run it locally under kfp.local",
                       description="Kubeflow Pipelines: compile the batch-RL pipeline and its components to "
                       "YAML, or run the compiled pipeline on this machine with kfp.local.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", title="actions", required=True)
    _register_compile(actions)
    _register_run_local(actions)
    # cluster actions: submit, upload, schedule, list-schedules, disable/delete-schedule, reconcile
    from batchrl.commands.pipeline_cluster import register_cluster_actions

    register_cluster_actions(actions)


def _register_compile(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from batchrl.kfp.images import REGISTRY

    p = actions.add_parser("compile", help="compile the pipeline (and regenerate the checked-in YAML)",
                           description="Without --output: regenerate every checked-in golden under --root "
                           "(pipelines/batch_rl.yaml and components/<step>/component.yaml). With --output: "
                           "write only the pipeline, to that file.")
    p.add_argument("--output", metavar="FILE", help="write only the pipeline YAML to FILE")
    p.add_argument("--root", default=".", help="repository root holding pipelines/ and components/ (default .)")
    p.add_argument("--registry", default=os.environ.get("BATCHRL_IMAGE_REGISTRY", REGISTRY),
                   help="registry of the runtime, trainer and Spark images (the registry you pushed "
                   f"`make images` to; default $BATCHRL_IMAGE_REGISTRY or {REGISTRY})")
    p.add_argument("--image-tag", default=os.environ.get("BATCHRL_IMAGE_TAG"),
                   help="tag of the images (default $BATCHRL_IMAGE_TAG or the package version)")
    p.add_argument("--pipeline-root", metavar="URI",
                   help="default artifact root compiled into the pipeline (s3://BUCKET/PREFIX, minio://..., "
                   "gs://...): the KFP UI and `batchrl pipeline submit` use it for runs given none. Default: "
                   "none, KFP's own (kfp-launcher's defaultPipelineRoot)")
    p.set_defaults(func=run_compile)


def _register_run_local(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from batchrl.kfp.local_run import DEFAULT_PIPELINE_ROOT

    p = actions.add_parser("run-local", help="run the compiled pipeline on this machine (kfp.local)",
                           description="Run the compiled pipeline with kfp.local's SubprocessRunner in this "
                           "Python environment and print every step's output artifacts with their metadata.")
    p.add_argument("config", metavar="CONFIG", help="YAML/JSON file of pipeline parameters (name: value)")
    p.add_argument("--pipeline", metavar="FILE",
                   help="compiled pipeline YAML (default: the installed package's pipeline, compiled now)")
    p.add_argument("--pipeline-root", default=DEFAULT_PIPELINE_ROOT,
                   help=f"folder for the step outputs (default {DEFAULT_PIPELINE_ROOT})")
    p.add_argument("--cache", action="store_true", help="reuse outputs of earlier local runs of cacheable steps")
    p.set_defaults(func=run_local)


def run_compile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from batchrl import __version__
    from batchrl.errors import BatchRLError
    from batchrl.kfp.compile import PIPELINE_FILE, compile_all, compile_pipeline
    from batchrl.kfp.images import DEFAULT_IMAGES, Images

    images = Images.for_tag(args.image_tag or __version__, args.registry)
    if args.output:
        written = [compile_pipeline(args.output, images, args.pipeline_root)]
    else:
        if not (Path(args.root) / PIPELINE_FILE.parent).is_dir():
            raise BatchRLError(f"no {PIPELINE_FILE.parent}/ folder here", where=str(Path(args.root).resolve()),
                               fix="run from the repository root, pass --root, or pass --output FILE")
        if images != DEFAULT_IMAGES or args.pipeline_root:
            print(f"note: the goldens now name {images.runtime} (and the trainer and Spark images of that "
                  f"registry and tag) and pipeline root {args.pipeline_root}; the golden test expects "
                  f"{DEFAULT_IMAGES.runtime} and none", file=sys.stderr)
        written = compile_all(args.root, images, args.pipeline_root)
    print_json({"images": {"runtime": images.runtime, "trainer": images.trainer, "spark": images.spark},
                "pipeline_root": args.pipeline_root, "written": [str(path) for path in written]})
    return 0


def run_local(args: argparse.Namespace) -> int:
    from batchrl.kfp.local_run import read_parameters
    from batchrl.kfp.local_run import run_local as run

    parameters = read_parameters(args.config)
    print_json(run(parameters, pipeline_root=args.pipeline_root, pipeline_file=args.pipeline, cache=args.cache,
                   where=args.config))
    return 0
