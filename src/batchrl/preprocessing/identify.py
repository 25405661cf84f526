"""Identify a feature's normalization type and parameters from a sample of its values (spec section 4).

Types are tried in order:

1. BINARY if every value is 0 or 1, or the feature is constant;
2. PROBABILITY if every value is in [0, 1];
3. ENUM if min >= 0, every value is integral and there are at most ``max_unique_enum_values``
   distinct values;
4. else CONTINUOUS, refined:

   - range < 1e-4: a no-op CONTINUOUS (mean 0, stddev 1);
   - Box-Cox (Box & Cox 1964): shift = -min, lambda = the maximum-likelihood lambda of
     boxcox(max(x + shift, 1e-4)); kept (type BOXCOX) when lambda is outside [0.9, 1.1] and
     K2(x) > 10 K2(boxcox(x)) and K2(boxcox(x)) <= 1000 and the transformed stddev is finite and
     < 1e8, with K2 the D'Agostino-Pearson omnibus normality statistic (D'Agostino 1971, Pearson 1973);
   - QUANTILE (unless skipped) when Box-Cox was not kept and K2(x) > ``quantile_k2_threshold``:
     boundaries at the 0, 1/q, ..., 1 quantiles (q = ``quantile_size``), deduplicated;
   - mean and stddev (population, ddof 0) of the values, Box-Cox-transformed for BOXCOX. The stddev is
     floored at ``stddev_floor`` (default 1e-6; ReAgent used 1.0, which left small-range features such
     as CartPole's velocities unscaled).

Every type can also be forced by an override.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import TypedDict

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from batchrl.errors import BatchRLError
from batchrl.preprocessing.normalization import FeatureType, NormalizationParameters

log = logging.getLogger(__name__)

#: Fewer samples than this and a feature is not identified.
MIN_SAMPLES = 20
#: Below this range a CONTINUOUS feature is left as is (mean 0, stddev 1).
MIN_RANGE = 1e-4
#: Box-Cox is fitted on max(x + shift, BOXCOX_MARGIN).
BOXCOX_MARGIN = 1e-4
MAX_BOXCOX_K2 = 1000.0
MAX_BOXCOX_STDDEV = 1e8


class IdentifyOptions(BaseModel):
    """How types and parameters are identified from samples (ReAgent's names and defaults)."""

    model_config = ConfigDict(extra="forbid")

    max_unique_enum_values: int = Field(default=10, ge=1)
    quantile_size: int = Field(default=20, ge=1)
    quantile_k2_threshold: float = Field(default=1000.0, ge=0.0)
    skip_box_cox: bool = False
    #: ReAgent's workflow default: quantile normalization is not used.
    skip_quantiles: bool = True
    #: Floor of every identified stddev; 1.0 reproduces ReAgent.
    stddev_floor: float = Field(default=1e-6, gt=0.0)


class NotIdentified(Exception):
    """A feature has too few samples to be identified (the caller decides whether that is an error)."""


def _k2(values: np.ndarray) -> float:
    """D'Agostino-Pearson K2 statistic (NaN when undefined, e.g. for constant data)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return float(stats.normaltest(values).statistic)


def identify_type(values: np.ndarray, max_unique_enum_values: int = 10) -> FeatureType:
    """BINARY, PROBABILITY, ENUM or CONTINUOUS by the rules of spec section 4 (finite values)."""
    low, high = float(values.min()), float(values.max())
    if low == high or bool(np.all((values == 0) | (values == 1))):
        return FeatureType.BINARY
    if low >= 0.0 and high <= 1.0:
        return FeatureType.PROBABILITY
    if low >= 0.0 and bool(np.all(np.floor(values) == values)):
        if len(np.unique(values)) <= max_unique_enum_values:
            return FeatureType.ENUM
    return FeatureType.CONTINUOUS


def _std(values: np.ndarray, floor: float) -> float:
    return max(float(np.std(values)), floor)


def _boxcox_fit(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(transformed values, lambda, shift) of the maximum-likelihood Box-Cox fit with shift = -min."""
    shift = -float(values.min())
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        transformed, lam = stats.boxcox(np.maximum(values + shift, BOXCOX_MARGIN))
    return np.asarray(transformed, dtype=np.float64), float(lam), shift


class _Bounds(TypedDict):
    """The observed range of a feature, recorded with every parameters object."""

    min_value: float
    max_value: float


def _quantiles(values: np.ndarray, size: int) -> list[float]:
    return [float(q) for q in np.unique(np.quantile(values, np.linspace(0.0, 1.0, size + 1)))]


def _continuous(values: np.ndarray, options: IdentifyOptions, forced: FeatureType | None,
                bounds: _Bounds) -> NormalizationParameters:
    """CONTINUOUS, BOXCOX or QUANTILE parameters (``forced`` one of those, or None to choose)."""
    if forced is None and bounds["max_value"] - bounds["min_value"] < MIN_RANGE:
        return NormalizationParameters(feature_type=FeatureType.CONTINUOUS, mean=0.0, stddev=1.0, **bounds)
    if forced == FeatureType.CONTINUOUS:
        return NormalizationParameters(feature_type=FeatureType.CONTINUOUS, mean=float(np.mean(values)),
                                       stddev=_std(values, options.stddev_floor), **bounds)
    k2_original = _k2(values)
    if forced == FeatureType.BOXCOX or (forced is None and not options.skip_box_cox):
        transformed, lam, shift = _boxcox_fit(values)
        k2_transformed = _k2(transformed)
        spread = float(np.std(transformed))
        keep = (not 0.9 <= lam <= 1.1 and k2_original > 10.0 * k2_transformed
                and k2_transformed <= MAX_BOXCOX_K2 and math.isfinite(spread) and spread < MAX_BOXCOX_STDDEV)
        if forced == FeatureType.BOXCOX or keep:
            if not (math.isfinite(spread) and math.isfinite(lam)):
                raise ValueError(f"the Box-Cox transform is not finite (lambda {lam}, stddev {spread})")
            return NormalizationParameters(
                feature_type=FeatureType.BOXCOX, boxcox_lambda=lam, boxcox_shift=shift,
                mean=float(np.mean(transformed)), stddev=_std(transformed, options.stddev_floor), **bounds)
    use_quantiles = forced == FeatureType.QUANTILE or (
        forced is None and not options.skip_quantiles and k2_original > options.quantile_k2_threshold)
    if use_quantiles:
        quantiles = _quantiles(values, options.quantile_size)
        if len(quantiles) < 2:
            raise ValueError("QUANTILE needs at least two distinct values")
        return NormalizationParameters(feature_type=FeatureType.QUANTILE, quantiles=tuple(quantiles),
                                       mean=float(np.mean(values)), stddev=_std(values, options.stddev_floor),
                                       **bounds)
    return NormalizationParameters(feature_type=FeatureType.CONTINUOUS, mean=float(np.mean(values)),
                                   stddev=_std(values, options.stddev_floor), **bounds)


def identify_feature(values: np.ndarray, options: IdentifyOptions | None = None,
                     feature_type: FeatureType | str | None = None,
                     feature: str = "feature") -> NormalizationParameters:
    """Normalization parameters for one feature from a sample of its values.

    Args:
        values: 1-D sample of the feature's values.
        options: identification options (defaults: ReAgent's).
        feature_type: force this type (an override) instead of identifying it.
        feature: the feature's name in messages, e.g. "state_features feature 3".
    Raises:
        BatchRLError: values contain NaN or infinity, or a forced type does not fit the values.
        NotIdentified: fewer than :data:`MIN_SAMPLES` values.
    """
    options = options or IdentifyOptions()
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) < MIN_SAMPLES:
        raise NotIdentified(f"{feature} has {len(values)} samples, fewer than {MIN_SAMPLES}")
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise BatchRLError(f"{feature} has {bad} NaN or infinite values among {len(values)} samples",
                           fix="clean the data (replace or drop non-finite values) before normalization")
    forced = FeatureType(feature_type) if feature_type is not None else None
    bounds: _Bounds = {"min_value": float(values.min()), "max_value": float(values.max())}
    kind = forced or identify_type(values, options.max_unique_enum_values)
    try:
        if kind in (FeatureType.CONTINUOUS, FeatureType.BOXCOX, FeatureType.QUANTILE):
            return _continuous(values, options, forced, bounds)
        if kind == FeatureType.ENUM:
            possible = [float(v) for v in np.unique(values)]
            if forced is not None and len(possible) > options.max_unique_enum_values:
                log.warning("%s: forced ENUM has %d distinct values (one-hot columns)", feature, len(possible))
            return NormalizationParameters(feature_type=kind, possible_values=tuple(possible), **bounds)
        return NormalizationParameters(feature_type=kind, **bounds)
    except ValueError as exc:
        raise BatchRLError(f"{feature}: cannot normalize as {kind.value}: {exc}",
                           fix="remove the type override for this feature or check its values") from None
