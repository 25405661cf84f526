"""Compile the pipeline and every component to the YAML checked in next to their sources.

``batchrl pipeline compile`` calls :func:`compile_all`; ``tests/test_kfp_golden.py`` recompiles into a
temporary folder and fails when a checked-in file differs (``sdkVersion`` masked).
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any

from batchrl.kfp.images import DEFAULT_IMAGES, Images

log = logging.getLogger(__name__)

PIPELINE_FILE = Path("pipelines") / "batch_rl.yaml"
COMPONENTS_DIR = Path("components")
#: Keys whose values change with the tool, not with the pipeline.
VOLATILE_KEYS = ("sdkVersion",)


def component_file(root: Path, name: str) -> Path:
    return root / COMPONENTS_DIR / name / "component.yaml"


def compile_pipeline(output: str | Path, images: Images = DEFAULT_IMAGES) -> Path:
    """Write the batch-RL pipeline (IR YAML) to ``output``."""
    from kfp import compiler

    from batchrl.kfp.pipeline import build_pipeline

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(images), str(output))
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


def compile_all(root: str | Path = ".", images: Images = DEFAULT_IMAGES) -> list[Path]:
    """Regenerate every golden under ``root``: the pipeline and ``components/<name>/component.yaml``."""
    from batchrl.kfp.components import STEPS

    root = Path(root)
    written = [compile_pipeline(root / PIPELINE_FILE, images)]
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
