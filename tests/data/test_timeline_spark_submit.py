"""The timeline job is a standalone Spark application: spark-submit runs spark_job.py with a JSON argument."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from batchrl import storage
from tests.support.timeline import DS, ex1_table


@pytest.mark.slow  # starts a second JVM (spark-submit)
def test_spark_submit_runs_the_job(tmp_path):
    """The job file is a Spark application: spark-submit runs it with the JSON argument."""
    import batchrl.spark_job
    from batchrl.spark import ensure_java

    ensure_java()
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    storage.write_table(ex1_table(), src)
    payload = {"stage": "timeline", "input": src, "output": out,
               "options": {"start_ds": DS, "end_ds": DS, "add_terminal_state_row": False}}
    submit = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    proc = subprocess.run([submit, "--master", "local[1]", "--conf", "spark.ui.enabled=false",
                           batchrl.spark_job.__file__, json.dumps(payload)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # spark-submit merges the driver's stderr (log lines) into stdout; the summary is the JSON at the end
    summary = json.loads(proc.stdout[proc.stdout.index("\n{\n") + 1:])
    assert summary["output_rows"] == 1 and summary["engine"] == "spark (local[1])"  # spark-submit's master
    assert storage.read_table(out).column("next_action").to_pylist() == ["action2"]
