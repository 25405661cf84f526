"""Shared machinery of the estimators: the value of per-unit terms and a seeded bootstrap interval.

Every estimator reduces to a *statistic of resampling multiplicities*: given ``counts[b, i]`` (how
often unit ``i`` -- an eval row or an episode -- appears in replicate ``b``), it returns the estimate
on each replicate. The point estimate is the statistic at ``counts = 1``. The 95% interval depends on
the kind of estimator (:func:`estimate` decides, in one place):

- a *plain mean* of per-unit terms x_i (one column, no denominator: DM, IPS, DR, Switch, SwitchDR,
  SDR, FQE) gets the Student-t interval  x_bar +- t_{n-1, 0.975} s / sqrt(n),  s^2 = sum_i (x_i -
  x_bar)^2 / (n - 1); its ratio to the logging policy's value b_bar (per-unit terms b_i) gets the
  delta-method interval  R +- t_{n-1, 0.975} s_z / sqrt(n)  with R = x_bar / b_bar and the linearized
  terms z_i = (x_i - R b_i) / b_bar. On importance-weighted terms the percentile bootstrap covered
  less: on the 5-action bandit with peaked softmax logging (effective sample size about 40 of 2,000),
  200 datasets, DR's 95% interval held the truth 91% of the time as a t-interval and 85% as a
  percentile interval (benchmarks/cpe_accuracy.py);
- every other estimator (self-normalized ones: SNIPS, WDR; MAGIC) gets the percentile interval over
  ``B`` bootstrap replicates of size ``n`` (Efron & Tibshirani, *An Introduction to the Bootstrap*,
  1993, ch. 13), so the ratio is recomputed on every replicate and the interval stays within the range
  a self-normalized estimate can take (SNIPS: 89% against 84% for a delta-method interval on the same
  datasets). Normalized values are paired: the estimate and the logging policy's value are computed on
  the same replicate before dividing;
- weighted DR (``hull_with_delta``) gets the hull of that percentile interval and the delta-method
  t-interval on its linearized per-episode terms (:func:`linearized_terms`): on CartPole logs with
  vanishing cumulative weights neither held 90% alone in all six setups of
  ``benchmarks/cpe_interval_methods.py --setup cartpole`` (100 datasets each: percentile 85-90%,
  t 66-94%, each short where the other held), the hull held 88-94% in five for 4-11% more width, and
  85% in the sixth, where every cumulative weight vanishes (median effective sample size 0: the estimate
  is the value model's start value, whose bias no resampling of episodes sees; the diagnostics flag it);
  studentized and BCa bootstraps did worse (72-91%).

No interval sees what the logged units do not contain: where the importance weights are heavy-tailed,
a dataset that missed the rare large weights has an estimate and a spread that are both too small
(its mean weight is then well below 1, which :mod:`.diagnostics` flags once the gap exceeds 4 of its
standard errors). Measured: ``benchmarks/cpe_interval_methods.py`` and ``benchmarks/cpe_accuracy.py``. A ratio is only meaningful when the logging policy's
value (the baseline) is clearly positive: with a negative baseline "normalized > 1" would mean *worse*,
and a baseline near zero makes the ratio explode. :func:`baseline_problem` says when; the normalized
values are then NaN and the estimate carries the reason.

Most estimators are :class:`Terms`: ``value = sum_k (sum_i c_i num[i, k]) / (sum_i c_i den[i, k])``.
A plain mean has one column and ``den = 1``; SNIPS has ``den = w``; weighted DR has one column per
time step. Estimators that are not ratios of sums (MAGIC) implement :class:`Statistic` directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from scipy import stats
from torch import Tensor

#: Probability mass outside the reported interval (a 95% interval).
ALPHA = 0.05
#: The baseline must exceed this many of its bootstrap standard errors to normalize by it.
BASELINE_MIN_STANDARD_ERRORS = 2.0
#: ... and this share of the mean absolute per-unit logged value (a "tiny" baseline otherwise).
BASELINE_MIN_SHARE = 0.01


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread, then restore the previous setting.

    The estimators work on small tensors where extra threads only add synchronization; on a shared,
    loaded machine torch's spinning workers made them 20-100x slower (measured: a [100, 4000] @
    [4000, 2] product took 0.7 ms on one thread and 25-40 ms on two while other jobs ran).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Statistic(Protocol):
    """An estimator as a function of resampling multiplicities."""

    @property
    def units(self) -> int:
        """Number of resampling units n (rows or episodes)."""
        ...

    def value(self, counts: Tensor) -> Tensor:
        """Estimates for multiplicities ``counts`` [B, n] (float64); returns [B]."""
        ...


@dataclass(frozen=True)
class Terms:
    """Per-unit terms of a ratio-of-sums estimator.

    Args:
        numerator: [n, k] float64, unit i's contribution to column k's numerator.
        denominator: [n, k] float64 or None (= 1 for every unit: a plain mean per column).
    """

    numerator: Tensor
    denominator: Tensor | None = None

    @staticmethod
    def mean_of(per_unit: Tensor) -> Terms:
        """Terms whose value is the plain mean of ``per_unit`` [n]."""
        return Terms(per_unit.to(torch.float64).reshape(-1, 1))

    @property
    def units(self) -> int:
        return int(self.numerator.shape[0])

    def value(self, counts: Tensor, absolute: bool = False) -> Tensor:
        """The estimate on each replicate; ``absolute``: of |numerator| (the size of the terms)."""
        num = counts @ (self.numerator.abs() if absolute else self.numerator)
        den = counts.sum(dim=1, keepdim=True) if self.denominator is None else counts @ self.denominator
        return _safe_ratio(num, den).sum(dim=1)


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den with 0 where the denominator is 0 (no weight on that column in this replicate)."""
    return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(num))


@dataclass(frozen=True)
class Estimate:
    """An estimate, its ratio to the logging policy's value, and 95% bootstrap intervals of both.

    ``baseline`` is the logging policy's value on the same units, ``baseline_std_error`` its bootstrap
    standard error, ``normalization`` None when the ratio is meaningful, else the reason it is not
    (then the normalized values are NaN).
    """

    raw: float
    normalized: float
    ci_low: float
    ci_high: float
    normalized_ci_low: float
    normalized_ci_high: float
    std_error: float
    units: int
    baseline: float = float("nan")
    baseline_std_error: float = float("nan")
    normalization: str | None = None

    def as_dict(self) -> dict[str, float]:
        return {
            "raw": self.raw,
            "normalized": self.normalized,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "normalized_ci_low": self.normalized_ci_low,
            "normalized_ci_high": self.normalized_ci_high,
            "std_error": self.std_error,
            "units": float(self.units),
        }


def baseline_problem(base: float, base_std_error: float, scale: float) -> str | None:
    """Why dividing by the logging policy's value ``base`` would mislead, or None if it is fine.

    ``base_std_error``: its bootstrap standard error (NaN without a bootstrap); ``scale``: the mean
    absolute per-unit logged value (the size of the rewards being averaged).
    """
    if not base > 0:
        sign = "zero" if base == 0 else "negative" if base < 0 else "undefined"
        return (f"the logging policy's value is {sign} ({base:.4g}): a ratio to it does not rank policies "
                "(with a negative value, a ratio above 1 means worse); compare the raw values")
    if math.isfinite(base_std_error) and base < BASELINE_MIN_STANDARD_ERRORS * base_std_error:
        return (f"the logging policy's value ({base:.4g}) is within {BASELINE_MIN_STANDARD_ERRORS:g} standard "
                f"errors ({base_std_error:.2g}) of zero: the ratio to it is noise; compare the raw values")
    if base < BASELINE_MIN_SHARE * scale:
        return (f"the logging policy's value ({base:.4g}) is tiny next to the size of the logged values "
                f"({scale:.4g} on average): the ratio to it is unstable; compare the raw values")
    return None


def bootstrap_counts(n: int, replicates: int, seed: int) -> Tensor:
    """Multiplicities [replicates, n] of ``replicates`` resamples of size n drawn with replacement."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=replicates)
    return torch.from_numpy(counts.astype(np.float64))


def _percentiles(values: Tensor) -> tuple[float, float]:
    finite = values[torch.isfinite(values)]
    if finite.numel() == 0:
        return float("nan"), float("nan")
    q = torch.tensor([ALPHA / 2, 1 - ALPHA / 2], dtype=finite.dtype)
    low, high = torch.quantile(finite, q).tolist()
    return low, high


def linearized_terms(terms: Terms) -> Tensor:
    """Pseudo-values x_i = V + f_i [n] of a ratio-of-sums value V = sum_k V_k, V_k = sum_i num_ik / sum_i den_ik:
    f_i = sum_k (num_ik - V_k den_ik) / mean_i(den_ik) is unit i's first-order (delta-method) influence, so
    mean_i x_i = V and var(x) / n is the delta-method variance of V. Columns nobody weighs (sum den = 0)
    contribute nothing."""
    num = terms.numerator
    den = torch.ones_like(num) if terms.denominator is None else terms.denominator
    n = num.shape[0]
    mean_den = den.sum(dim=0) / n
    value_k = _safe_ratio(num.sum(dim=0), den.sum(dim=0))
    influence = _safe_ratio(num - value_k * den, mean_den.expand_as(num)).sum(dim=1)
    return influence + value_k.sum()


def is_plain_mean(statistic: Statistic) -> bool:
    """Whether ``statistic`` is the plain mean of one per-unit term (it then gets a t-interval)."""
    return isinstance(statistic, Terms) and statistic.denominator is None and statistic.numerator.shape[1] == 1


@dataclass(frozen=True)
class Pivots:
    """The (ALPHA/2, 1 - ALPHA/2) quantiles of a studentized estimate's error, (x_bar - v) / se, for the
    value (``raw``) and for its ratio to the baseline (``ratio``), where they are known better than from
    Student's t (IPS: :func:`.one_step.ips_design_pivots`)."""

    raw: tuple[float, float]
    ratio: tuple[float, float]


def t_interval(terms: Tensor, baseline_terms: Tensor, pivots: Pivots | None = None
               ) -> tuple[float, float, float, float, float, float]:
    """Student-t intervals of the mean of ``terms`` [n] and of its ratio to the mean of ``baseline_terms``
    [n] (delta method; see the module docstring). ``pivots``: the quantiles (q_lo, q_hi) of the
    studentized error to use instead of Student's (-t, +t); the interval is then x_bar - q_hi se ..
    x_bar - q_lo se (a bootstrap-t interval), and likewise for the ratio.
    Returns (low, high, std error, normalized low, normalized high, baseline std error); the normalized
    bounds are NaN where the baseline mean is 0."""
    x, b = terms.to(torch.float64), baseline_terms.to(torch.float64)
    n = x.shape[0]
    quantile = float(stats.t.ppf(1 - ALPHA / 2, n - 1))
    student = (-quantile, quantile)
    raw_q, ratio_q = (pivots.raw, pivots.ratio) if pivots is not None else (student, student)
    mean, base = float(x.mean()), float(b.mean())
    var_x = float(x.var())
    se = math.sqrt(var_x / n)
    base_se = float(b.std()) / math.sqrt(n)
    if base == 0:
        nlow = nhigh = float("nan")
    else:
        ratio = mean / base
        cov = float(((x - x.mean()) * (b - b.mean())).sum()) / (n - 1)
        ratio_var = max(var_x + ratio * ratio * float(b.var()) - 2 * ratio * cov, 0.0) / (base * base)
        ratio_se = math.sqrt(ratio_var / n)
        nlow, nhigh = ratio - ratio_q[1] * ratio_se, ratio - ratio_q[0] * ratio_se
    return mean - raw_q[1] * se, mean - raw_q[0] * se, se, nlow, nhigh, base_se


def estimate(statistic: Statistic, baseline: Statistic, replicates: int, seed: int,
             pivots: Pivots | None = None, hull_with_delta: bool = False) -> Estimate:
    """Point estimate, normalized value (``statistic / baseline``) and 95% intervals of both.

    Plain means get Student-t intervals (the normalized one by the delta method), every other statistic
    percentile intervals of a seeded bootstrap with ``replicates`` replicates (the module docstring says
    why); ``replicates <= 0`` gives no intervals. ``baseline`` is the logging policy's value on the same
    units (mean logged reward for one-step estimators, mean discounted logged episode return for
    sequential ones); normalized values are NaN when :func:`baseline_problem` finds it unusable.
    ``pivots`` (plain means only): the studentized error's quantiles to build the interval from instead of
    Student's (:func:`t_interval`). ``hull_with_delta`` (ratio-of-sums :class:`Terms` against a plain-mean
    baseline: weighted DR): widen the percentile intervals to contain the delta-method t-intervals of
    :func:`linearized_terms` (the module docstring says why).
    """
    n = statistic.units
    if baseline.units != n:
        raise ValueError(f"statistic has {n} units but the baseline has {baseline.units}")
    ones = torch.ones(1, n, dtype=torch.float64)
    raw = float(statistic.value(ones)[0])
    base = float(baseline.value(ones)[0])
    scale = float(baseline.value(ones, absolute=True)[0]) if isinstance(baseline, Terms) else abs(base)
    nan = float("nan")
    if replicates <= 0 or n < 2:
        problem = baseline_problem(base, nan, scale)
        normalized = raw / base if problem is None else nan
        return Estimate(raw, normalized, nan, nan, nan, nan, nan, n, base, nan, problem)
    if is_plain_mean(statistic) and is_plain_mean(baseline):
        assert isinstance(statistic, Terms) and isinstance(baseline, Terms)
        low, high, se, nlow, nhigh, base_se = t_interval(statistic.numerator[:, 0], baseline.numerator[:, 0],
                                                         pivots)
        problem = baseline_problem(base, base_se, scale)
        if problem is not None:
            return Estimate(raw, nan, low, high, nan, nan, se, n, base, base_se, problem)
        return Estimate(raw, raw / base, low, high, nlow, nhigh, se, n, base, base_se, None)
    if pivots is not None:
        raise ValueError("pivots apply to plain means (t-intervals) only")
    if hull_with_delta and not (isinstance(statistic, Terms) and is_plain_mean(baseline)):
        raise ValueError("hull_with_delta needs a ratio-of-sums statistic and a plain-mean baseline")
    counts = bootstrap_counts(n, replicates, seed)
    values = statistic.value(counts)
    bases = baseline.value(counts)
    base_se = float(bases.std())
    problem = baseline_problem(base, base_se, scale)
    low, high = _percentiles(values)
    if problem is None:
        ratios = torch.where(bases != 0, values / torch.where(bases != 0, bases, torch.ones_like(bases)),
                             torch.full_like(values, nan))
        normalized = raw / base
        nlow, nhigh = _percentiles(ratios)
    else:
        normalized = nlow = nhigh = nan
    if hull_with_delta:
        assert isinstance(statistic, Terms) and isinstance(baseline, Terms)
        t_low, t_high, _, t_nlow, t_nhigh, _ = t_interval(linearized_terms(statistic), baseline.numerator[:, 0])
        low, high = min(low, t_low), max(high, t_high)
        if problem is None:
            nlow, nhigh = min(nlow, t_nlow), max(nhigh, t_nhigh)
    return Estimate(raw, normalized, low, high, nlow, nhigh, float(values.std()), n, base, base_se, problem)
