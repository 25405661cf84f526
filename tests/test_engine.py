"""The engine module: choosing an engine, the memory limit from cgroups, the engine-independent hash."""

from __future__ import annotations

import hashlib

import pytest

from batchrl import engine
from batchrl.errors import BatchRLError


def test_auto_is_duckdb_except_inside_a_spark_application():
    assert engine.resolve("auto", "local[*]") == engine.resolve(None) == "duckdb"
    assert engine.resolve("auto", None) == "spark"  # spark-submit configured the master: a Spark driver
    assert engine.resolve("SPARK") == "spark" and engine.resolve("duckdb", None) == "duckdb"
    with pytest.raises(BatchRLError, match="unknown engine 'polars'"):
        engine.resolve("polars")


@pytest.mark.parametrize(("files", "expected"), [
    ({"memory.max": "2147483648\n"}, 2 << 30),                       # cgroup v2, limited
    ({"memory.max": "max\n"}, None),                                  # cgroup v2, unlimited
    ({"memory/memory.limit_in_bytes": "536870912\n"}, 512 << 20),    # cgroup v1, limited
    ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # cgroup v1, unlimited
    ({}, None),                                                       # no cgroup files
])
def test_container_memory_limit_from_cgroups(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert engine.container_memory_limit(str(tmp_path)) == expected


def test_default_memory_limit_is_a_fraction_of_the_container(monkeypatch):
    monkeypatch.setattr(engine, "container_memory_limit", lambda: 4 << 30)
    monkeypatch.setenv("BATCHRL_DUCKDB_MEMORY_FRACTION", "0.5")
    assert engine.default_memory_limit() == 2 << 30


@pytest.mark.parametrize("fraction", [0.0, 1e-9, 0.1, 0.5, 0.9, 0.999999, 1.0])
def test_hash_threshold_orders_like_the_number(fraction):
    """``key < hash_threshold(f)`` (string order) exactly when int(key, 16) / 16^32 < f."""
    threshold = engine.hash_threshold(fraction)
    for i in range(2000):
        key = hashlib.md5(f"7|{i}".encode()).hexdigest()
        assert (key < threshold) == (int(key, 16) / 16 ** 32 < fraction)
