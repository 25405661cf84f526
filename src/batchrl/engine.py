"""The data stages' engines: DuckDB in-process (default) and Spark, behind one DataFrame API.

The stage logic (validate, timeline, normalize, prepare) is written once against the PySpark DataFrame
API. On Spark it runs as is; on DuckDB it runs through SQLFrame, which turns the same DataFrame code
into SQL executed by an in-process DuckDB. A stage finds the functions and types of the engine its
DataFrame belongs to with :func:`api`; everything else an engine does differently (reading a committed
dataset, writing one, running user SQL) is a method of :class:`Engine`.

Choosing: ``auto`` is DuckDB, except inside a Spark application (``spark_master=None``: the master is
the one ``spark-submit`` configured), which is Spark. ``--spark-mode kubernetes`` always runs Spark.

DuckDB reads and writes through the storage layer's filesystems (local, or ``s3://`` with pyarrow's S3
filesystem and the usual ``AWS_*`` variables): no DuckDB extension is loaded or downloaded. It works
under a memory limit and spills to a temporary directory beyond it:

- ``BATCHRL_DUCKDB_MEMORY_LIMIT`` (e.g. ``4GB``): default ``BATCHRL_DUCKDB_MEMORY_FRACTION`` (0.6) of the
  container's memory limit (cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes``), else of the
  machine's memory;
- ``BATCHRL_DUCKDB_TEMP_DIR``: where it spills (default ``batchrl-duckdb-<pid>`` in the system temporary
  directory);
- ``BATCHRL_DUCKDB_THREADS``: worker threads (default: DuckDB's, the CPUs it may use).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import uuid
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, cast

import pyarrow as pa
import pyarrow.parquet as pq

from batchrl import storage
from batchrl.errors import BatchRLError

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyspark.sql import Column, DataFrame

log = logging.getLogger(__name__)

EngineName = Literal["auto", "duckdb", "spark"]
ENGINES: tuple[str, ...] = ("auto", "duckdb", "spark")
DEFAULT_MEMORY_FRACTION = 0.6
#: Rows per Parquet file when DuckDB output goes through Arrow (S3).
ROWS_PER_FILE = 1_000_000
#: Rows per Parquet row group of DuckDB's local writes: its writer encodes row groups in parallel, and on
#: the 2-core machine the 1M-row timeline wrote 5-7% faster with 16-32k rows than with its 122,880 default
#: (medians of 5 interleaved runs: 1.63-1.67 s against 1.75 s).
ROW_GROUP_ROWS = 32_768


@dataclass(frozen=True)
class Api:
    """The PySpark-shaped API of one engine: ``functions``, ``types`` and ``Window``."""

    engine: str
    F: ModuleType
    T: ModuleType
    Window: Any


@lru_cache(maxsize=2)
def _api(engine: str) -> Api:
    if engine == "duckdb":
        from sqlframe.duckdb import Window
        from sqlframe.duckdb import functions as F
        from sqlframe.duckdb import types as T
    else:
        # the other engine's Window/functions/types under the same names (Api types them Any/ModuleType)
        from pyspark.sql import Window  # type: ignore[assignment]
        from pyspark.sql import functions as F  # type: ignore[no-redef]
        from pyspark.sql import types as T  # type: ignore[no-redef]
    return Api(engine, F, T, Window)


def api(obj: Any) -> Api:
    """The API of the engine ``obj`` (a DataFrame, Column, schema or data type) belongs to."""
    return _api("duckdb" if type(obj).__module__.startswith("sqlframe") else "spark")


_schemas: dict[int, tuple[Any, Any]] = {}


def schema_of(df: DataFrame) -> Any:
    """``df.schema``, asked once per DataFrame (SQLFrame runs a DESCRIBE query for every ``.schema``)."""
    cached = _schemas.get(id(df))
    if cached is None or cached[0] is not df:
        if len(_schemas) > 256:
            _schemas.clear()
        cached = _schemas[id(df)] = (df, df.schema)
    return cached[1]


def filtered(df: DataFrame, condition: Column) -> DataFrame:
    """``df.where(condition)``, whose schema is ``df``'s (remembered, so :func:`schema_of` asks no query)."""
    result = df.where(condition)
    _schemas[id(result)] = (result, schema_of(df))
    return result


def type_name(dtype: Any) -> str:
    """``StringType``, ``MapType``, ... : the same names on both engines (for ``isinstance``-free checks)."""
    return type(dtype).__name__


def resolve(engine: str | None, spark_master: str | None = "local[*]") -> str:
    """``duckdb`` or ``spark`` for a requested engine (``auto``: DuckDB, but Spark inside a Spark app)."""
    name = (engine or "auto").lower()
    if name not in ENGINES:
        raise BatchRLError(f"unknown engine '{engine}'", fix=f"use one of {', '.join(ENGINES)}")
    if name == "auto":
        return "spark" if spark_master is None else "duckdb"
    return name


# ---------------------------------------------------------------- functions restated for both engines


def any_of(F: ModuleType, array: Column, predicate: Callable[[Column], Column]) -> Column:
    """True when ``predicate`` holds for some element of ``array`` (Spark's ``exists``, which SQLFrame
    lacks): ``array_contains(transform(array, x -> coalesce(predicate(x), false)), true)``; false for an
    empty or null array."""
    flags = F.transform(array, lambda x: F.coalesce(predicate(x), F.lit(False)))
    return F.coalesce(F.array_contains(flags, F.lit(True)), F.lit(False))


def map_values(F: ModuleType, m: Column) -> Column:
    """``map_values`` (a function of both engines that SQLFrame's API lacks), called by name."""
    return F.call_function("map_values", m)


def has_key(F: ModuleType, m: Column, key: Column) -> Column:
    """``map_contains_key`` (which SQLFrame lacks) as ``array_contains(map_keys(m), key)``."""
    return F.array_contains(F.map_keys(m), key)


def hash_key(F: ModuleType, *columns: Column) -> Column:
    """A seeded, engine-independent hash of ``columns``: ``md5(concat_ws('|', columns as strings))``, 32
    lowercase hex digits. Read as a 128-bit number h, ``u = h / 16^32`` is uniform in [0, 1); the string
    order is the numeric order, so the stages compare and sort the hex strings themselves.

    Spark's ``xxhash64`` has no DuckDB twin; md5 and concat_ws exist on both, and integers and strings
    print the same on both (doubles do not: hash only ids and strings).
    """
    return F.md5(F.concat_ws("|", *[c.cast("string") for c in columns]))


def hash_key_of(*values: object) -> str:
    """:func:`hash_key` of one row's values, in Python: ``md5('|'.join(str(v)))`` (ids and strings only, as
    there)."""
    return hashlib.md5("|".join(str(v) for v in values).encode()).hexdigest()


def hash_threshold(fraction: float) -> str:
    """The string ``t`` with ``key < t`` exactly when ``u = int(key, 16) / 16^32 < fraction`` ("" for none,
    "g", above every hex key, for all)."""
    if fraction <= 0.0:
        return ""
    if fraction >= 1.0:
        return "g"
    return format(math.ceil(fraction * 16 ** 32), "032x")


def hash_below(F: ModuleType, key: Column, fraction: float) -> Column:
    """``u < fraction`` for a :func:`hash_key` column."""
    if fraction <= 0.0:
        return F.lit(False)
    if fraction >= 1.0:
        return F.lit(True)
    return key < F.lit(hash_threshold(fraction))


def fail_when(F: ModuleType, condition: Column, message: str) -> Column:
    """A boolean column that is TRUE, and fails the query with ``message`` on the first row where
    ``condition`` holds: ``CASE WHEN condition THEN raise(message) ELSE TRUE END`` (Spark's ``raise_error``;
    DuckDB's ``error``, which SQLFrame's API lacks, called by name). A row check that costs nothing extra in
    a pass that reads every row anyway."""
    if F.__name__.startswith("pyspark"):
        raised = F.raise_error(F.lit(message))
    else:
        raised = F.call_function("error", F.lit(message))
    return F.when(condition, raised.cast("boolean")).otherwise(F.lit(True))


def names_failure(exc: BaseException, message: str) -> bool:
    """Whether an engine's exception is the one :func:`fail_when` raised with ``message``."""
    return message in str(exc)


# ---------------------------------------------------------------- memory


def container_memory_limit(cgroup_root: str = "/sys/fs/cgroup") -> int | None:
    """The memory limit of this container from cgroups (v2 ``memory.max``, then v1
    ``memory/memory.limit_in_bytes``); None when unlimited ("max", or v1's huge number) or unknown."""
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            with open(os.path.join(cgroup_root, name)) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 writes a huge number for "unlimited"
            return int(text)
        return None
    return None


def default_memory_limit() -> int:
    """Bytes DuckDB may use: a fraction of the container's limit, else of the machine's memory."""
    fraction = float(os.environ.get("BATCHRL_DUCKDB_MEMORY_FRACTION", DEFAULT_MEMORY_FRACTION))
    total = container_memory_limit()
    if total is None:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(int(total * fraction), 64 << 20)


# ---------------------------------------------------------------- engines


class Engine:
    """One engine: a session plus the few things that differ (reading, writing, user SQL)."""

    name: str
    session: Any

    @property
    def api(self) -> Api:
        return _api(self.name)

    def describe(self) -> str:
        raise NotImplementedError

    def read_parquet(self, uri: str) -> DataFrame:
        raise NotImplementedError

    def read_staged(self, writer: storage.DatasetWriter) -> DataFrame:
        """What ``write_parquet`` wrote into ``writer``'s staging location (before the commit)."""
        raise NotImplementedError

    def read_json(self, uri: str) -> DataFrame:
        raise NotImplementedError

    def from_arrow(self, table: pa.Table) -> DataFrame:
        raise NotImplementedError

    def to_arrow(self, df: DataFrame) -> pa.Table:
        raise NotImplementedError

    def write_parquet(self, df: DataFrame, writer: storage.DatasetWriter,
                      sort_by: list[str] | None = None) -> int | None:
        """Write ``df`` as Parquet into ``writer``'s staging location (``sort_by``: row order in the files);
        the number of rows written when the engine knows it without another pass, else None."""
        raise NotImplementedError

    def run_sql(self, sql: str, views: dict[str, DataFrame]) -> list[tuple[Any, ...]]:
        """Run a Spark SQL query over ``views`` (placeholder name -> DataFrame); return its rows."""
        raise NotImplementedError

    def read_order(self) -> Column:
        """A column that orders the rows of a freshly read table as they were read."""
        raise NotImplementedError

    def cache(self, df: DataFrame) -> DataFrame:
        """``df`` computed once for several uses; :meth:`uncache` releases it."""
        raise NotImplementedError

    def named(self, df: DataFrame) -> DataFrame:
        """``df`` under a name of its own, still lazy: later operations start from the name (on DuckDB this
        keeps SQLFrame from re-translating a large plan for every operation; Spark needs nothing)."""
        return df

    def uncache(self, df: DataFrame) -> None:
        raise NotImplementedError


def _quick_dialect_names() -> None:
    """Make SQLFrame name its dialect without loading every sqlglot dialect, on every call.

    ``sqlframe.base.util.dialect_to_string`` inverts ``Dialect.classes``, and sqlglot's ``classes`` (re)tries
    loading all 33 dialect modules whenever it holds a different number of classes than modules, which
    with SQLFrame's own dialects registered is always: 0.2 s on the first call and work on each of the ~90
    calls a stage's plan makes (sqlframe 4.10, sqlglot 30). The name of a dialect class is its module's
    name (``DuckDB`` -> ``duckdb``); where that does not hold, the original lookup answers.
    """
    import sqlframe.base.util as sqlframe_util
    from sqlglot.dialects.dialect import Dialect

    original = sqlframe_util.dialect_to_string
    if getattr(original, "batchrl_quick", False):
        return

    def dialect_to_string(dialect: Any) -> str:
        name = type(dialect).__name__.lower()
        return name if Dialect.get(name) is type(dialect) else original(dialect)

    dialect_to_string.batchrl_quick = True  # type: ignore[attr-defined]
    sqlframe_util.dialect_to_string = dialect_to_string


class DuckDBEngine(Engine):
    """DuckDB in this process, driven through SQLFrame."""

    name = "duckdb"

    def __init__(self, memory_limit: str | None = None, temp_dir: str | None = None, threads: int | None = None):
        import duckdb
        from sqlframe.duckdb import DuckDBSession

        _quick_dialect_names()
        self.memory_limit = memory_limit or os.environ.get("BATCHRL_DUCKDB_MEMORY_LIMIT") or \
            f"{default_memory_limit() // (1 << 20)}MB"
        self.temp_dir = temp_dir or os.environ.get("BATCHRL_DUCKDB_TEMP_DIR") or \
            os.path.join(tempfile.gettempdir(), f"batchrl-duckdb-{os.getpid()}")  # one per process
        threads = threads or (int(os.environ["BATCHRL_DUCKDB_THREADS"]) if os.environ.get("BATCHRL_DUCKDB_THREADS")
                              else None)
        # preserve_insertion_order off: results need not keep the input's row order (the stages order
        # explicitly where it matters), which lets DuckDB stream and spill instead of buffering
        config: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": self.memory_limit, "temp_directory": self.temp_dir,
            "preserve_insertion_order": False,
            "autoload_known_extensions": False, "autoinstall_known_extensions": False}
        if threads:
            config["threads"] = threads
        try:
            self.connection = duckdb.connect(config=config)
        except duckdb.Error as exc:
            raise BatchRLError(f"could not start DuckDB: {exc}", where=f"memory_limit={self.memory_limit}",
                               fix="check BATCHRL_DUCKDB_MEMORY_LIMIT (e.g. 4GB) and BATCHRL_DUCKDB_TEMP_DIR") from exc
        self.session = DuckDBSession(conn=self.connection)
        self._keep: dict[str, Any] = {}  # Arrow objects registered into DuckDB stay alive while in use

    def describe(self) -> str:
        return f"duckdb (memory_limit {self.memory_limit}, spill to {self.temp_dir})"

    def _view(self, relation_sql: str) -> DataFrame:
        name = f"batchrl_{uuid.uuid4().hex[:12]}"
        self.connection.execute(f"CREATE OR REPLACE VIEW {name} AS {relation_sql}")
        return self.session.table(name)

    def _register(self, obj: Any) -> DataFrame:
        name = f"batchrl_arrow_{uuid.uuid4().hex[:12]}"
        self.connection.register(name, obj)
        self._keep[name] = obj
        return self._view(f"SELECT * FROM {name}")

    def read_parquet(self, uri: str) -> DataFrame:
        return self._read_files(storage.require_committed(uri))

    def read_staged(self, writer: storage.DatasetWriter) -> DataFrame:
        return self._read_files(writer.staging)

    def _read_files(self, loc: storage.Location) -> DataFrame:
        files = storage.data_files(loc)
        if not files:
            raise BatchRLError(f"dataset has no Parquet files: {loc.uri}", fix="rerun the stage that produces it")
        try:
            if loc.is_local:
                listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                df = self._view(f"SELECT * FROM read_parquet([{listed}])")
            else:  # S3: pyarrow's filesystem, scanned lazily by DuckDB (no httpfs extension)
                import pyarrow.dataset as pads

                df = self._register(pads.dataset(files, filesystem=loc.fs, format="parquet"))
            df.columns  # noqa: B018 - reads the schema now, so that a corrupt file fails here
        except Exception as exc:  # duckdb.Error / ArrowInvalid / OSError
            raise BatchRLError(f"could not read the dataset as Parquet: {str(exc).splitlines()[0]}", where=loc.uri,
                               fix="check the dataset is Parquet and not corrupt") from exc
        return df

    def read_json(self, uri: str) -> DataFrame:
        return self.from_arrow(read_json_lines(uri))

    def from_arrow(self, table: pa.Table) -> DataFrame:
        return self._register(table)

    def sql_text(self, df: DataFrame) -> str:
        return cast(Any, df).sql(dialect="duckdb", optimize=False, pretty=False)  # a SQLFrame DataFrame's .sql

    def to_arrow(self, df: DataFrame) -> pa.Table:
        return self.connection.sql(self.sql_text(df)).to_arrow_table()

    def write_parquet(self, df: DataFrame, writer: storage.DatasetWriter,
                      sort_by: list[str] | None = None) -> int | None:
        query = self.sql_text(df)
        if sort_by:
            query = f"SELECT * FROM ({query}) ORDER BY {', '.join(sort_by)}"
        staging = writer.staging
        if staging.is_local:
            path = staging.child("part-00000.parquet").path.replace("'", "''")
            copied = self.connection.execute(
                f"COPY ({query}) TO '{path}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
            ).fetchone()
            assert copied is not None  # COPY answers one row: the number of rows written
            return copied[0]
        reader = self.connection.sql(query).to_arrow_reader(64 * 1024)
        index, rows, total, out = 0, 0, 0, None
        try:
            for batch in reader:
                if out is None:
                    path = staging.child(f"part-{index:05d}.parquet").path
                    out = pq.ParquetWriter(path, batch.schema, filesystem=staging.fs, compression="zstd")
                out.write_batch(batch)
                rows += batch.num_rows
                total += batch.num_rows
                if rows >= ROWS_PER_FILE:
                    out.close()
                    out, rows, index = None, 0, index + 1
            if out is None and index == 0:  # an empty result still has a schema
                pq.write_table(reader.schema.empty_table(), staging.child("part-00000.parquet").path,
                               filesystem=staging.fs, compression="zstd")
        finally:
            if out is not None:
                out.close()
        return total

    def run_sql(self, sql: str, views: dict[str, DataFrame]) -> list[tuple[Any, ...]]:
        import sqlglot

        names = {}
        for placeholder, df in views.items():
            name = f"batchrl_sql_{uuid.uuid4().hex[:8]}"
            self.connection.execute(f"CREATE OR REPLACE VIEW {name} AS {self.sql_text(df)}")
            names[placeholder] = name
        query = sql
        for placeholder, name in names.items():
            query = query.replace(placeholder, name)
        try:
            translated = ";\n".join(sqlglot.transpile(query, read="spark", write="duckdb"))
            return [tuple(row) for row in self.connection.execute(translated).fetchall()]
        finally:
            for name in names.values():
                self.connection.execute(f"DROP VIEW IF EXISTS {name}")

    def read_order(self) -> Column:
        return self.api.F.expr("row_number() over ()")

    def named(self, df: DataFrame) -> DataFrame:
        return self._view(self.sql_text(df))

    def cache(self, df: DataFrame) -> DataFrame:
        name = f"batchrl_cached_{uuid.uuid4().hex[:12]}"
        self.connection.execute(f"CREATE TABLE {name} AS {self.sql_text(df)}")
        cached = self.session.table(name)
        self._keep[f"table:{id(cached)}"] = name
        return cached

    def uncache(self, df: DataFrame) -> None:
        name = self._keep.pop(f"table:{id(df)}", None)
        if name:
            self.connection.execute(f"DROP TABLE IF EXISTS {name}")


class SparkEngine(Engine):
    """Spark (local, or the master ``spark-submit`` configured)."""

    name = "spark"

    def __init__(self, master: str | None = "local[*]", app_name: str = "batchrl"):
        from batchrl.spark import get_spark

        self.session = get_spark(master, app_name=app_name)

    def describe(self) -> str:
        return f"spark ({self.session.sparkContext.master})"

    def read_parquet(self, uri: str) -> DataFrame:
        storage.require_committed(uri)
        try:
            return self.session.read.parquet(storage.spark_path(uri))
        except Exception as exc:  # AnalysisException / Py4J errors for unreadable files
            raise BatchRLError(f"could not read the dataset as Parquet: {str(exc).splitlines()[0]}", where=uri,
                               fix="check the dataset is Parquet and not corrupt") from exc

    def read_staged(self, writer: storage.DatasetWriter) -> DataFrame:
        return self.session.read.parquet(storage.spark_path(writer.staging.uri))

    def read_json(self, uri: str) -> DataFrame:
        return self.from_arrow(read_json_lines(uri))

    def from_arrow(self, table: pa.Table) -> DataFrame:
        return self.session.createDataFrame(table)

    def to_arrow(self, df: DataFrame) -> pa.Table:
        return df.toArrow()

    def write_parquet(self, df: DataFrame, writer: storage.DatasetWriter,
                      sort_by: list[str] | None = None) -> int | None:
        if sort_by:  # whole groups of the first key per file, sorted within
            df = df.repartition(sort_by[0]).sortWithinPartitions(*sort_by)
        (df.write.mode("overwrite").option("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
         .parquet(storage.spark_path(writer.staging.uri)))
        return None

    def run_sql(self, sql: str, views: dict[str, DataFrame]) -> list[tuple[Any, ...]]:
        names = {}
        for placeholder, df in views.items():
            names[placeholder] = f"batchrl_sql_{uuid.uuid4().hex[:8]}"
            df.createOrReplaceTempView(names[placeholder])
        query = sql
        for placeholder, name in names.items():
            query = query.replace(placeholder, name)
        try:
            return [tuple(row) for row in self.session.sql(query).collect()]
        finally:
            for name in names.values():
                self.session.catalog.dropTempView(name)

    def read_order(self) -> Column:
        return self.api.F.monotonically_increasing_id()

    def cache(self, df: DataFrame) -> DataFrame:
        return df.cache()

    def uncache(self, df: DataFrame) -> None:
        df.unpersist()


_duckdb: DuckDBEngine | None = None


def get_engine(engine: str | None = "auto", spark_master: str | None = "local[*]", app_name: str = "batchrl"
               ) -> Engine:
    """The engine to run a data stage on (one DuckDB connection per process, Spark's shared session)."""
    global _duckdb
    if resolve(engine, spark_master) == "spark":
        return SparkEngine(spark_master, app_name)
    if _duckdb is None:
        _duckdb = DuckDBEngine()
    return _duckdb


def reset_duckdb(**settings: Any) -> DuckDBEngine:
    """Replace this process's DuckDB engine (e.g. with another memory limit)."""
    global _duckdb
    if _duckdb is not None:
        _duckdb.session.stop()  # SQLFrame keeps one session per process: a new one needs the old one stopped
        _duckdb.connection.close()
    _duckdb = DuckDBEngine(**settings)
    return _duckdb


# ---------------------------------------------------------------- JSON Lines input


def read_json_lines(uri: str) -> pa.Table:
    """A JSON Lines logged table as Arrow: JSON objects of the map columns become maps.

    ``sequence_number`` int64, ``reward``/``action_probability`` double, ``state_features``
    map<int64,double> and ``metrics`` map<string,double>; other columns keep what JSON inference gives.
    """
    import pyarrow.json as pajson

    if not storage.exists(uri):
        raise BatchRLError(f"input not found: {uri}", fix="check the path")
    try:
        strings = pa.schema([(name, pa.string()) for name in ("mdp_id", "ds", "end_reason")])  # not dates
        table = pajson.read_json(pa.BufferReader(storage.read_bytes(uri)), parse_options=pajson.ParseOptions(
            explicit_schema=strings, unexpected_field_behavior="infer"))
    except pa.ArrowInvalid as exc:
        raise BatchRLError("input has malformed JSON lines", where=uri,
                           fix="each line must be one JSON object with the logged-table columns") from exc
    casts = {"sequence_number": pa.int64(), "reward": pa.float64(), "action_probability": pa.float64(),
             "state_features": pa.map_(pa.int64(), pa.float64()), "metrics": pa.map_(pa.string(), pa.float64())}
    for name, dtype in casts.items():
        if name not in table.column_names:
            continue
        column = table.column(name)
        try:
            if pa.types.is_map(dtype) and pa.types.is_struct(column.type):
                # a JSON object is a struct of every key seen in the file; a key absent from a row is null
                # there and is left out of that row's map (as Spark's to_json/from_json do)
                integral = pa.types.is_integer(dtype.key_type)
                converted = pa.array([None if row is None else
                                      [(int(k) if integral else k, float(v)) for k, v in row.items() if v is not None]
                                      for row in column.to_pylist()], dtype)
            elif pa.types.is_struct(column.type) or pa.types.is_map(dtype):
                converted = column.cast(dtype)
            else:
                converted = column.cast(dtype, safe=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError) as exc:
            raise BatchRLError(f"column '{name}' cannot be read as {dtype}: {exc}", where=uri,
                               fix="write it as in the logged-table schema (docs/data.md)") from exc
        table = table.set_column(table.column_names.index(name), name, converted)
    return table
