"""The batch-RL pipeline, defined in the package (``batchrl.kfp.pipeline``) so the runtime image has it.

``python pipelines/batch_rl.py`` (or ``batchrl pipeline compile``) rewrites ``pipelines/batch_rl.yaml``
next to this file; ``tests/kfp/test_golden.py`` fails when the checked-in YAML is out of date.
"""

from pathlib import Path

from batchrl.kfp.compile import compile_pipeline
from batchrl.kfp.pipeline import build_pipeline

batch_rl = build_pipeline()

if __name__ == "__main__":
    compile_pipeline(Path(__file__).with_name("batch_rl.yaml"))
