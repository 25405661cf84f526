"""Timeline test inputs shared by the timeline tests: the partition date and the spec's Ex.1 table."""

from __future__ import annotations

import pyarrow as pa

from batchrl.data.schema import METRICS_MAP, STATE_MAP

DS = "2018-01-01"


def ex1_table() -> pa.Table:
    """Spec Ex.1 input: episode mdp1, discrete actions, sequence numbers 1 and 11."""
    return pa.table({
        "mdp_id": ["mdp1", "mdp1"],
        "sequence_number": pa.array([1, 11], pa.int64()),
        "state_features": pa.array([[(1, 1.0)], [(2, 1.0)]], STATE_MAP),
        "action": ["action1", "action2"],
        "reward": [1.0, 0.2],
        "possible_actions": [["action1", "action2"], []],
        "action_probability": [0.8, 0.7],
        "ds": [DS, DS],
        "metrics": pa.array([[("Widgets", 10.0)], [("Widgets", 20.0)]], METRICS_MAP),
    })
