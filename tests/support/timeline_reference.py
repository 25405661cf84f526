"""An independent pandas/numpy implementation of the timeline operator (spec section 2).

Written from the spec alone, without Spark and without batchrl's timeline code, to check the Spark
operator against (property test) and to time against (``benchmarks/timeline.py``). pandas sorts
and groups; each output column is an Arrow ``take`` of an input column through row indices, so
placeholders and multi-step lists need no per-row Python.

``reference_timeline(table, config)``: ``table`` a logged Arrow table, ``config`` ReAgent's
TimelineConfiguration keys (camelCase) plus ``steps``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa


def _empty_value(dtype: pa.DataType) -> Any:
    if pa.types.is_string(dtype):
        return ""
    if pa.types.is_map(dtype) or pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return []
    if pa.types.is_struct(dtype):
        return {f.name: _empty_value(f.type) for f in dtype}
    return None


def _take_or_empty(column: pa.ChunkedArray, index: np.ndarray) -> pa.Array:
    """column[index], where index -1 means the column type's empty value."""
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    extended = pa.concat_arrays([values, pa.array([_empty_value(values.type)], type=values.type)])
    return extended.take(pa.array(np.where(index < 0, len(values), index)))


def _lists(column: pa.ChunkedArray, starts: np.ndarray, counts: np.ndarray) -> pa.Array:
    """Row i -> [column[starts[i]], ..., column[starts[i] + counts[i] - 1]]."""
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], counts)
    return pa.ListArray.from_arrays(pa.array(offsets), values.take(pa.array(np.repeat(starts, counts) + within)))


def _threshold(lengths: np.ndarray, p: float, function: str) -> float | None:
    """The outlier rule: the percentile, or None when the outlier share is off by more than 10%."""
    if function == "percentile":
        pct = float(np.percentile(lengths, p * 100.0))
    else:  # percentile_approx: the smallest length with CDF >= p (exact on small data)
        pct = float(np.quantile(lengths, p, method="inverted_cdf"))
    share = float(np.mean(lengths > pct))
    return pct if abs(share - (1.0 - p)) / (1.0 - p) <= 0.1 else None


def reference_timeline(table: pa.Table, config: dict[str, Any]) -> pa.Table:
    start_ds, end_ds = config["startDs"], config["endDs"]
    terminal_rows = bool(config["addTerminalStateRow"])
    steps = config.get("steps")
    names = set(table.column_names)
    rewards = list(config.get("rewardColumns", [c for c in ("reward", "metrics") if c in names]))
    extras = list(config.get("extraFeatureColumns", []))
    possible = bool(config.get("includePossibleActions", "possible_actions" in names)) and "possible_actions" in names

    ds = table.column("ds").to_numpy(zero_copy_only=False)
    table = table.filter(pa.array((ds >= start_ds) & (ds <= end_ds)))
    keys = pd.DataFrame({"mdp_id": table.column("mdp_id").to_numpy(zero_copy_only=False),
                         "seq": table.column("sequence_number").to_numpy()})
    keys = keys.sort_values(["mdp_id", "seq"], kind="stable")
    length = keys.groupby("mdp_id", sort=False)["seq"].transform("size").to_numpy()
    percentile = config.get("outlierEpisodeLengthPercentile")
    if percentile is not None and len(keys):  # no episodes in the date range: nothing is an outlier
        per_episode = keys.groupby("mdp_id", sort=False).size().to_numpy()
        pct = _threshold(per_episode, percentile, config.get("percentileFunction", "percentile_approx"))
        if pct is not None:
            keys = keys[length <= pct]
    table = table.take(pa.array(keys.index.to_numpy()))  # sorted by (mdp_id, seq), outliers gone
    keys = keys.reset_index(drop=True)
    groups = keys.groupby("mdp_id", sort=False)
    seq = keys["seq"].to_numpy().astype(np.int64)
    ordinal = groups.cumcount().to_numpy() + 1
    episode_len = groups["seq"].transform("size").to_numpy()
    since_first = seq - groups["seq"].transform("min").to_numpy()
    rows = np.arange(len(keys))
    partners = np.minimum(episode_len - ordinal, steps or 1)

    keep = np.ones(len(rows), dtype=bool)
    if not terminal_rows:
        keep &= partners > 0
    if config.get("timeWindowLimit") is not None:
        keep &= since_first <= config["timeWindowLimit"]
    rows, partners = rows[keep], partners[keep]

    def col(name: str) -> pa.Array:
        return table.column(name).combine_chunks().take(pa.array(rows))

    def nxt(name: str) -> pa.Array:
        if steps is None:
            return _take_or_empty(table.column(name), np.where(partners > 0, rows + 1, -1))
        return _lists(table.column(name), rows + 1, partners)

    def rew(name: str) -> pa.Array:
        if steps is None:
            return col(name)
        return _lists(table.column(name), rows, np.maximum(partners, 1))

    if steps is None:
        time_diff = pa.array(np.where(partners > 0, seq[np.minimum(rows + 1, len(seq) - 1)] - seq[rows], 0))
    else:
        counts = np.maximum(partners, 1)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], counts)
        base = np.repeat(rows, counts)
        diffs = np.where(np.repeat(partners, counts) > 0, seq[np.minimum(base + 1 + within, len(seq) - 1)]
                         - seq[base], 0)
        time_diff = pa.ListArray.from_arrays(pa.array(offsets), pa.array(diffs, type=pa.int64()))

    out: dict[str, pa.Array] = {
        "mdp_id": col("mdp_id"), "state_features": col("state_features"), "action": col("action"),
        "next_action": nxt("action"), "action_probability": col("action_probability"),
    }
    for name in rewards:
        out[name] = rew(name)
    out.update({
        "next_state_features": nxt("state_features"), "sequence_number": pa.array(seq[rows]),
        "sequence_number_ordinal": pa.array(ordinal[rows].astype(np.int64)), "time_diff": time_diff,
        "time_since_first": pa.array(since_first[rows]),
    })
    if possible:
        out["possible_actions"] = col("possible_actions")
        out["possible_next_actions"] = nxt("possible_actions")
    for name in extras:
        out[name] = col(name)
        out[f"next_{name}"] = nxt(name)
    out["ds"] = pa.array([end_ds] * len(rows), type=pa.string())
    if "end_reason" in names:
        out["end_reason"] = col("end_reason")
    return pa.table(out)
