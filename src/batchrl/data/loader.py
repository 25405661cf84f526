"""Arrow-native loader: prepared training tables (spec section 3) -> torch batches.

Reads the Parquet files of a committed dataset (local or S3) with pyarrow, one row group at a time.
Two paths:

- **resident** (the fast path, chosen when the dataset fits the memory budget of the device): the
  whole table is read once, moved to the device once, transformed once (e.g. by the Preprocessor) and
  every epoch indexes it with a fresh permutation;
- **streaming**: row groups are shuffled per epoch, read by a background thread, shuffled again
  inside a buffer of several row groups, cut into batches that are copied into pinned memory (on
  CUDA) and transferred without blocking; the transform runs per batch on the device.

Shuffling depends only on ``(seed, epoch)``, so a resumed run sees the same batches. Sharding: rank
``r`` of ``world_size`` gets every ``world_size``-th row of the epoch's permutation (resident) or
every ``world_size``-th row group (streaming); every rank gets the same number of rows (resident).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from batchrl import storage
from batchrl.errors import BatchRLError

log = logging.getLogger(__name__)

#: Columns the trainers read (a subset of ``schema.TRAINING_COLUMNS``).
TRAIN_COLUMNS = (
    "reward", "state_features", "state_features_presence", "next_state_features",
    "next_state_features_presence", "action", "next_action", "possible_actions_mask",
    "possible_next_actions_mask", "not_terminal", "action_probability", "step", "time_diff",
)
#: Extra column of tables with continuous actions.
CONTINUOUS_COLUMNS = ("action_presence",)
#: Extra columns of tables with parametric actions (items among candidate sets), beside the continuous one.
PARAMETRIC_COLUMNS = ("possible_actions_features", "possible_actions_presence", "possible_next_actions_features",
                      "possible_next_actions_presence", "action_index")


@dataclass
class Batch:
    """A batch of transitions as tensors. ``state``/``next_state`` hold raw feature values
    (``float32[B, F]``, with ``*_presence``) until a transform replaces them with the network input
    (``float32[B, D]``, presence then None)."""

    state: torch.Tensor
    state_presence: torch.Tensor | None
    next_state: torch.Tensor
    next_state_presence: torch.Tensor | None
    action: torch.Tensor  # long [B]; continuous: float32 [B, d] (raw, then in [-1, 1] after the transform)
    next_action: torch.Tensor  # long [B]; num_actions = no next action; continuous: float32 [B, d] raw
    reward: torch.Tensor  # float32 [B]
    possible_actions_mask: torch.Tensor  # bool [B, A]
    possible_next_actions_mask: torch.Tensor  # bool [B, A]
    not_terminal: torch.Tensor  # bool [B]
    action_probability: torch.Tensor  # float32 [B]
    step: torch.Tensor  # long [B]
    time_diff: torch.Tensor  # long [B]
    episode: torch.Tensor | None = None  # long [B], eval only: episode index (by mdp_id)
    sequence_number: torch.Tensor | None = None  # long [B], eval only
    action_presence: torch.Tensor | None = None  # float32 [B, d], continuous actions until the transform
    # parametric actions: the padded candidate sets (raw item features, then the network input after the
    # transform, presence then None); possible_(next_)actions_mask [B, K] marks the real candidates
    candidates: torch.Tensor | None = None  # float32 [B, K, d]
    candidates_presence: torch.Tensor | None = None  # float32 [B, K, d]
    next_candidates: torch.Tensor | None = None  # float32 [B, K, d]
    next_candidates_presence: torch.Tensor | None = None  # float32 [B, K, d]
    action_index: torch.Tensor | None = None  # long [B]: the chosen item's position among the candidates

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)
                                if getattr(self, f.name) is not None})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        return self._map(lambda t: t.pin_memory())

    def index(self, idx: torch.Tensor | slice) -> Batch:
        return self._map(lambda t: t[idx])

    @property
    def num_bytes(self) -> int:
        return sum(t.element_size() * t.numel() for f in fields(self) if (t := getattr(self, f.name)) is not None)


def concat_batches(batches: list[Batch]) -> Batch:
    first = batches[0]
    return replace(first, **{f.name: torch.cat([getattr(b, f.name) for b in batches])
                             for f in fields(first) if getattr(first, f.name) is not None})


# ---------------------------------------------------------------- Arrow -> torch


def _column(table: pa.Table, name: str, where: str) -> pa.Array:
    if name not in table.column_names:
        raise BatchRLError(f"training table has no column '{name}'", where=where,
                           fix="pass a table written by `batchrl prepare`")
    array = table.column(name).combine_chunks()
    if array.null_count:
        raise BatchRLError(f"column '{name}' has {array.null_count} null values", where=where,
                           fix="rerun `batchrl prepare`; prepared tables have no nulls")
    return array


def _matrix(table: pa.Table, name: str, width: int, dtype: npt.DTypeLike, where: str) -> np.ndarray:
    array = _column(table, name, where)
    lengths = pc.list_value_length(array)
    low, high = pc.min_max(lengths).values() if len(array) else (pa.scalar(width), pa.scalar(width))
    if low.as_py() != width or high.as_py() != width:
        raise BatchRLError(f"column '{name}' has vectors of length {low.as_py()}..{high.as_py()}, expected "
                           f"{width} (the dataset metadata's feature_ids/action_names)", where=where,
                           fix="rerun `batchrl prepare`; the table and its metadata disagree")
    flat = pc.list_flatten(array).to_numpy(zero_copy_only=False)
    return np.array(flat.reshape(len(array), width), dtype=dtype)  # a writable copy


def _vector(table: pa.Table, name: str, dtype: npt.DTypeLike, where: str) -> np.ndarray:
    return np.array(_column(table, name, where).to_numpy(zero_copy_only=False), dtype=dtype)


def table_to_batch(table: pa.Table, num_features: int, num_actions: int, where: str = "training table",
                   episode_ids: bool = False, continuous: bool = False, num_candidates: int = 0) -> Batch:
    """Convert prepared-table rows to a CPU :class:`Batch`; rows without a logged action are dropped.
    ``continuous``: actions are vectors of ``num_actions`` action features (with presence);
    ``num_candidates`` > 0: parametric actions, candidate sets of that many items (padded)."""
    t = torch.from_numpy
    action_presence = None
    if continuous:
        action = _matrix(table, "action", num_actions, np.float32, where)
        nxt = _matrix(table, "next_action", num_actions, np.float32, where)
        action_presence = t(_matrix(table, "action_presence", num_actions, np.float32, where))
        if not (np.isfinite(action).all() and np.isfinite(nxt).all()):
            raise BatchRLError("non-finite action values", where=where,
                               fix="rerun `batchrl validate` on the logged data and `batchrl prepare`")
    else:
        action = _vector(table, "action", np.int64, where)
        nxt = _vector(table, "next_action", np.int64, where)
        for name, values in (("action", action), ("next_action", nxt)):
            if len(values) and (values.min() < 0 or values.max() > num_actions):
                raise BatchRLError(f"column '{name}' has action indices outside 0..{num_actions}", where=where,
                                   fix="rerun `batchrl prepare` with the action list of the dataset metadata")
    masks = num_candidates if num_candidates else 0 if continuous else num_actions
    batch = Batch(
        state=t(_matrix(table, "state_features", num_features, np.float32, where)),
        state_presence=t(_matrix(table, "state_features_presence", num_features, np.float32, where)),
        next_state=t(_matrix(table, "next_state_features", num_features, np.float32, where)),
        next_state_presence=t(_matrix(table, "next_state_features_presence", num_features, np.float32, where)),
        action=t(action),
        next_action=t(nxt),
        reward=t(_vector(table, "reward", np.float32, where)),
        possible_actions_mask=t(_matrix(table, "possible_actions_mask", masks, np.bool_, where)),
        possible_next_actions_mask=t(_matrix(table, "possible_next_actions_mask", masks, np.bool_, where)),
        not_terminal=t(_vector(table, "not_terminal", np.bool_, where)),
        action_probability=t(_vector(table, "action_probability", np.float32, where)),
        step=t(_vector(table, "step", np.int64, where)),
        time_diff=t(_vector(table, "time_diff", np.int64, where)),
        action_presence=action_presence,
    )
    if num_candidates:
        _add_candidates(batch, table, num_candidates, num_actions, where)
    if episode_ids:
        codes = pc.dictionary_encode(_column(table, "mdp_id", where)).indices  # first-appearance order
        batch.episode = t(codes.to_numpy(zero_copy_only=False).astype(np.int64))
        batch.sequence_number = t(_vector(table, "sequence_number", np.int64, where))
    if not np.isfinite(batch.reward.numpy()).all() or not np.isfinite(batch.state.numpy()).all():
        raise BatchRLError("non-finite reward or state values", where=where,
                           fix="rerun `batchrl validate` on the logged data and `batchrl prepare`")
    no_action = (~action_presence.bool().any(dim=1) if action_presence is not None  # continuous actions
                 else batch.action == num_actions)
    if bool(no_action.any()):
        log.info("%s: dropping %d rows without a logged action", where, int(no_action.sum()))
        batch = batch.index(~no_action)
    return batch


def _add_candidates(batch: Batch, table: pa.Table, k: int, d: int, where: str) -> None:
    """The padded candidate sets of a parametric table: [B, K, d] features and presence, and action_index."""
    def cube(name: str) -> torch.Tensor:
        return torch.from_numpy(_matrix(table, name, k * d, np.float32, where).reshape(-1, k, d))

    batch.candidates = cube("possible_actions_features")
    batch.candidates_presence = cube("possible_actions_presence")
    batch.next_candidates = cube("possible_next_actions_features")
    batch.next_candidates_presence = cube("possible_next_actions_presence")
    index = _vector(table, "action_index", np.int64, where)
    if len(index) and (index.min() < -1 or index.max() >= k):
        raise BatchRLError(f"column 'action_index' has positions outside -1..{k - 1}", where=where,
                           fix="rerun `batchrl prepare`; the table and its metadata disagree")
    batch.action_index = torch.from_numpy(index)


# ---------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetInfo:
    """What a prepared table's metadata says about its columns."""

    uri: str
    feature_ids: list[int]
    action_names: list[str]  # continuous: the action feature ids as strings
    metric_names: list[str]
    continuous: bool = False
    action_normalization: dict[str, Any] | None = None  # continuous: CONTINUOUS_ACTION normalization JSON
    num_candidates: int = 0  # parametric actions: the padded candidate-set size K (0: not parametric)
    multi_steps: int | None = None  # k of k-step rows (reward: a discounted sum of k rewards); None: one-step

    @property
    def parametric(self) -> bool:
        """Items described by features, chosen among candidate sets (continuous action vectors + candidates)."""
        return self.num_candidates > 0

    @property
    def num_features(self) -> int:
        return len(self.feature_ids)

    @property
    def num_actions(self) -> int:
        """Discrete: the number of actions; continuous: the action dimensions."""
        return len(self.action_names)

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the trainers read."""
        return (TRAIN_COLUMNS + (CONTINUOUS_COLUMNS if self.continuous else ())
                + (PARAMETRIC_COLUMNS if self.parametric else ()))


def dataset_info(uri: str) -> DatasetInfo:
    meta = storage.read_metadata(uri)
    missing = [key for key in ("feature_ids", "action_names") if not meta.get(key)]
    if missing:
        raise BatchRLError(f"training table metadata lacks {', '.join(missing)}", where=uri,
                           fix="pass a table written by `batchrl prepare` (discrete actions)")
    parametric = meta.get("action_kind") == "parametric"
    continuous = meta.get("action_kind") == "continuous" or parametric
    if parametric and not int(meta.get("num_candidates") or 0) > 0:
        raise BatchRLError("parametric-action table metadata lacks num_candidates", where=uri,
                           fix="rerun `batchrl prepare` on the parametric timeline")
    if continuous and not meta.get("action_normalization"):
        raise BatchRLError("continuous-action table metadata lacks action_normalization", where=uri,
                           fix="rerun `batchrl prepare` with --action-normalization")
    return DatasetInfo(uri, [int(i) for i in meta["feature_ids"]], [str(a) for a in meta["action_names"]],
                       [str(m) for m in meta.get("metric_names") or []], continuous,
                       meta.get("action_normalization") if continuous else None,
                       int(meta["num_candidates"]) if parametric else 0, meta.get("multi_steps"))


def read_eval_batch(uri: str, info: DatasetInfo | None = None) -> Batch:
    """The whole table as one CPU batch, rows ordered by (mdp_id, sequence_number), with episode ids."""
    info = info or dataset_info(uri)
    table = storage.read_table(uri, columns=[*info.columns, "mdp_id", "sequence_number"])
    table = table.sort_by([("mdp_id", "ascending"), ("sequence_number", "ascending")])
    return table_to_batch(table, info.num_features, info.num_actions, where=uri, episode_ids=True,
                          continuous=info.continuous, num_candidates=info.num_candidates)


def default_resident_budget(device: torch.device) -> int:
    """Bytes a dataset may take to stay resident: a quarter of free GPU memory, or 2 GiB on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 4
    return 2 << 30


class TransitionLoader:
    """Batches of a prepared table for training; see the module docstring for the two paths.

    Args:
        uri: the prepared table (committed dataset, local or s3://).
        batch_size: rows per batch (per rank).
        seed: shuffling seed; epoch ``e`` uses ``(seed, e)``.
        device: where batches are delivered.
        transform: applied to each batch on the device (streaming) or once to the whole table (resident).
        resident: True/False forces a path; None chooses by ``resident_max_bytes``.
        rank, world_size: data-parallel shard.
        drop_last: drop a final partial batch.
    """

    def __init__(self, uri: str, batch_size: int, *, seed: int, device: torch.device | str = "cpu",
                 transform: Callable[[Batch], Batch] | None = None, shuffle: bool = True,
                 resident: bool | None = None, resident_max_bytes: int | None = None, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, shuffle_buffer_rows: int = 65536):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.uri, self.batch_size, self.seed = uri, batch_size, seed
        self.device = torch.device(device)
        self.transform = transform
        self.shuffle, self.rank, self.world_size, self.drop_last = shuffle, rank, world_size, drop_last
        self.shuffle_buffer_rows = shuffle_buffer_rows
        self.info = dataset_info(uri)
        loc = storage.require_committed(uri)
        self._fs = loc.fs
        self._row_groups: list[tuple[str, int, int]] = []
        for path in storage.data_files(loc):
            with self._fs.open_input_file(path) as fh:
                meta = pq.ParquetFile(fh).metadata
            self._row_groups += [(path, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
        self.num_rows = sum(n for _, _, n in self._row_groups)
        if self.num_rows == 0:
            raise BatchRLError("training table is empty", where=uri, fix="check the train/eval split and the data")
        budget = resident_max_bytes if resident_max_bytes is not None else default_resident_budget(self.device)
        self.resident = resident if resident is not None else self.estimated_bytes <= budget
        self._data: Batch | None = None
        self._pin = self.device.type == "cuda"

    @property
    def estimated_bytes(self) -> int:
        f, a, k = self.info.num_features, self.info.num_actions, self.info.num_candidates
        return self.num_rows * (4 * f * 4 + 2 * a + 8 * 5 + 4 * 2 + 1 + 16 * k * a)

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        rows = self.num_rows // self.world_size
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def _read(self, groups: list[tuple[str, int, int]]) -> Batch:
        tables = []
        for path, index, _ in groups:
            with self._fs.open_input_file(path) as fh:
                tables.append(pq.ParquetFile(fh).read_row_group(index, columns=list(self.info.columns)))
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        return table_to_batch(table, self.info.num_features, self.info.num_actions, where=self.uri,
                              continuous=self.info.continuous, num_candidates=self.info.num_candidates)

    def _deliver(self, batch: Batch, transformed: bool) -> Batch:
        if batch.reward.device != self.device:
            if self._pin:
                batch = batch.pin_memory()
            batch = batch.to(self.device, non_blocking=self._pin)
        if self.transform is not None and not transformed:
            batch = self.transform(batch)
        return batch

    def _resident_data(self) -> Batch:
        if self._data is None:
            data = self._read(self._row_groups).to(self.device)
            if self.transform is not None:
                chunk = 1 << 16
                data = concat_batches([self.transform(data.index(slice(i, i + chunk)))
                                       for i in range(0, len(data), chunk)])
            self._data = data
            log.info("training table resident on %s: %d rows, %.1f MiB", self.device, len(data),
                     data.num_bytes / 2**20)
        return self._data

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch])

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of epoch ``epoch`` for this rank, shuffled by ``(seed, epoch)``."""
        if self.resident:
            yield from self._resident_epoch(epoch)
        else:
            yield from self._streaming_epoch(epoch)

    def _resident_epoch(self, epoch: int) -> Iterator[Batch]:
        data = self._resident_data()
        n = len(data)
        order = self._rng(epoch).permutation(n) if self.shuffle else np.arange(n)
        per_rank = n // self.world_size
        mine = torch.from_numpy(order[self.rank::self.world_size][:per_rank]).to(self.device)
        for start in range(0, per_rank, self.batch_size):
            idx = mine[start:start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            yield data.index(idx)

    def _streaming_epoch(self, epoch: int) -> Iterator[Batch]:
        rng = self._rng(epoch)
        groups = list(self._row_groups)
        if self.shuffle:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        groups = groups[self.rank::self.world_size]
        # buffers of whole row groups holding at least shuffle_buffer_rows rows
        buffers: list[list[tuple[str, int, int]]] = [[]]
        for group in groups:
            if sum(n for _, _, n in buffers[-1]) >= self.shuffle_buffer_rows:
                buffers.append([])
            buffers[-1].append(group)
        buffers = [b for b in buffers if b]
        carry: Batch | None = None
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._read, buffers[0]) if buffers else None
            for i in range(len(buffers)):
                assert pending is not None  # submitted for every buffer
                data = pending.result()
                pending = pool.submit(self._read, buffers[i + 1]) if i + 1 < len(buffers) else None
                if carry is not None:
                    data = concat_batches([carry, data])
                if self.shuffle:
                    data = data.index(torch.from_numpy(rng.permutation(len(data))))
                full = len(data) - len(data) % self.batch_size
                for start in range(0, full, self.batch_size):
                    yield self._deliver(data.index(slice(start, start + self.batch_size)), False)
                carry = data.index(slice(full, len(data))) if full < len(data) else None
        if carry is not None and not self.drop_last:
            yield self._deliver(carry, False)
