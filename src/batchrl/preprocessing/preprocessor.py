"""The Preprocessor: dense feature values -> normalized network input (spec section 5).

One torch module serves training and serving (it scripts with TorchScript and is embedded in the
exported policy). Input: ``values`` and ``presence``, both float32 ``[B, F]``, column ``j`` holding
feature ``feature_ids[j]`` (ascending ids, spec section 8). Output: float32 ``[B, D]`` in the same
feature order; each feature gives one column, except ENUM which gives one column per possible value
(one-hot), so ``D >= F``. Every parameter is looked up by feature id, never by type group, so
features of different types may interleave freely (ReAgent applied one feature's parameters to
another when they did).

Transforms of x (absent features -> 0; outputs clamped to [-11.513, 11.513] except
DO_NOT_PREPROCESS):

=================== =============================================================================
BINARY              0 if x == 0 else 1
PROBABILITY         logit(clamp(x, 1e-5, 1 - 1e-5))
CONTINUOUS          (x - mean) / stddev
BOXCOX              b = (max(x + shift, 1e-6) ** lambda - 1) / lambda (ln when lambda = 0);
                    (b - mean) / stddev
ENUM                one-hot over possible_values (an unknown value -> all zeros)
QUANTILE            piecewise-linear position of x among the n boundaries q_0..q_{n-1}:
                    sum_i clamp((x - q_i) / (q_{i+1} - q_i), 0, 1) / (n - 1), in [0, 1]
CONTINUOUS_ACTION   [min, max] -> (-1, 1): -1 + eps + (x - min) (2 - 2 eps) / (max - min), eps = 1e-6
DO_NOT_PREPROCESS,  identity
DISCRETE_ACTION
CLIP_LOG            ln(max(x, 1e-6))
=================== =============================================================================
"""

from typing import TYPE_CHECKING, Any

import torch

from batchrl.errors import BatchRLError
from batchrl.preprocessing.normalization import FeatureType, Normalization

#: Outputs are clamped to +-ln(1e5), ReAgent's bound.
MAX_FEATURE_VALUE = 11.513
PROBABILITY_EPS = 1e-5
BOXCOX_FLOOR = 1e-6
CLIP_LOG_FLOOR = 1e-6
ACTION_EPS = 1e-6
#: Below this |lambda| Box-Cox is the logarithm.
BOXCOX_LAMBDA_EPS = 1e-6

#: Integer codes of the feature types inside the module.
TYPE_CODES = {t: i for i, t in enumerate(FeatureType)}
_BINARY = TYPE_CODES[FeatureType.BINARY]
_PROBABILITY = TYPE_CODES[FeatureType.PROBABILITY]
_CONTINUOUS = TYPE_CODES[FeatureType.CONTINUOUS]
_BOXCOX = TYPE_CODES[FeatureType.BOXCOX]
_QUANTILE = TYPE_CODES[FeatureType.QUANTILE]
_CONTINUOUS_ACTION = TYPE_CODES[FeatureType.CONTINUOUS_ACTION]
_DO_NOT_PREPROCESS = TYPE_CODES[FeatureType.DO_NOT_PREPROCESS]
_CLIP_LOG = TYPE_CODES[FeatureType.CLIP_LOG]


class Preprocessor(torch.nn.Module):
    """Normalize ``(values, presence)`` of features ``feature_ids`` with their parameters.

    Args:
        normalization: parameters per feature id (it may hold more features than used).
        feature_ids: the input columns' feature ids, strictly ascending (default: all of
            ``normalization``'s ids).
    Attributes:
        output_dim: D, the number of output columns.
        output_feature_ids: the feature id of each output column (repeated for ENUM one-hots).
    """

    # (no `from __future__ import annotations` here: TorchScript reads these class annotations)
    feature_ids: list[int]
    output_feature_ids: list[int]
    output_dim: int
    num_features: int
    num_quantile: int
    num_enum: int
    binary_code: int
    probability_code: int
    continuous_code: int
    boxcox_code: int
    continuous_action_code: int
    do_not_preprocess_code: int
    clip_log_code: int
    max_value: float
    has_binary: bool
    has_probability: bool
    has_standardized: bool
    has_boxcox: bool
    has_continuous_action: bool
    has_clip_log: bool
    has_do_not_preprocess: bool
    probability_eps: float
    boxcox_floor: float
    boxcox_lambda_eps: float
    clip_log_floor: float
    action_eps: float
    if TYPE_CHECKING:  # buffers (register_buffer), declared for the type checker only: TorchScript
        # infers their types from the registered tensors
        type_codes: torch.Tensor
        mean: torch.Tensor
        stddev: torch.Tensor
        boxcox_lambda: torch.Tensor
        boxcox_shift: torch.Tensor
        action_min: torch.Tensor
        action_scale: torch.Tensor
        quantile_columns: torch.Tensor
        quantile_lower: torch.Tensor
        quantile_span: torch.Tensor
        quantile_weight: torch.Tensor
        enum_columns: torch.Tensor
        enum_values: torch.Tensor
        output_index: torch.Tensor

    def __init__(self, normalization: Normalization, feature_ids: list[int] | None = None):
        super().__init__()
        ids = sorted(int(i) for i in normalization) if feature_ids is None else [int(i) for i in feature_ids]
        if not ids:
            raise BatchRLError("the preprocessor needs at least one feature", fix="check the feature ids")
        if any(b <= a for a, b in zip(ids, ids[1:], strict=False)):
            raise BatchRLError(f"feature ids must be strictly ascending, got {ids}",
                               fix="order the feature columns by ascending feature id (spec section 8)")
        missing = [i for i in ids if i not in normalization]
        if missing:
            raise BatchRLError(f"no normalization parameters for feature ids {missing}",
                               fix="run `batchrl normalize` on data that has these features, or drop them")
        params = [normalization[i] for i in ids]
        n = len(ids)
        f32 = torch.float32
        for name, values in _elementwise(params).items():
            self.register_buffer(name, torch.tensor(values, dtype=torch.long if name == "type_codes" else f32))
        q_cols, lower, span, weight = _quantile_intervals(params)
        self.register_buffer("quantile_columns", torch.tensor(q_cols, dtype=torch.long))
        self.register_buffer("quantile_lower", lower)
        self.register_buffer("quantile_span", span)
        self.register_buffer("quantile_weight", weight)
        e_cols, e_vals, gather, out_ids = _enum_outputs(params, ids)
        self.register_buffer("enum_columns", torch.tensor(e_cols, dtype=torch.long))
        self.register_buffer("enum_values", torch.tensor(e_vals, dtype=f32))
        self.register_buffer("output_index", torch.tensor(gather, dtype=torch.long))

        self.feature_ids = ids
        self.output_feature_ids = out_ids
        self.output_dim = len(gather)
        self.num_features = n
        self.num_quantile = len(q_cols)
        self.num_enum = len(e_cols)
        self.binary_code = _BINARY
        self.probability_code = _PROBABILITY
        self.continuous_code = _CONTINUOUS
        self.boxcox_code = _BOXCOX
        self.continuous_action_code = _CONTINUOUS_ACTION
        self.do_not_preprocess_code = _DO_NOT_PREPROCESS
        self.clip_log_code = _CLIP_LOG
        self.max_value = MAX_FEATURE_VALUE
        present_types = {p.feature_type for p in params}
        self.has_binary = FeatureType.BINARY in present_types
        self.has_probability = FeatureType.PROBABILITY in present_types
        self.has_standardized = bool(present_types & {FeatureType.CONTINUOUS, FeatureType.BOXCOX})
        self.has_boxcox = FeatureType.BOXCOX in present_types
        self.has_continuous_action = FeatureType.CONTINUOUS_ACTION in present_types
        self.has_clip_log = FeatureType.CLIP_LOG in present_types
        self.has_do_not_preprocess = FeatureType.DO_NOT_PREPROCESS in present_types
        self.probability_eps = PROBABILITY_EPS
        self.boxcox_floor = BOXCOX_FLOOR
        self.boxcox_lambda_eps = BOXCOX_LAMBDA_EPS
        self.clip_log_floor = CLIP_LOG_FLOOR
        self.action_eps = ACTION_EPS

    def forward(self, values: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        if values.dim() != 2 or values.size(1) != self.num_features:
            raise ValueError(f"expected values of shape [B, {self.num_features}], got {list(values.shape)}")
        if presence.shape != values.shape:
            raise ValueError(f"presence shape {list(presence.shape)} != values shape {list(values.shape)}")
        x = values.to(torch.float32)
        present = presence != 0
        codes = self.type_codes.unsqueeze(0)

        # each transform runs only when a feature of its type is present (fewer ops at serving time)
        out = x  # identity: DO_NOT_PREPROCESS, DISCRETE_ACTION (and ENUM's unused slot)
        if self.has_binary:
            out = torch.where(codes == self.binary_code, (x != 0).to(torch.float32), out)
        if self.has_probability:
            p = torch.clamp(x, self.probability_eps, 1.0 - self.probability_eps)
            out = torch.where(codes == self.probability_code, torch.log(p) - torch.log1p(-p), out)
        if self.has_standardized:
            base = x
            if self.has_boxcox:
                y = torch.clamp(x + self.boxcox_shift, min=self.boxcox_floor)
                lam = self.boxcox_lambda
                small = lam.abs() < self.boxcox_lambda_eps
                safe_lam = torch.where(small, torch.ones_like(lam), lam)
                boxcox = torch.where(small, torch.log(y), (torch.pow(y, safe_lam) - 1.0) / safe_lam)
                base = torch.where(codes == self.boxcox_code, boxcox, x)
            standardized = (base - self.mean) / self.stddev
            is_standardized = (codes == self.continuous_code) | (codes == self.boxcox_code)
            out = torch.where(is_standardized, standardized, out)
        if self.has_continuous_action:
            action = (x - self.action_min) * self.action_scale + (self.action_eps - 1.0)
            out = torch.where(codes == self.continuous_action_code, action, out)
        if self.has_clip_log:
            clip_log = torch.log(torch.clamp(x, min=self.clip_log_floor))
            out = torch.where(codes == self.clip_log_code, clip_log, out)
        if self.num_quantile > 0:
            xq = x.index_select(1, self.quantile_columns).unsqueeze(2)
            ramps = torch.clamp((xq - self.quantile_lower) / self.quantile_span, 0.0, 1.0)
            position = (ramps * self.quantile_weight).sum(dim=2)
            out = out.index_copy(1, self.quantile_columns, position)
        clamped = torch.clamp(out, -self.max_value, self.max_value)
        if self.has_do_not_preprocess:
            clamped = torch.where(codes == self.do_not_preprocess_code, out, clamped)
        out = torch.where(present, clamped, torch.zeros_like(clamped))
        if self.num_enum == 0:
            return out
        xe = x.index_select(1, self.enum_columns)
        pe = present.index_select(1, self.enum_columns)
        one_hot = ((xe == self.enum_values) & pe).to(torch.float32)
        out = torch.cat([out, one_hot], dim=1)
        return out.index_select(1, self.output_index)


def _elementwise(params: list[Any]) -> dict[str, list[float]]:
    """Per input column: its type code, and the standardization (mean, stddev), Box-Cox (lambda, shift) and
    action scaling (min, scale) parameters, neutral where the type does not use them."""
    out: dict[str, list[float]] = {name: [] for name in ("type_codes", "mean", "stddev", "boxcox_lambda",
                                                          "boxcox_shift", "action_min", "action_scale")}
    for p in params:
        standardized = p.feature_type in (FeatureType.CONTINUOUS, FeatureType.BOXCOX)
        is_boxcox = p.feature_type == FeatureType.BOXCOX
        is_action = p.feature_type == FeatureType.CONTINUOUS_ACTION
        out["type_codes"].append(TYPE_CODES[p.feature_type])
        out["mean"].append(p.mean if standardized else 0.0)
        out["stddev"].append(p.stddev if standardized else 1.0)
        out["boxcox_lambda"].append(p.boxcox_lambda if is_boxcox else 1.0)
        out["boxcox_shift"].append(p.boxcox_shift if is_boxcox else 0.0)
        out["action_min"].append(p.required("min_value") if is_action else 0.0)
        out["action_scale"].append((2.0 - 2.0 * ACTION_EPS) / max(p.required("max_value") - p.required("min_value"),
                                                                   1e-6) if is_action else 1.0)
    return out


def _quantile_intervals(params: list[Any]) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]:
    """QUANTILE columns and, per column, its intervals [q_i, q_{i+1}] (lower end, span, weight 1/k) padded
    to the longest list."""
    q_cols = [j for j, p in enumerate(params) if p.feature_type == FeatureType.QUANTILE]
    width = max((len(params[j].required_values("quantiles")) - 1 for j in q_cols), default=1)
    lower = torch.zeros(len(q_cols), width)
    span = torch.ones(len(q_cols), width)
    weight = torch.zeros(len(q_cols), width)
    for row, j in enumerate(q_cols):
        q = torch.tensor(params[j].required_values("quantiles"), dtype=torch.float64)
        k = len(q) - 1
        lower[row, :k] = q[:-1].float()
        span[row, :k] = torch.clamp(q[1:] - q[:-1], min=1e-12).float()
        weight[row, :k] = 1.0 / k
    return q_cols, lower, span, weight


def _enum_outputs(params: list[Any], ids: list[int]) -> tuple[list[int], list[float], list[int], list[int]]:
    """ENUM one-hots, one (column, value) pair per output; the gather index of every output (inputs first,
    then the one-hots) and the feature id each output comes from."""
    n = len(ids)
    e_cols: list[int] = []
    e_vals: list[float] = []
    gather: list[int] = []
    out_ids: list[int] = []
    for j, p in enumerate(params):
        if p.feature_type == FeatureType.ENUM:
            for v in p.required_values("possible_values"):
                gather.append(n + len(e_cols))
                e_cols.append(j)
                e_vals.append(float(v))
                out_ids.append(ids[j])
        else:
            gather.append(j)
            out_ids.append(ids[j])
    return e_cols, e_vals, gather, out_ids
