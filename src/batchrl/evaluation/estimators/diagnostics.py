"""When not to trust an estimate: importance-weight diagnostics and plain-language warnings.

An importance-weighted estimate is an average in which each logged unit counts in proportion to its
weight. When a few units carry most of the weight the average rests on those few, whatever n is, and
its bootstrap interval is too narrow to notice (it resamples the same few). The numbers:

- effective sample size (Kish, *Survey Sampling*, 1965): ESS = (sum_i w_i)^2 / sum_i w_i^2, between 1
  (one unit carries everything) and n (equal weights); ``effective_sample_share`` = ESS / n;
- ``max_weight_share`` = max_i w_i / sum_i w_i;
- ``mean_weight`` = mean_i w_i, which is 1 in expectation when the logged propensities are right and
  the logging policy covers every action the target policy takes (E_mu[pi/mu] = sum_a pi(a) over
  the logged support); far from 1 means wrong propensities or missing support;
- for episodes the weight is the cumulative one at the episode's end, rho_T = prod_t w_t, and
  ``vanished_share`` is the share of episodes whose rho_T is below :data:`VANISHED_WEIGHT`: the target
  policy would (almost) never have produced them, so they count for nothing but the value model's part.

:func:`assess` turns the numbers into warnings; ``flags`` lists the ones that make an estimate
untrusted (``trusted`` is False), which the ``cpe`` publish gate refuses to pass on.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

#: Fewer effective samples than this: the estimate rests on a handful of units.
MIN_EFFECTIVE_SAMPLES = 30.0
#: One unit carrying more than this share of the total weight dominates the estimate.
MAX_WEIGHT_SHARE = 0.2
#: A cumulative weight below this has vanished.
VANISHED_WEIGHT = 1e-6
#: More than this share of episodes with a vanished weight: the logs barely contain the target's behaviour.
MAX_VANISHED_SHARE = 0.9
#: The mean weight may differ from 1 by this much (and 4 standard errors) before the propensities are doubted.
MEAN_WEIGHT_TOLERANCE = 0.1


def weight_diagnostics(weights: Tensor) -> dict[str, float]:
    """ESS, its share of n, the largest weight's share, the mean weight (and its standard error) and the
    share of zero weights of ``weights`` [n] (see the module docstring)."""
    w = weights.to(torch.float64)
    n = int(w.numel())
    total, squares = float(w.sum()), float((w * w).sum())
    ess = total * total / squares if squares > 0 else 0.0
    return {
        "effective_sample_size": ess,
        "effective_sample_share": ess / n if n else 0.0,
        "max_weight_share": float(w.max()) / total if total > 0 else float("nan"),
        "mean_weight": float(w.mean()) if n else float("nan"),
        "mean_weight_std_error": float(w.std()) / math.sqrt(n) if n > 1 else float("nan"),
        "zero_weight_share": float((w == 0).double().mean()) if n else float("nan"),
        "overflowed_weight_share": float(torch.isinf(w).double().mean()) if n else 0.0,
        "units": float(n),
    }


def episode_weight_diagnostics(final_weights: Tensor) -> dict[str, float]:
    """:func:`weight_diagnostics` of the episodes' final cumulative weights rho_T [n], plus the share of
    episodes whose weight vanished (below :data:`VANISHED_WEIGHT`)."""
    stats = weight_diagnostics(final_weights)
    stats["vanished_share"] = float((final_weights.to(torch.float64) < VANISHED_WEIGHT).double().mean())
    return stats


def assess(name: str, diagnostics: dict[str, Any], *, importance_weighted: bool, episode_length: int,
           one_step: bool, normalization: str | None = None) -> tuple[list[str], list[str]]:
    """Plain-language warnings about estimator ``name`` and the short codes of those that make it untrusted.

    Args:
        diagnostics: the estimator's diagnostics (weight statistics when ``importance_weighted``).
        importance_weighted: whether the estimate reweights logged units (False: DM, FQE).
        episode_length: the longest logged episode (rows).
        one_step: whether the estimator measures immediate reward only.
        normalization: the reason the normalized value is missing (:func:`core.baseline_problem`), if any.
    """
    warnings: list[str] = []
    flags: list[str] = []

    def flag(code: str, message: str) -> None:
        warnings.append(message)
        flags.append(code)

    if one_step and episode_length > 1:
        flag("one_step_on_episodes",
             f"{name} measures the immediate reward of one decision, but these logs have episodes of up to "
             f"{episode_length} steps: it says nothing about the return of the episode; use a sequential "
             "estimator (WDR, SDR)")
    if importance_weighted:
        ess, units = diagnostics["effective_sample_size"], diagnostics["units"]
        what = "decisions" if one_step else "episodes"
        if ess < MIN_EFFECTIVE_SAMPLES:
            flag("few_effective_samples",
                 f"the importance weights leave about {ess:.1f} effective {what} of {units:.0f}: the estimate "
                 f"rests on a handful of logged {what} and its interval is not reliable")
        share = diagnostics["max_weight_share"]
        if math.isfinite(share) and share > MAX_WEIGHT_SHARE:
            flag("dominant_weight", f"one logged unit carries {share:.0%} of the total importance weight")
        vanished = diagnostics.get("vanished_share")
        if vanished is not None and vanished > MAX_VANISHED_SHARE:
            flag("vanished_weights",
                 f"{vanished:.0%} of the episodes have a cumulative weight below {VANISHED_WEIGHT:g}: the target "
                 "policy would almost never have produced them, so the estimate leans on the few others and "
                 "on the value model")
        mean, se = diagnostics["mean_weight"], diagnostics["mean_weight_std_error"]
        if one_step and math.isfinite(se) and abs(mean - 1.0) > max(MEAN_WEIGHT_TOLERANCE, 4 * se):
            flag("mean_weight",
                 f"the importance weights average {mean:.3g} where right propensities give 1 (+- {se:.2g}): "
                 "the logged propensities look wrong, or the target policy takes actions the logging policy "
                 "never took")
        if diagnostics.get("overflowed_weight_share", 0.0) > 0:
            flag("overflowed_weights",
                 f"{diagnostics['overflowed_weight_share']:.0%} of the importance weights exceed the largest "
                 "floating-point number (long episodes of large per-step weights): the estimate is undefined; "
                 "the target policy is too far from the logging policy over these episodes")
        elif not math.isfinite(diagnostics["max_weight_share"]):
            flag("no_weight", "every importance weight is zero: the target policy never takes a logged action")
    if normalization is not None:
        warnings.append(f"no normalized value: {normalization}")
    return warnings, flags
