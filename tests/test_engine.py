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


def test_sqlframe_names_its_dialect_without_loading_every_sqlglot_dialect():
    """The DuckDB engine's shortcut for SQLFrame's dialect lookup answers what the original answers, for
    the dialect SQLFrame executes in and for one whose class name is not its module name."""
    import sqlframe.base.util as sqlframe_util
    from sqlglot.dialects.dialect import Dialect

    runner = engine.get_engine("duckdb")
    quick = sqlframe_util.dialect_to_string
    assert getattr(quick, "batchrl_quick", False)
    executing = runner.session.execution_dialect
    assert quick(executing) == "duckdb"
    names = {v: k for k, v in Dialect.classes.items()}  # the original's mapping
    for dialect_class in list(names)[:40]:
        assert quick(dialect_class()) == names[dialect_class]
    df = runner.session.createDataFrame([("a", 1)], ["m", "s"])
    assert df.select(runner.api.F.upper("m").alias("u")).collect()[0]["u"] == "A"


def test_fail_when_fails_the_query_on_the_first_offending_row(tmp_path):
    runner = engine.get_engine("duckdb")
    F = runner.api.F
    df = runner.session.createDataFrame([("a", 1), ("b", 2)], ["m", "s"])
    assert len(df.where(engine.fail_when(F, F.col("s") > 5, "batchrl: no")).collect()) == 2
    with pytest.raises(Exception) as raised:
        df.where(engine.fail_when(F, F.col("s") == 2, "batchrl: row b")).collect()
    assert engine.names_failure(raised.value, "batchrl: row b")


def test_hash_key_of_is_the_engines_hash_key_in_python():
    runner = engine.get_engine("duckdb")
    F = runner.api.F
    df = runner.session.createDataFrame([(7, "a"), (0, "episode-12"), (3, "")], ["seed", "m"])
    rows = df.select(F.col("seed"), F.col("m"), engine.hash_key(F, F.col("seed"), F.col("m")).alias("k")).collect()
    assert [r["k"] for r in rows] == [engine.hash_key_of(r["seed"], r["m"]) for r in rows]
