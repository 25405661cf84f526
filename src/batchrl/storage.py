"""One place for URIs: local paths, ``file://`` and ``s3://`` on any S3-compatible endpoint.

S3 settings come from the usual variables: ``AWS_ENDPOINT_URL`` (or ``S3_ENDPOINT_URL``),
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` and ``AWS_REGION``. Credentials
never appear in messages.

Datasets are directories of Parquet files committed by a ``_SUCCESS`` marker written last; readers
refuse a directory without it. Locally a dataset is written to a hidden sibling directory and renamed
into place, so a crash never leaves a readable half-written dataset. Small files (JSON, TorchScript)
are written whole: a local rename, or one S3 PUT.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batchrl.errors import BatchRLError

SUCCESS_MARKER = "_SUCCESS"
METADATA_FILE = "_batchrl_metadata.json"


@dataclass(frozen=True)
class Location:
    """A resolved URI: the filesystem, the path on it, and the URI as the user wrote it."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def child(self, name: str) -> Location:
        return Location(self.fs, f"{self.path.rstrip('/')}/{name}", f"{self.uri.rstrip('/')}/{name}")


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT_URL")


def _s3_filesystem() -> pafs.S3FileSystem:
    key = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if bool(key) != bool(secret):
        raise BatchRLError(
            "incomplete S3 credentials: only one of AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY is set",
            fix="set both variables (or neither, to use the default AWS credential chain)",
        )
    options: dict[str, Any] = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                               or "us-east-1"}
    if key:
        options.update(access_key=key, secret_key=secret, session_token=os.environ.get("AWS_SESSION_TOKEN"))
    endpoint = s3_endpoint()
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "http")
    return pafs.S3FileSystem(**options)


def resolve(uri: str) -> Location:
    """Turn a local path, ``file://`` URI or ``s3://bucket/key`` URI into a :class:`Location`."""
    uri = str(uri)
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "s3a"):
        if not parsed.netloc:
            raise BatchRLError(f"S3 URI has no bucket: {uri}", fix="write it as s3://BUCKET/PATH")
        return Location(_s3_filesystem(), f"{parsed.netloc}{parsed.path}".rstrip("/"), uri)
    if parsed.scheme == "file":
        return Location(pafs.LocalFileSystem(), os.path.abspath(parsed.path), uri)
    if parsed.scheme in ("", ) or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Location(pafs.LocalFileSystem(), os.path.abspath(uri), uri)
    raise BatchRLError(f"unsupported URI scheme '{parsed.scheme}' in {uri}",
                       fix="use a local path, file://PATH or s3://BUCKET/PATH")


def spark_path(uri: str) -> str:
    """The same location as Spark names it: absolute local paths, ``s3a://`` for S3."""
    loc = resolve(uri)
    return loc.path if loc.is_local else f"s3a://{loc.path}"


def _wrap_io(action: str, loc: Location, exc: Exception) -> BatchRLError:
    text = str(exc)
    for secret in (os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN")):
        if secret:
            text = text.replace(secret, "***")
    hint = "check the path and your permissions"
    if not loc.is_local:
        hint = ("check the bucket exists, the endpoint (AWS_ENDPOINT_URL) is reachable and the credentials "
                "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) are valid")
    return BatchRLError(f"could not {action}: {text.splitlines()[0] if text else type(exc).__name__}",
                        where=loc.uri, fix=hint)


def exists(uri: str) -> bool:
    loc = resolve(uri)
    try:
        found: bool = loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound
        return found
    except OSError as exc:
        raise _wrap_io("look up", loc, exc) from exc


def is_committed(uri: str) -> bool:
    """True when ``uri`` is a dataset directory whose ``_SUCCESS`` marker exists."""
    return exists(resolve(uri).child(SUCCESS_MARKER).uri)


def delete(uri: str) -> None:
    loc = resolve(uri)
    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.Directory:
        loc.fs.delete_dir(loc.path)
    elif info.type == pafs.FileType.File:
        loc.fs.delete_file(loc.path)


# ---------------------------------------------------------------- small files


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file: a temporary file renamed into place locally, one PUT on S3."""
    loc = resolve(uri)
    try:
        if loc.is_local:
            os.makedirs(os.path.dirname(loc.path) or ".", exist_ok=True)
            tmp = f"{loc.path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, loc.path)
        else:
            with loc.fs.open_output_stream(loc.path) as out:
                out.write(data)
    except OSError as exc:
        raise _wrap_io("write", loc, exc) from exc


def read_bytes(uri: str) -> bytes:
    loc = resolve(uri)
    try:
        with loc.fs.open_input_stream(loc.path) as src:
            data: bytes = src.read()
            return data
    except FileNotFoundError as exc:
        raise BatchRLError(f"file not found: {uri}", fix="check the path; was the stage that writes it run?") from exc
    except OSError as exc:
        raise _wrap_io("read", loc, exc) from exc


def json_safe(obj: Any) -> Any:
    """A copy fit for strict JSON: non-finite floats (NaN, inf) become None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def write_json(uri: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON; non-finite floats are written as null."""
    write_bytes(uri, (json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


def read_json(uri: str) -> Any:
    raw = read_bytes(uri)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BatchRLError(f"not valid JSON: {exc.msg} at line {exc.lineno}", where=uri,
                           fix="regenerate the file or correct its syntax") from exc


# ---------------------------------------------------------------- datasets


class DatasetWriter:
    """Commit protocol for a dataset directory, usable by Arrow and by Spark.

    ``staging`` is where to write the files; ``commit()`` writes the metadata and the ``_SUCCESS``
    marker and (locally) renames the directory into place; ``abort()`` removes what was written.
    An existing dataset at the target is replaced only on commit (locally) or un-committed first (S3).
    """

    def __init__(self, uri: str):
        self.target = resolve(uri)
        if self.target.is_local:
            parent, name = os.path.split(self.target.path.rstrip("/"))
            os.makedirs(parent or ".", exist_ok=True)
            self.staging = resolve(os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}"))
        else:
            self.staging = self.target
            try:
                delete(self.target.uri)
            except OSError as exc:
                raise _wrap_io("clear the previous dataset at", self.target, exc) from exc
        try:
            self.staging.fs.create_dir(self.staging.path, recursive=True)
        except OSError as exc:
            raise _wrap_io("create", self.staging, exc) from exc

    def commit(self, metadata: dict[str, Any] | None = None) -> None:
        if metadata is not None:
            write_json(self.staging.child(METADATA_FILE).uri, metadata)
        write_bytes(self.staging.child(SUCCESS_MARKER).uri, b"")
        if self.target.is_local:
            old = None
            if os.path.exists(self.target.path):
                old = f"{self.staging.path}.old"
                os.replace(self.target.path, old)
            os.replace(self.staging.path, self.target.path)
            if old:
                shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        try:
            delete(self.staging.uri)
        except OSError:
            pass

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.abort()


def write_table(table: pa.Table, uri: str, metadata: dict[str, Any] | None = None,
                rows_per_file: int = 1_000_000) -> None:
    """Write an Arrow table as a committed Parquet dataset (with optional JSON metadata)."""
    with DatasetWriter(uri) as writer:
        for index, start in enumerate(range(0, max(table.num_rows, 1), rows_per_file)):
            part = table.slice(start, rows_per_file)
            path = writer.staging.child(f"part-{index:05d}.parquet").path
            try:
                pq.write_table(part, path, filesystem=writer.staging.fs, compression="zstd")
            except OSError as exc:
                raise _wrap_io("write", writer.staging, exc) from exc
        writer.commit(metadata)


def require_committed(uri: str) -> Location:
    loc = resolve(uri)
    if not exists(uri):
        raise BatchRLError(f"dataset not found: {uri}", fix="check the URI; was the stage that writes it run?")
    if loc.fs.get_file_info(loc.path).type == pafs.FileType.File:
        return loc
    if not is_committed(uri):
        raise BatchRLError(
            f"dataset is not committed (no {SUCCESS_MARKER} marker): {uri}",
            fix="the writer did not finish; rerun the stage that produces it",
        )
    return loc


def data_files(loc: Location) -> list[str]:
    """Paths of the Parquet files in a dataset directory (or the single file), in name order."""
    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.File:
        return [loc.path]
    selector = pafs.FileSelector(loc.path, recursive=True)
    files = [f.path for f in loc.fs.get_file_info(selector)
             if f.type == pafs.FileType.File and f.path.endswith(".parquet")
             and not any(part.startswith(("_", ".")) for part in f.path[len(loc.path):].split("/") if part)]
    return sorted(files)


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read a committed Parquet dataset (or a single Parquet file) into one Arrow table."""
    loc = require_committed(uri)
    files = data_files(loc)
    if not files:
        raise BatchRLError(f"dataset has no Parquet files: {uri}", fix="rerun the stage that produces it")
    try:
        tables = [pq.read_table(path, filesystem=loc.fs, columns=columns) for path in files]
        return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except (pa.ArrowInvalid, OSError) as exc:
        if isinstance(exc, pa.ArrowInvalid) or "Parquet" in str(exc):
            raise BatchRLError(f"corrupt or unreadable Parquet data: {exc}", where=uri,
                               fix="regenerate the dataset") from exc
        raise _wrap_io("read", loc, exc) from exc


def read_schema(uri: str) -> pa.Schema:
    """The Arrow schema of a committed Parquet dataset, from its first file's footer (no data is read)."""
    loc = require_committed(uri)
    files = data_files(loc)
    if not files:
        raise BatchRLError(f"dataset has no Parquet files: {uri}", fix="rerun the stage that produces it")
    try:
        return pq.read_schema(files[0], filesystem=loc.fs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BatchRLError(f"corrupt or unreadable Parquet data: {exc}", where=uri,
                           fix="regenerate the dataset") from exc


def read_metadata(uri: str) -> dict[str, Any]:
    """The JSON metadata stored with a dataset by :func:`write_table` (empty if none)."""
    loc = require_committed(uri).child(METADATA_FILE)
    return read_json(loc.uri) if exists(loc.uri) else {}
