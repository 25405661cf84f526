"""The Arrow loader: conversion, resident and streaming paths, shuffling by (seed, epoch), sharding."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from batchrl import storage
from batchrl.data.loader import TransitionLoader, read_eval_batch, table_to_batch
from batchrl.errors import BatchRLError
from tests.support.training import transitions_table, write_prepared


def rows(n: int, f: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    reward = np.arange(n, dtype=np.float32)  # the reward identifies the row
    return {
        "reward": reward,
        "state_features": rng.normal(size=(n, f)).astype(np.float32),
        "state_features_presence": rng.random((n, f)) > 0.2,
        "next_state_features": rng.normal(size=(n, f)).astype(np.float32),
        "action": rng.integers(0, 2, n),
        "next_action": rng.integers(0, 3, n),
        "not_terminal": rng.random(n) > 0.1,
        "possible_next_actions_mask": rng.random((n, 2)) > 0.5,
        "mdp_id": (np.arange(n) // 4).astype(str),
        "sequence_number": np.arange(n) % 4,
        "time_diff": np.full(n, 2),
    }


def test_table_to_batch_values():
    data = rows(6)
    batch = table_to_batch(transitions_table(data), 3, 2)
    assert batch.state.dtype == torch.float32 and batch.action.dtype == torch.long
    assert torch.equal(batch.state, torch.from_numpy(data["state_features"]))
    assert torch.equal(batch.state_presence, torch.from_numpy(data["state_features_presence"]).float())
    assert torch.equal(batch.possible_next_actions_mask, torch.from_numpy(data["possible_next_actions_mask"]))
    assert batch.not_terminal.tolist() == data["not_terminal"].tolist()
    assert batch.next_action.tolist() == data["next_action"].tolist()
    assert batch.time_diff.tolist() == [2] * 6


def test_rows_without_logged_action_are_dropped():
    data = rows(5)
    data["action"] = np.array([0, 2, 1, 2, 0])
    assert table_to_batch(transitions_table(data), 3, 2).reward.tolist() == [0, 2, 4]


def test_wrong_vector_length_and_missing_column():
    table = transitions_table(rows(4))
    with pytest.raises(BatchRLError, match="length 3..3, expected 5"):
        table_to_batch(table, 5, 2)
    with pytest.raises(BatchRLError, match="no column 'not_terminal'"):
        table_to_batch(table.drop_columns(["not_terminal"]), 3, 2)


def _epoch_rewards(loader: TransitionLoader, epoch: int) -> list[list[float]]:
    return [b.reward.tolist() for b in loader.epoch(epoch)]


@pytest.mark.parametrize("resident", [True, False])
def test_every_row_once_per_epoch_shuffled_by_seed_and_epoch(tmp_path, resident):
    uri = str(tmp_path / "t")
    write_prepared(uri, rows(100), [1, 5, 9], rows_per_file=30)  # 4 files
    loader = TransitionLoader(uri, 16, seed=3, resident=resident, shuffle_buffer_rows=40)
    assert loader.resident is resident and loader.num_rows == 100
    e1 = _epoch_rewards(loader, 1)
    assert sorted(r for b in e1 for r in b) == list(range(100))
    assert all(len(b) == 16 for b in e1[:-1])
    assert e1 == _epoch_rewards(TransitionLoader(uri, 16, seed=3, resident=resident, shuffle_buffer_rows=40), 1)
    assert e1 != _epoch_rewards(loader, 2)
    assert e1 != _epoch_rewards(TransitionLoader(uri, 16, seed=4, resident=resident, shuffle_buffer_rows=40), 1)


@pytest.mark.parametrize("resident", [True, False])
def test_shards_are_disjoint_and_cover(tmp_path, resident):
    uri = str(tmp_path / "t")
    write_prepared(uri, rows(90), [1, 5, 9], rows_per_file=10)
    seen = []
    for rank in range(3):
        loader = TransitionLoader(uri, 8, seed=0, resident=resident, rank=rank, world_size=3)
        seen.append([r for b in _epoch_rewards(loader, 1) for r in b])
    assert sum(len(s) for s in seen) == 90
    assert sorted(r for s in seen for r in s) == list(range(90))
    if resident:
        assert [len(s) for s in seen] == [30, 30, 30]


def test_transform_runs_once_on_resident_data(tmp_path):
    uri = str(tmp_path / "t")
    write_prepared(uri, rows(50), [1, 5, 9])
    calls = []

    def double_state(batch):
        calls.append(len(batch))
        batch.state = batch.state * 2
        return batch

    loader = TransitionLoader(uri, 10, seed=0, resident=True, transform=double_state)
    first = list(loader.epoch(1)) + list(loader.epoch(2))
    assert calls == [50]
    streaming = TransitionLoader(uri, 10, seed=0, resident=False, transform=double_state)
    assert len(list(streaming.epoch(1))) == 5 and calls == [50, 10, 10, 10, 10, 10]
    raw = table_to_batch(storage.read_table(uri), 3, 2)
    b = first[0]
    assert torch.allclose(b.state, raw.state[b.reward.long()] * 2)


def test_resident_choice_by_budget_and_drop_last(tmp_path):
    uri = str(tmp_path / "t")
    write_prepared(uri, rows(50), [1, 5, 9])
    assert TransitionLoader(uri, 10, seed=0).resident
    assert not TransitionLoader(uri, 10, seed=0, resident_max_bytes=100).resident
    loader = TransitionLoader(uri, 16, seed=0, drop_last=True)
    assert len(loader) == 3 and [len(b) for b in loader.epoch(1)] == [16, 16, 16]


def test_eval_batch_in_episode_order(tmp_path):
    uri = str(tmp_path / "t")
    data = rows(12)
    order = np.random.default_rng(1).permutation(12)
    write_prepared(uri, {k: v[order] for k, v in data.items()}, [1, 5, 9])
    batch = read_eval_batch(uri)
    assert batch.reward.tolist() == list(range(12))
    assert batch.episode.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert batch.sequence_number.tolist() == [0, 1, 2, 3] * 3


def test_metadata_required_and_uncommitted_refused(tmp_path):
    uri = str(tmp_path / "t")
    storage.write_table(transitions_table(rows(4)), uri, metadata={"stage": "x"})
    with pytest.raises(BatchRLError, match="feature_ids, action_names"):
        TransitionLoader(uri, 2, seed=0)
    (tmp_path / "t" / "_SUCCESS").unlink()
    with pytest.raises(BatchRLError, match="not committed"):
        TransitionLoader(uri, 2, seed=0)


def test_reads_from_s3(s3_env):
    uri = f"{s3_env}/prepared"
    write_prepared(uri, rows(40), [1, 5, 9], rows_per_file=15)
    for resident in (True, False):
        loader = TransitionLoader(uri, 16, seed=0, resident=resident)
        assert sorted(r for b in _epoch_rewards(loader, 1) for r in b) == list(range(40))


def test_null_values_rejected():
    table = transitions_table(rows(3))
    index = table.column_names.index("reward")
    table = table.set_column(index, "reward", pa.array([1.0, None, 2.0], pa.float32()))
    with pytest.raises(BatchRLError, match="'reward' has 1 null"):
        table_to_batch(table, 3, 2)
