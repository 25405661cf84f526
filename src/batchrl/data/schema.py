"""Schemas of the tables that flow between stages (spec sections 1-3).

The logged table is ReAgent's "pre-timeline" table plus one optional column of ours, ``end_reason``:
null on every row but each episode's last, where it says how the episode ended: ``terminated`` (a
true terminal state) or ``truncated`` (a time limit, or the end of the logging budget). A truncated
last row has no next state and must not be trained as terminal; ``prepare`` drops it.
"""

from __future__ import annotations

import pyarrow as pa

STATE_MAP = pa.map_(pa.int64(), pa.float64())
METRICS_MAP = pa.map_(pa.string(), pa.float64())

END_TERMINATED = "terminated"
END_TRUNCATED = "truncated"

#: Columns every logged table must have, with their Arrow types. ``action`` is listed separately.
LOGGED_REQUIRED = {
    "mdp_id": pa.string(),
    "sequence_number": pa.int64(),
    "state_features": STATE_MAP,
    "reward": pa.float64(),
    "action_probability": pa.float64(),
    "ds": pa.string(),
}
#: Optional columns and their types.
LOGGED_OPTIONAL = {
    "metrics": METRICS_MAP,
    "end_reason": pa.string(),
}

DISCRETE_ACTION = pa.string()
PARAMETRIC_ACTION = STATE_MAP


def logged_schema(parametric: bool = False, possible_actions: bool = True) -> pa.Schema:
    """The Arrow schema ``generate`` writes: discrete (string) or parametric/continuous (map) actions."""
    action = PARAMETRIC_ACTION if parametric else DISCRETE_ACTION
    fields = [
        pa.field("mdp_id", pa.string(), nullable=False),
        pa.field("sequence_number", pa.int64(), nullable=False),
        pa.field("state_features", STATE_MAP, nullable=False),
        pa.field("action", action, nullable=False),
        pa.field("reward", pa.float64(), nullable=False),
    ]
    if possible_actions:
        fields.append(pa.field("possible_actions", pa.list_(action)))
    fields += [
        pa.field("action_probability", pa.float64()),
        pa.field("ds", pa.string(), nullable=False),
        pa.field("metrics", METRICS_MAP),
        pa.field("end_reason", pa.string()),
    ]
    return pa.schema(fields)


#: Columns of a prepared training table (spec section 3), as written by ``prepare`` and read by the
#: loader. Feature ids, action names and metric names are in the dataset metadata
#: (``feature_ids``, ``action_names``, ``metric_names``); vectors follow those orders.
TRAINING_COLUMNS = {
    "reward": pa.float32(),
    "state_features": pa.list_(pa.float32()),
    "state_features_presence": pa.list_(pa.bool_()),
    "next_state_features": pa.list_(pa.float32()),
    "next_state_features_presence": pa.list_(pa.bool_()),
    "action": pa.int64(),  # discrete: index into action_names; len(action_names) = none
    "next_action": pa.int64(),
    "possible_actions_mask": pa.list_(pa.bool_()),
    "possible_next_actions_mask": pa.list_(pa.bool_()),
    "not_terminal": pa.bool_(),
    "action_probability": pa.float32(),
    "mdp_id": pa.string(),
    "sequence_number": pa.int64(),
    "step": pa.int64(),
    "time_diff": pa.int64(),
    "metrics": pa.list_(pa.float32()),
    "metrics_presence": pa.list_(pa.bool_()),
}

#: The same table for continuous (map) actions: ``action``/``next_action`` are raw action vectors over
#: the dataset metadata's ``action_feature_ids`` (missing -> 0, with presence; an empty next action is a
#: terminal row) and the possible-action masks are empty lists.
CONTINUOUS_TRAINING_COLUMNS = {
    column: dtype for name, typ in TRAINING_COLUMNS.items()
    for column, dtype in ([(name, pa.list_(pa.float32())), (f"{name}_presence", pa.list_(pa.bool_()))]
                          if name in ("action", "next_action") else [(name, typ)])
}


#: Parametric actions (items described by features, chosen among a candidate set): the continuous table's
#: action vectors (over ``action_feature_ids``, normalized by the trainer) plus each row's candidate sets
#: padded to the metadata's ``num_candidates`` K: ``possible_actions_features`` float32 [K * A] (candidate k's
#: vector at k*A..k*A+A-1, zeros past the real ones) with presence, ``possible_actions_mask`` bool [K] (the
#: real candidates), the same for the next state, and ``action_index``, the chosen item's position in its
#: candidate set.
PARAMETRIC_TRAINING_COLUMNS = {
    **CONTINUOUS_TRAINING_COLUMNS,
    "possible_actions_features": pa.list_(pa.float32()),
    "possible_actions_presence": pa.list_(pa.bool_()),
    "possible_next_actions_features": pa.list_(pa.float32()),
    "possible_next_actions_presence": pa.list_(pa.bool_()),
    "action_index": pa.int64(),
}


def training_columns(continuous: bool, parametric: bool = False) -> dict[str, pa.DataType]:
    """The columns of a prepared table with discrete (index), continuous (vector) or parametric (vector
    among candidate sets) actions."""
    if parametric:
        return PARAMETRIC_TRAINING_COLUMNS
    return CONTINUOUS_TRAINING_COLUMNS if continuous else TRAINING_COLUMNS
