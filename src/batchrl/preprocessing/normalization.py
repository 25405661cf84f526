"""Normalization parameters per feature (spec section 4) and their ReAgent-compatible JSON.

A :data:`Normalization` is an ordered mapping ``feature_id -> NormalizationParameters`` (ascending ids).
On disk it is ReAgent's format: a JSON object keyed by the feature id as a string whose values are
JSON-*encoded strings* of the nine fields::

    {"0": "{\\"feature_type\\": \\"CONTINUOUS\\", \\"mean\\": 0.5, \\"stddev\\": 1.0, ...}"}

Reading also accepts plain nested objects (``{"0": {"feature_type": ...}}``).
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from batchrl import storage
from batchrl.errors import BatchRLError


class FeatureType(StrEnum):
    """Feature types of spec sections 4 and 5 (ReAgent's names)."""

    BINARY = "BINARY"
    PROBABILITY = "PROBABILITY"
    CONTINUOUS = "CONTINUOUS"
    BOXCOX = "BOXCOX"
    ENUM = "ENUM"
    QUANTILE = "QUANTILE"
    CONTINUOUS_ACTION = "CONTINUOUS_ACTION"
    DISCRETE_ACTION = "DISCRETE_ACTION"
    DO_NOT_PREPROCESS = "DO_NOT_PREPROCESS"
    CLIP_LOG = "CLIP_LOG"


#: Fields every parameters object has, in ReAgent's order (the JSON keys).
FIELDS = ("feature_type", "boxcox_lambda", "boxcox_shift", "mean", "stddev", "possible_values",
          "quantiles", "min_value", "max_value")

_REQUIRED: dict[FeatureType, tuple[str, ...]] = {
    FeatureType.CONTINUOUS: ("mean", "stddev"),
    FeatureType.BOXCOX: ("boxcox_lambda", "boxcox_shift", "mean", "stddev"),
    FeatureType.ENUM: ("possible_values",),
    FeatureType.QUANTILE: ("quantiles",),
    FeatureType.CONTINUOUS_ACTION: ("min_value", "max_value"),
}


class NormalizationParameters(BaseModel):
    """How one feature is normalized: its type and the parameters that type needs.

    CONTINUOUS needs mean and stddev (> 0); BOXCOX also boxcox_lambda and boxcox_shift; ENUM needs
    possible_values; QUANTILE needs at least two non-decreasing quantiles; CONTINUOUS_ACTION needs
    min_value <= max_value. Other fields are optional and kept for information.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature_type: FeatureType
    boxcox_lambda: float | None = None
    boxcox_shift: float | None = None
    mean: float | None = None
    stddev: float | None = None
    possible_values: tuple[float, ...] | None = None
    quantiles: tuple[float, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None

    @model_validator(mode="after")
    def _check(self) -> NormalizationParameters:
        missing = [name for name in _REQUIRED.get(self.feature_type, ()) if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{self.feature_type.value} needs {', '.join(missing)}")
        for name in FIELDS[1:]:
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,)
            if any(v is not None and not math.isfinite(v) for v in values):
                raise ValueError(f"{name} must be finite, got {value}")
        if self.stddev is not None and self.stddev <= 0 and self.feature_type in (
                FeatureType.CONTINUOUS, FeatureType.BOXCOX):
            raise ValueError(f"stddev must be > 0, got {self.stddev}")
        if self.feature_type == FeatureType.ENUM and not self.possible_values:
            raise ValueError("ENUM needs at least one possible value")
        if self.feature_type == FeatureType.QUANTILE:
            q = self.quantiles or ()
            if len(q) < 2 or any(b < a for a, b in zip(q, q[1:], strict=False)):
                raise ValueError("QUANTILE needs at least two non-decreasing quantiles")
        if (self.feature_type == FeatureType.CONTINUOUS_ACTION and self.min_value is not None
                and self.max_value is not None and self.min_value > self.max_value):
            raise ValueError(f"min_value {self.min_value} > max_value {self.max_value}")
        return self

    def required(self, name: str) -> float:
        """The float field ``name`` (one of mean, stddev, boxcox_lambda, boxcox_shift, min_value,
        max_value), which this feature's type requires, so the validator has checked it is set."""
        value = getattr(self, name)
        if not isinstance(value, float):
            raise ValueError(f"{self.feature_type.value} parameters have no {name}")
        return value

    def required_values(self, name: str) -> tuple[float, ...]:
        """The sequence field ``name`` (possible_values or quantiles) that this feature's type requires."""
        value = getattr(self, name)
        if not isinstance(value, tuple):
            raise ValueError(f"{self.feature_type.value} parameters have no {name}")
        return value

    def to_dict(self) -> dict[str, Any]:
        """All nine fields (None for unset), lists for sequences: ReAgent's object."""
        out: dict[str, Any] = {}
        for name in FIELDS:
            value = getattr(self, name)
            out[name] = value.value if name == "feature_type" else list(value) if isinstance(value, tuple) else value
        return out


#: feature id -> parameters, ascending by id.
Normalization = dict[int, NormalizationParameters]


def sorted_normalization(normalization: dict[int, NormalizationParameters]) -> Normalization:
    """The same mapping ordered by ascending feature id."""
    return {int(k): normalization[k] for k in sorted(normalization, key=int)}


def to_json_dict(normalization: Normalization, double_encoded: bool = True) -> dict[str, Any]:
    """The JSON object for ``normalization``: ReAgent's double-encoded form, or plain nested objects."""
    out: dict[str, Any] = {}
    for feature_id, params in sorted_normalization(normalization).items():
        obj = params.to_dict()
        out[str(feature_id)] = json.dumps(obj, sort_keys=False) if double_encoded else obj
    return out


def from_json_dict(obj: Any, where: str = "normalization") -> Normalization:
    """Parse a normalization JSON object (double-encoded or nested); errors name the feature."""
    if not isinstance(obj, dict):
        raise BatchRLError(f"a normalization must be a JSON object keyed by feature id, got {type(obj).__name__}",
                           where=where, fix="pass the JSON written by `batchrl normalize`")
    out: dict[int, NormalizationParameters] = {}
    for key, value in obj.items():
        try:
            feature_id = int(key)
        except (TypeError, ValueError):
            raise BatchRLError(f"feature id '{key}' is not an integer", where=where,
                               fix="key every entry by its integer feature id") from None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise BatchRLError(f"feature {feature_id}: its parameters are not valid JSON ({exc.msg})",
                                   where=where, fix="regenerate the file with `batchrl normalize`") from None
        if not isinstance(value, dict):
            raise BatchRLError(f"feature {feature_id}: parameters must be an object, got {type(value).__name__}",
                               where=where, fix="regenerate the file with `batchrl normalize`")
        try:
            out[feature_id] = NormalizationParameters(**value)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'parameters'}: {err['msg']}" for err in exc.errors())
            raise BatchRLError(f"feature {feature_id}: invalid normalization parameters: {problems}",
                               where=where, fix="correct the entry or regenerate it with `batchrl normalize`"
                               ) from None
    return sorted_normalization(out)


def read_normalization(uri: str) -> Normalization:
    """Read a normalization JSON (ReAgent double-encoded or plain nested) from a path or URI."""
    return from_json_dict(storage.read_json(uri), where=uri)


def write_normalization(uri: str, normalization: Normalization) -> None:
    """Write ``normalization`` in ReAgent's double-encoded form (one whole-file write)."""
    text = json.dumps(to_json_dict(normalization, double_encoded=True), indent=2)  # ascending ids
    storage.write_bytes(uri, (text + "\n").encode())
