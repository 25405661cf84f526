"""CPE of any policy from a table of numbers (``batchrl cpe``): the policy need not be trained here.

The table (Parquet, local or s3://, a file or a committed dataset) has one row per logged decision:

| column | type | meaning |
|---|---|---|
| ``mdp_id`` | string or integer | episode id |
| ``sequence_number`` | integer | order of the decision within its episode |
| ``reward`` | float | logged reward |
| ``action`` | integer | logged action index, 0 .. A-1 |
| ``action_probability`` | float in (0, 1] | the logging policy's probability of the logged action |
| ``target_probabilities`` | list of A floats summing to 1 | the evaluated policy's pi(.\\|s) |
| ``logging_probabilities`` | optional list of A floats | the logging policy's mu(.\\|s), logged or modelled (Switch's rule needs it; weights use ``action_probability``) |
| ``reward_estimates`` | optional list of A floats | a reward model r_hat(s, .) (DM, DR, Switch, SwitchDR) |
| ``q_estimates`` | optional list of A floats | a value model Q_hat(s, .) of the target policy (SDR, WDR, MAGIC) |

:func:`evaluate_table` validates everything before estimating (one :class:`BatchRLError` naming every
problem), calls :func:`batchrl.evaluation.cpe.counterfactual_estimates` (the same function as the
evaluate stage) and writes one JSON file. :func:`inputs_to_table` writes CPE inputs in this format
(the evaluate stage's ``cpe_inputs.parquet``).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from pydantic import BaseModel, ConfigDict, Field

from batchrl import storage
from batchrl.errors import BatchRLError
from batchrl.evaluation.cpe import CPEInputs, counterfactual_estimates

REQUIRED = ("mdp_id", "sequence_number", "reward", "action", "action_probability", "target_probabilities")
OPTIONAL_LISTS = ("logging_probabilities", "reward_estimates", "q_estimates")
#: How far a probability vector's sum may be from 1.
SUM_TOLERANCE = 1e-6
FIX = "see docs/evaluation.md, 'batchrl cpe', for the table's columns"


class CPETableOptions(BaseModel):
    """Options of ``batchrl cpe``."""

    model_config = ConfigDict(extra="forbid")

    sequential: bool = False
    gamma: float = Field(default=1.0, ge=0.0, le=1.0)
    bootstrap: int = Field(default=200, ge=0, le=100_000)
    seed: int = 0
    switch_threshold: float = Field(default=10.0, gt=0.0)


def _lists(table: pa.Table, name: str, rows: int, problems: list[str]) -> np.ndarray | None:
    """A list column as an [N, A] float64 array (None and a problem when the lengths disagree)."""
    column = table.column(name).combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        problems.append(f"column {name} must be a list of numbers per row, found {column.type}")
        return None
    if column.null_count:
        problems.append(f"column {name} has {column.null_count} empty (null) rows")
        return None
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if rows and (lengths.min() != lengths.max() or lengths.min() == 0):
        problems.append(f"column {name} has lists of different lengths ({int(lengths.min())} to "
                        f"{int(lengths.max())}); every row needs one value per action")
        return None
    values = column.flatten()
    if values.null_count:
        problems.append(f"column {name} has null entries inside its lists")
        return None
    try:
        flat: np.ndarray = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        problems.append(f"column {name} must hold numbers, found {values.type}")
        return None
    return flat.reshape(rows, -1) if rows else flat.reshape(0, 0)


def _numbers(table: pa.Table, name: str, problems: list[str], integer: bool = False) -> np.ndarray | None:
    column = table.column(name).combine_chunks()
    if column.null_count:
        problems.append(f"column {name} has {column.null_count} null rows")
        return None
    wanted = pa.types.is_integer if integer else (lambda t: pa.types.is_integer(t) or pa.types.is_floating(t))
    if not wanted(column.type):
        problems.append(f"column {name} must be {'an integer' if integer else 'a number'}, found {column.type}")
        return None
    numbers: np.ndarray = column.cast(pa.int64() if integer else pa.float64()).to_numpy(zero_copy_only=False)
    return numbers


def _check_distribution(name: str, probs: np.ndarray, problems: list[str]) -> None:
    bad = ~np.all((probs >= 0) & (probs <= 1), axis=1)
    if bad.any():
        problems.append(f"{name}: {int(bad.sum())} rows have a probability outside [0, 1] (first: row "
                        f"{int(np.argmax(bad))})")
    off = np.abs(probs.sum(axis=1) - 1.0) > SUM_TOLERANCE
    if off.any():
        first = int(np.argmax(off))
        problems.append(f"{name}: {int(off.sum())} rows do not sum to 1 (first: row {first} sums to "
                        f"{probs[first].sum():.6g})")


def read_cpe_table(uri: str) -> CPEInputs:
    """The table's rows, ordered by (mdp_id, sequence_number), as :class:`CPEInputs`; every problem
    found is reported in one BatchRLError."""
    table = storage.read_table(uri)
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise BatchRLError(f"the CPE table lacks the column(s) {', '.join(missing)}", where=uri, fix=FIX)
    rows = table.num_rows
    if rows == 0:
        raise BatchRLError("the CPE table has no rows", where=uri, fix="give at least one logged decision")
    problems: list[str] = []
    ids = table.column("mdp_id").combine_chunks()
    if ids.null_count or not (pa.types.is_integer(ids.type) or pa.types.is_string(ids.type)
                              or pa.types.is_large_string(ids.type)):
        problems.append(f"column mdp_id must be a string or an integer without nulls, found {ids.type}")
    sequence = _numbers(table, "sequence_number", problems, integer=True)
    reward = _numbers(table, "reward", problems)
    action = _numbers(table, "action", problems, integer=True)
    propensity = _numbers(table, "action_probability", problems)
    target = _lists(table, "target_probabilities", rows, problems)
    optional = {name: _lists(table, name, rows, problems) for name in OPTIONAL_LISTS if name in table.column_names}
    if problems:
        raise BatchRLError("bad CPE table: " + "; ".join(problems), where=uri, fix=FIX)
    assert sequence is not None and reward is not None and action is not None and propensity is not None
    assert target is not None
    num_actions = target.shape[1]
    if not np.all(np.isfinite(reward)):
        problems.append("column reward has values that are not finite")
    if not np.all((propensity > 0) & (propensity <= 1)):
        problems.append(f"column action_probability: {int(np.sum(~((propensity > 0) & (propensity <= 1))))} rows "
                        "outside (0, 1] (the logged action was taken, so its probability is above 0)")
    if np.any((action < 0) | (action >= num_actions)):
        problems.append(f"column action: indices outside 0..{num_actions - 1} (target_probabilities has "
                        f"{num_actions} actions)")
    _check_distribution("target_probabilities", target, problems)
    for name, values in optional.items():
        if values is not None and values.shape[1] != num_actions:
            problems.append(f"column {name} has {values.shape[1]} values per row but target_probabilities has "
                            f"{num_actions}")
        elif values is not None and not np.all(np.isfinite(values)):
            problems.append(f"column {name} has values that are not finite")
    logging = optional.get("logging_probabilities")
    if logging is not None and logging.shape[1] == num_actions:
        _check_distribution("logging_probabilities", logging, problems)
    keys = pa.table({"mdp_id": ids, "sequence_number": sequence})
    if keys.group_by(["mdp_id", "sequence_number"]).aggregate([]).num_rows != rows:
        problems.append("some (mdp_id, sequence_number) pairs appear more than once")
    if problems:
        raise BatchRLError("bad CPE table: " + "; ".join(problems), where=uri, fix=FIX)
    order = pc.sort_indices(keys, sort_keys=[("mdp_id", "ascending"), ("sequence_number", "ascending")])
    order = order.to_numpy()
    sorted_ids = ids.take(pa.array(order))
    starts = np.ones(rows, dtype=bool)
    starts[1:] = pc.not_equal(sorted_ids[1:], sorted_ids[:-1]).to_numpy(zero_copy_only=False)
    episode = np.cumsum(starts) - 1
    last = np.append(starts[1:], True)

    def tensor(values: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(values[order])).to(dtype)

    def optional_tensor(values: np.ndarray | None) -> torch.Tensor | None:
        return None if values is None else tensor(values)

    return CPEInputs(
        reward=tensor(reward), action=tensor(action, torch.long), logged_propensity=tensor(propensity),
        target_probs=tensor(target), reward_hat=optional_tensor(optional.get("reward_estimates")),
        q_hat=optional_tensor(optional.get("q_estimates")), episode=torch.from_numpy(episode),
        not_terminal=torch.from_numpy(~last), logging_probs=optional_tensor(logging))


def inputs_to_table(inputs: CPEInputs) -> pa.Table:
    """CPE inputs as a table in the format above (mdp_id = episode number, sequence_number = position)."""
    from batchrl.evaluation.cpe import episode_index

    index = episode_index(inputs.episode)
    first = torch.zeros_like(index)
    starts = torch.nonzero(torch.cat([torch.tensor([True]), index[1:] != index[:-1]])).squeeze(1)
    first[starts] = starts
    first = torch.cummax(first, dim=0).values
    position = torch.arange(index.shape[0]) - first

    def lists(values: torch.Tensor) -> pa.Array:
        flat = pa.array(values.to(torch.float64).reshape(-1).numpy())
        offsets = pa.array(np.arange(0, values.numel() + 1, values.shape[1], dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, flat)

    columns: dict[str, Any] = {
        "mdp_id": pa.array(index.numpy()), "sequence_number": pa.array(position.numpy()),
        "reward": pa.array(inputs.reward.to(torch.float64).numpy()), "action": pa.array(inputs.action.long().numpy()),
        "action_probability": pa.array(inputs.logged_propensity.to(torch.float64).numpy()),
        "target_probabilities": lists(inputs.target_probs)}
    for name, values in (("logging_probabilities", inputs.logging_probs), ("reward_estimates", inputs.reward_hat),
                         ("q_estimates", inputs.q_hat)):
        if values is not None:
            columns[name] = lists(values)
    return pa.table(columns)


def table_bytes(table: pa.Table) -> bytes:
    """``table`` as the bytes of one Parquet file."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def evaluate_table(input: str, output: str, options: CPETableOptions) -> dict[str, Any]:
    """``batchrl cpe``: estimate the target policy's value from the table at ``input`` and write the
    result (estimates with diagnostics, ``skipped`` with reasons, ``recommended``) as JSON to ``output``.
    Nothing is written when the table is bad."""
    inputs = read_cpe_table(input)
    result = counterfactual_estimates(inputs, options.gamma, options.seed, options.bootstrap,
                                      sequential_estimators=options.sequential,
                                      switch_threshold=options.switch_threshold)
    if not options.sequential:
        result["skipped"].update({name: "sequential estimators run with --sequential"
                                  for name in ("SDR", "WDR", "MAGIC")})
    document: dict[str, Any] = storage.json_safe({"input": input, **options.model_dump(), **result})
    storage.write_json(output, document)
    return document
