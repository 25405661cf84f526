"""Choosing the exported checkpoint by counterfactual evaluation, without a simulator.

``keep_best`` (online training) picks the policy by greedy returns in the environment, which production
users do not have. Offline, every epoch already estimates the policy's value on the held-out eval table
(:mod:`batchrl.training.metrics`); with the workflow's ``checkpoint_selection``, the exported policy is
the one of the epoch e* = argmax_e s_e among the epochs with a kept checkpoint, where s_e is the chosen
estimator's ``ci_low`` (the lower end of its 95% bootstrap interval: a pessimistic choice that prefers an
estimate the data supports) or ``raw`` value in epoch e. Epochs whose estimate is missing or not finite
are not candidates; ties go to the later epoch.
"""

from __future__ import annotations

import math
from typing import Any

from batchrl.config import CheckpointSelection
from batchrl.errors import BatchRLError


def epoch_score(record: dict[str, Any], selection: CheckpointSelection) -> float | None:
    """s_e of one epoch's history record (None when the estimate is missing or not finite)."""
    value = record.get("cpe", {}).get(selection.estimator, {}).get(selection.statistic)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def select_epoch(history: list[dict[str, Any]], candidates: set[int], selection: CheckpointSelection,
                 where: str) -> tuple[int, float]:
    """(e*, s_e*) among the ``candidates`` epochs of ``history`` (module docstring)."""
    scored = [(score, record["epoch"]) for record in history
              if record["epoch"] in candidates and (score := epoch_score(record, selection)) is not None]
    if not scored:
        known = ", ".join(sorted(next((r.get("cpe", {}) for r in reversed(history) if r.get("cpe")), {})))
        raise BatchRLError(f"checkpoint_selection: no kept checkpoint has a finite {selection.estimator} "
                           f"{selection.statistic}", where=where,
                           fix=f"choose an estimator the eval table gives ({known or 'none'}) and keep "
                           "checkpoints (checkpoint_every, keep_checkpoints)")
    score, epoch = max(scored)
    return epoch, score
