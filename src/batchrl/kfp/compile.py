"""Compile the pipeline and every component to the YAML checked in next to their sources.

``batchrl pipeline compile`` calls :func:`compile_all`; ``tests/kfp/test_golden.py`` recompiles into a
temporary folder and fails when a checked-in file differs (``sdkVersion`` masked).

A pipeline root given at compile time becomes the IR's ``defaultPipelineRoot``: the KFP UI fills it in
as the root of the runs it creates, ``batchrl pipeline submit`` sends it with each run (the backend
itself never reads it: ``backend/src/v2/driver/root_dag.go`` takes the run's root, else kfp-launcher's).
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any

from batchrl.kfp.images import DEFAULT_IMAGES, Images

log = logging.getLogger(__name__)

#: A pipeline root the KFP backend can write artifacts to: ``bucketPattern`` and the accepted schemes
#: of ``ParseBucketPathToConfig`` in kubeflow/pipelines backend/src/v2/objectstore/config.go (2.5.0
#: and master alike).
PIPELINE_ROOT = re.compile(r"^(gs|s3|minio)://[^/?]+(/[^?]*)?(\?.+)?$")

PIPELINE_FILE = Path("pipelines") / "batch_rl.yaml"
COMPONENTS_DIR = Path("components")
#: Keys whose values change with the tool, not with the pipeline.
VOLATILE_KEYS = ("sdkVersion",)


def component_file(root: Path, name: str) -> Path:
    return root / COMPONENTS_DIR / name / "component.yaml"


def check_pipeline_root(pipeline_root: str) -> str:
    """``pipeline_root`` when the KFP backend accepts it as an artifact root, else a BatchRLError."""
    if not PIPELINE_ROOT.match(pipeline_root):
        from batchrl.errors import BatchRLError

        raise BatchRLError(f"'{pipeline_root}' is not a pipeline root KFP can store artifacts under",
                           where="--pipeline-root",
                           fix="give a bucket URI: s3://BUCKET/PREFIX, minio://BUCKET/PREFIX or gs://BUCKET/PREFIX")
    return pipeline_root


def compile_pipeline(output: str | Path, images: Images = DEFAULT_IMAGES, pipeline_root: str | None = None) -> Path:
    """Write the batch-RL pipeline (IR YAML) to ``output``, with ``pipeline_root`` as its default root."""
    from kfp import compiler

    from batchrl.kfp.pipeline import build_pipeline

    if pipeline_root is not None:
        check_pipeline_root(pipeline_root)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(images, pipeline_root), str(output))
    _stabilize_header(output)
    log.info("compiled the pipeline to %s", output)
    return output


def compile_component(name: str, output: str | Path, images: Images = DEFAULT_IMAGES) -> Path:
    """Write component ``name`` to ``output`` (loadable with ``kfp.components.load_component_from_file``)."""
    from kfp import compiler

    from batchrl.kfp.components import build_component

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_component(name, images), str(output))
    _stabilize_header(output)
    return output


def compile_all(root: str | Path = ".", images: Images = DEFAULT_IMAGES, pipeline_root: str | None = None,
                ) -> list[Path]:
    """Regenerate every golden under ``root``: the pipeline and ``components/<name>/component.yaml``."""
    from batchrl.kfp.components import STEPS

    root = Path(root)
    written = [compile_pipeline(root / PIPELINE_FILE, images, pipeline_root)]
    written += [compile_component(name, component_file(root, name), images) for name in STEPS]
    return written


_DEFAULT_LINE = re.compile(r"^(#\s+\S+: \S+ \[Default: )(.*)(\])$")


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def _stabilize_header(path: Path) -> None:
    """Sort the keys of dict defaults in the compiler's comment header (it prints them in hash order)."""
    lines = path.read_text().split("\n")
    for index, line in enumerate(lines):
        if not line.startswith("#"):
            break
        match = _DEFAULT_LINE.match(line)
        if match:
            default = ast.literal_eval(match.group(2))
            lines[index] = f"{match.group(1)}{_sorted(default)!r}{match.group(3)}"
    path.write_text("\n".join(lines))


def masked(text: str) -> str:
    """YAML text without the lines of :data:`VOLATILE_KEYS` (for golden comparisons)."""
    return "\n".join(line for line in text.splitlines()
                     if not any(line.strip().startswith(f"{key}:") for key in VOLATILE_KEYS))
