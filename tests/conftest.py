"""Shared fixtures: one Spark session per test process, the data engines (DuckDB and Spark), a moto S3 server on 127.0.0.1, a CLI runner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("BATCHRL_SHUFFLE_PARTITIONS", "4")
os.environ.setdefault("BATCHRL_SPARK_DRIVER_MEMORY", "2g")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use small tensors and run two workers on two cores: one intra-op thread each avoids
    oversubscription (torch's spinning workers made small ops 20-100x slower on a loaded machine)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def spark():
    """A local[2] Spark session shared by the tests of one worker."""
    from batchrl.spark import get_spark

    return get_spark("local[2]", app_name="batchrl-tests")


@pytest.fixture(scope="session", params=["duckdb", "spark"])
def engine(request):
    """Each data-stage test runs on both engines: DuckDB (SQLFrame) and Spark local[2]."""
    from batchrl.engine import get_engine

    return get_engine(request.param, "local[2]", app_name="batchrl-tests")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1; yields its endpoint URL."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto server did not start")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> str:
    """Point the storage layer at the moto server with test credentials; yields a fresh bucket URI."""
    import uuid

    import pyarrow.fs as pafs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-value")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    bucket = f"test-{uuid.uuid4().hex[:10]}"
    fs = pafs.S3FileSystem(access_key="testing-key", secret_key="testing-secret-value", region="us-east-1",
                           endpoint_override=s3_server.split("://")[1], scheme="http",
                           allow_bucket_creation=True)
    fs.create_dir(bucket)
    return f"s3://{bucket}"


@pytest.fixture
def cli(capsys):
    """Run ``batchrl`` in-process; returns (exit code, stdout, stderr)."""
    from batchrl.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(autouse=True)
def _not_in_a_pod(monkeypatch, tmp_path_factory):
    """Tests behave the same inside a CI pod: the service-account namespace file is never the real one
    (a test that simulates a pod writes its own, see ``tests/test_kube_launcher.py``)."""
    import batchrl.kube.sparkapp as sparkapp

    monkeypatch.setattr(sparkapp, "SERVICE_ACCOUNT_NAMESPACE_FILE",
                        tmp_path_factory.getbasetemp() / "no-pod" / "namespace", raising=False)
