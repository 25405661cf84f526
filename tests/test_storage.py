"""Storage: local and S3 round trips, the commit protocol, and clear errors."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from batchrl import storage
from batchrl.errors import BatchRLError

TABLE = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})


def test_local_round_trip_with_metadata(tmp_path):
    uri = str(tmp_path / "ds")
    storage.write_table(TABLE, uri, metadata={"feature_ids": [0, 1]})
    assert storage.read_table(uri).equals(TABLE)
    assert storage.read_metadata(uri) == {"feature_ids": [0, 1]}
    assert storage.read_table(f"file://{uri}").equals(TABLE)
    # no temporary directories left beside it
    assert sorted(os.listdir(tmp_path)) == ["ds"]


def test_overwrite_replaces_whole_dataset(tmp_path):
    uri = str(tmp_path / "ds")
    storage.write_table(TABLE, uri)
    storage.write_table(TABLE.slice(0, 1), uri)
    assert storage.read_table(uri).num_rows == 1


def test_interrupted_write_leaves_nothing_readable(tmp_path):
    uri = str(tmp_path / "ds")

    with pytest.raises(RuntimeError):
        with storage.DatasetWriter(uri) as writer:
            import pyarrow.parquet as pq

            pq.write_table(TABLE, writer.staging.child("part-0.parquet").path)
            raise RuntimeError("crash mid-write")
    assert not os.path.exists(uri)
    assert os.listdir(tmp_path) == []


def test_uncommitted_dataset_is_refused(tmp_path):
    uri = tmp_path / "ds"
    uri.mkdir()
    import pyarrow.parquet as pq

    pq.write_table(TABLE, uri / "part-0.parquet")
    with pytest.raises(BatchRLError, match="not committed"):
        storage.read_table(str(uri))


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(BatchRLError, match="not found"):
        storage.read_table(str(tmp_path / "nope"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "part-0.parquet").write_bytes(b"garbage")
    (bad / "_SUCCESS").write_bytes(b"")
    with pytest.raises(BatchRLError, match="corrupt"):
        storage.read_table(str(bad))
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(BatchRLError, match="not valid JSON"):
        storage.read_json(str(tmp_path / "x.json"))


def test_unsupported_scheme():
    with pytest.raises(BatchRLError, match="unsupported URI scheme"):
        storage.resolve("gs://bucket/x")


def test_s3_round_trip(s3_env):
    uri = f"{s3_env}/runs/ds"
    storage.write_table(TABLE, uri, metadata={"rows": 3})
    assert storage.is_committed(uri)
    assert storage.read_table(uri).equals(TABLE)
    assert storage.read_metadata(uri) == {"rows": 3}
    storage.write_json(f"{s3_env}/runs/norm.json", {"0": {"mean": 1.0}})
    assert storage.read_json(f"{s3_env}/runs/norm.json") == {"0": {"mean": 1.0}}
    storage.write_bytes(f"{s3_env}/m.bin", b"\x00\x01")
    assert storage.read_bytes(f"{s3_env}/m.bin") == b"\x00\x01"


def test_s3_uncommitted_refused(s3_env):
    uri = f"{s3_env}/half"
    writer = storage.DatasetWriter(uri)
    storage.write_bytes(writer.staging.child("part-0.parquet").uri, b"partial")
    with pytest.raises(BatchRLError, match="not committed"):
        storage.read_table(uri)


def test_s3_errors_never_show_secrets(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "super-secret-value-123")
    with pytest.raises(BatchRLError) as info:
        storage.read_table("s3://no-such-bucket-xyz/ds")
    assert "super-secret-value-123" not in str(info.value)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(BatchRLError, match="incomplete S3 credentials"):
        storage.resolve("s3://b/x")


def test_generate_to_s3(s3_env, cli):
    code, out, _ = cli("generate", "--transitions", "200", "--output", f"{s3_env}/logged")
    assert code == 0
    assert storage.read_table(f"{s3_env}/logged").num_rows == 200
