"""Helpers for the training tests (no tests here): small prepared training tables built directly with
numpy + pyarrow, in the prepared-table format of spec section 3 (``schema.TRAINING_COLUMNS``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from batchrl import storage
from batchrl.data.schema import TRAINING_COLUMNS
from batchrl.preprocessing.normalization import NormalizationParameters, write_normalization

ACTIONS = ["0", "1"]


def transitions_table(rows: dict) -> pa.Table:
    """A prepared table from dense numpy columns (missing optional columns get defaults)."""
    n = len(rows["reward"])
    f = rows["state_features"].shape[1]
    a = rows.get("num_actions", 2)
    full = {
        "reward": rows["reward"],
        "state_features": rows["state_features"],
        "state_features_presence": rows.get("state_features_presence", np.ones((n, f), bool)),
        "next_state_features": rows["next_state_features"],
        "next_state_features_presence": rows.get("next_state_features_presence", np.ones((n, f), bool)),
        "action": rows["action"],
        "next_action": rows["next_action"],
        "possible_actions_mask": rows.get("possible_actions_mask", np.ones((n, a), bool)),
        "possible_next_actions_mask": rows.get("possible_next_actions_mask", np.ones((n, a), bool)),
        "not_terminal": rows["not_terminal"],
        "action_probability": rows.get("action_probability", np.full(n, 1.0 / a)),
        "mdp_id": rows.get("mdp_id", np.arange(n).astype(str)),
        "sequence_number": rows.get("sequence_number", np.zeros(n, np.int64)),
        "step": rows.get("step", np.ones(n, np.int64)),
        "time_diff": rows.get("time_diff", np.ones(n, np.int64)),
        "metrics": rows.get("metrics", rows["reward"].reshape(n, 1)),
        "metrics_presence": rows.get("metrics_presence", np.ones((n, 1), bool)),
    }
    arrays = []
    for name, typ in TRAINING_COLUMNS.items():
        value = np.asarray(full[name])
        if pa.types.is_list(typ):
            arrays.append(pa.array(list(value.astype(typ.value_type.to_pandas_dtype())), type=typ))
        else:
            arrays.append(pa.array(value.astype(typ.to_pandas_dtype()) if typ != pa.string() else value, type=typ))
    return pa.table(arrays, names=list(TRAINING_COLUMNS))


def write_prepared(uri: str, rows: dict, feature_ids: list[int], actions: list[str] = ACTIONS,
                   rows_per_file: int = 1_000_000) -> None:
    storage.write_table(transitions_table({**rows, "num_actions": len(actions)}), uri,
                        metadata={"feature_ids": feature_ids, "action_names": actions, "metric_names": ["reward"]},
                        rows_per_file=rows_per_file)


def cartpole_rows(transitions: int, seed: int) -> dict:
    """Random-policy CartPole-v0 transitions as prepared rows (terminal rows kept, truncated ones dropped)."""
    from batchrl.data.gym_logging import GenerateOptions, run_episodes

    episodes, _ = run_episodes(GenerateOptions(transitions=transitions, seed=seed))
    cols: dict[str, list] = {k: [] for k in ("state_features", "next_state_features", "action", "next_action",
                                             "reward", "not_terminal", "mdp_id", "sequence_number")}
    for index, ep in enumerate(episodes):
        n = len(ep) if ep.end_reason == "terminated" else len(ep) - 1
        obs = np.asarray(ep.obs, np.float32)
        for t in range(n):
            last = t == len(ep) - 1
            cols["state_features"].append(obs[t])
            cols["next_state_features"].append(np.zeros(4, np.float32) if last else obs[t + 1])
            cols["action"].append(int(ep.actions[t]))
            cols["next_action"].append(2 if last else int(ep.actions[t + 1]))
            cols["reward"].append(float(ep.rewards[t]))
            cols["not_terminal"].append(not last)
            cols["mdp_id"].append(str(index))
            cols["sequence_number"].append(t)
    out = {k: np.asarray(v) for k, v in cols.items()}
    out["action_probability"] = np.full(len(out["reward"]), 0.5)
    last = ~out["not_terminal"]
    out["possible_next_actions_mask"] = np.repeat(~last[:, None], 2, axis=1)
    return out


def split_rows(rows: dict, eval_fraction: float = 0.1) -> tuple[dict, dict]:
    """Split by episode (every 1/eval_fraction-th episode goes to eval)."""
    episode = rows["mdp_id"].astype(np.int64)
    is_eval = episode % int(round(1 / eval_fraction)) == 0
    pick = lambda mask: {k: v[mask] for k, v in rows.items()}  # noqa: E731
    return pick(~is_eval), pick(is_eval)


def write_normalization_for(uri: str, states: np.ndarray, feature_ids: list[int]) -> None:
    norm = {fid: NormalizationParameters(feature_type="CONTINUOUS", mean=float(states[:, j].mean()),
                                         stddev=max(float(states[:, j].std()), 1e-3))
            for j, fid in enumerate(feature_ids)}
    write_normalization(uri, norm)


def cartpole_dataset(directory, transitions: int = 3000, seed: int = 0) -> dict[str, str]:
    """train/eval prepared tables and a normalization JSON under ``directory``; returns their paths."""
    rows = cartpole_rows(transitions, seed)
    train_rows, eval_rows = split_rows(rows)
    paths = {name: str(directory / name) for name in ("train", "eval", "norm.json")}
    write_prepared(paths["train"], train_rows, [0, 1, 2, 3])
    write_prepared(paths["eval"], eval_rows, [0, 1, 2, 3])
    write_normalization_for(paths["norm.json"], rows["state_features"], [0, 1, 2, 3])
    return paths
