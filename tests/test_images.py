"""The Dockerfiles and the build script, checked offline (no Docker engine here): pins, users, versions."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pyspark
import pytest

from batchrl import __version__
from batchrl.kube.sparkapp import MAIN_APPLICATION_FILE, SPARK_UID, SPARK_VERSION

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("runtime", "trainer", "spark")


def dockerfile(name: str) -> str:
    return (ROOT / "images" / name / "Dockerfile").read_text()


def _args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))


@pytest.mark.parametrize("name", IMAGES)
def test_base_images_are_pinned(name):
    text = dockerfile(name)
    args = _args(text)
    bases = [args.get(ref[2:-1], ref) if ref.startswith("${") else ref
             for ref in re.findall(r"^FROM (\S+)", text, flags=re.M)]
    assert bases
    for base in bases:
        repo, _, tag = base.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{base} is not pinned to a version"


@pytest.mark.parametrize("name", IMAGES)
def test_images_run_as_non_root(name):
    users = re.findall(r"^USER (\S+)", dockerfile(name), flags=re.M)
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0") and uid.isdigit(), "the final user is a numeric non-root uid"


@pytest.mark.parametrize("name", IMAGES)
def test_no_credentials_in_images(name):
    text = dockerfile(name)
    assert not re.search(r"(?i)(AWS_SECRET_ACCESS_KEY|AWS_ACCESS_KEY_ID|PASSWORD|TOKEN)\s*=", text)
    ignore = [line for line in (ROOT / "images" / name / "Dockerfile.dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore[0] == "*", "the build context starts from nothing (no .venv, no credentials files)"


def test_runtime_is_slim_cpu_and_trainer_is_cuda():
    runtime, trainer = dockerfile("runtime"), dockerfile("trainer")
    assert "-slim" in _args(runtime)["PYTHON_IMAGE"] and "whl/cpu" in runtime
    base = _args(trainer)["BASE_IMAGE"]
    assert base.startswith("pytorch/pytorch:") and "cuda" in base
    lock_torch = re.search(r"^torch==(\S+)$", (ROOT / "requirements.lock").read_text(), flags=re.M).group(1)
    assert base.split(":")[1].startswith(lock_torch + "-"), "the CUDA base carries the locked torch"


def test_spark_image_matches_the_engine_and_the_sparkapplication():
    text = dockerfile("spark")
    args = _args(text)
    assert pyspark.__version__ == SPARK_VERSION, "SparkApplication.sparkVersion follows the installed pyspark"
    assert f"pyspark.__version__ == '{SPARK_VERSION}'" in text
    jars = Path(pyspark.__file__).parent / "jars"
    hadoop = sorted(jars.glob("hadoop-client-api-*.jar"))
    assert hadoop, "pyspark ships hadoop-client-api"
    assert hadoop[0].name == f"hadoop-client-api-{args['HADOOP_AWS_VERSION']}.jar", "hadoop-aws matches Hadoop"
    assert re.fullmatch(r"2\.\d+\.\d+", args["AWS_SDK_BUNDLE_VERSION"]), "AWS SDK v2 bundle (Hadoop 3.4+)"
    assert "hadoop-aws-${HADOOP_AWS_VERSION}.jar" in text and "bundle-${AWS_SDK_BUNDLE_VERSION}.jar" in text
    assert "sha1sum -c" in text, "downloaded jars are checked"
    assert "COPY src/batchrl/spark_job.py /opt/batchrl/spark_job.py" in text and MAIN_APPLICATION_FILE == "local:///opt/batchrl/spark_job.py"
    assert args["SPARK_UID"] == str(SPARK_UID) and f"USER {SPARK_UID}:{SPARK_UID}" in text
    assert 'ENTRYPOINT ["/opt/entrypoint.sh"]' in text


def _fake_bin(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


def test_spark_entrypoint_builds_the_executor_command(tmp_path):
    tini = _fake_bin(tmp_path, "tini", 'shift 2\nexec "$@"\n')  # drop "-s --"
    java_home = tmp_path / "java"
    (java_home / "bin").mkdir(parents=True)
    _fake_bin(java_home / "bin", "java", 'printf "%s\\n" "$@"\n')
    env = {"PATH": os.environ["PATH"], "BATCHRL_TINI": str(tini), "JAVA_HOME": str(java_home),
           "SPARK_HOME": "/spark", "SPARK_EXECUTOR_MEMORY": "2g", "SPARK_DRIVER_URL": "spark://d:7078",
           "SPARK_EXECUTOR_ID": "3", "SPARK_EXECUTOR_CORES": "2", "SPARK_APPLICATION_ID": "app-1",
           "SPARK_EXECUTOR_POD_IP": "10.0.0.5", "SPARK_RESOURCE_PROFILE_ID": "0", "SPARK_EXECUTOR_POD_NAME": "ex-3",
           "SPARK_JAVA_OPT_10": "-Dlast=1", "SPARK_JAVA_OPT_0": "-Dfirst=1", "SPARK_JAVA_OPT_2": "-Dsecond=1"}
    out = subprocess.run(["bash", str(ROOT / "images" / "spark" / "entrypoint.sh"), "executor"], env=env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[:3] == ["-Dfirst=1", "-Dsecond=1", "-Dlast=1"], "JVM options in numeric order"
    assert out[3:5] == ["-Xms2g", "-Xmx2g"]
    assert out[out.index("-cp") + 1] == "/spark/conf:/spark/jars/*"
    assert "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend" in out
    assert out[out.index("--executor-id") + 1] == "3" and out[out.index("--podName") + 1] == "ex-3"


def test_spark_entrypoint_runs_the_driver_in_client_mode(tmp_path):
    tini = _fake_bin(tmp_path, "tini", 'shift 2\nexec "$@"\n')
    spark_home = tmp_path / "spark"
    (spark_home / "bin").mkdir(parents=True)
    _fake_bin(spark_home / "bin", "spark-submit", 'printf "%s\\n" "$@"\n')
    env = {"PATH": os.environ["PATH"], "BATCHRL_TINI": str(tini), "SPARK_HOME": str(spark_home),
           "SPARK_DRIVER_BIND_ADDRESS": "10.0.0.9"}
    out = subprocess.run(["bash", str(ROOT / "images" / "spark" / "entrypoint.sh"), "driver", "--properties-file",
                          "/opt/spark/conf/spark.properties", "local:///opt/batchrl/spark_job.py", '{"stage": "x"}'],
                         env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["--conf", "spark.driver.bindAddress=10.0.0.9", "--deploy-mode", "client", "--properties-file",
                   "/opt/spark/conf/spark.properties", "local:///opt/batchrl/spark_job.py", '{"stage": "x"}']


def test_build_script_says_it_needs_a_docker_engine(tmp_path):
    _fake_bin(tmp_path, "docker", 'echo "Cannot connect to the Docker daemon" >&2\nexit 1\n')
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    result = subprocess.run(["bash", str(ROOT / "images" / "build.sh")], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "needs a running Docker engine" in result.stderr and "nothing was built" in result.stderr


def test_build_script_tags_with_the_package_version(tmp_path):
    log = tmp_path / "calls.log"
    _fake_bin(tmp_path, "docker", f'echo "$@" >> {log}\n')
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "BATCHRL_IMAGE_REGISTRY": "registry.local/ml"}
    result = subprocess.run(["bash", str(ROOT / "images" / "build.sh")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "info"
    for name in IMAGES:
        assert (f"build --file images/{name}/Dockerfile --tag registry.local/ml/batchrl-{name}:{__version__} ."
                in calls)
    bad = subprocess.run(["bash", str(ROOT / "images" / "build.sh"), "gpu"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown image" in bad.stderr
