"""Building blocks of every config block: strict mappings, single-key choices, optimizers, networks,
the ``rl`` block, preprocessing options, and validation errors that name the bad key."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batchrl.errors import BatchRLError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _exactly_one(model: BaseModel, what: str) -> str:
    chosen = [name for name in type(model).model_fields if getattr(model, name) is not None]
    if len(chosen) != 1:
        options = ", ".join(type(model).model_fields)
        raise ValueError(f"{what} must name exactly one of {options} (got {chosen or 'none'})")
    return chosen[0]


# ---------------------------------------------------------------- optimizers


class CosineAnnealingLRParameters(_Strict):
    T_max: int = Field(ge=1)  # epochs of one half cosine, from lr down to eta_min
    eta_min: float = Field(default=0.0, ge=0)


class StepLRParameters(_Strict):
    step_size: int = Field(ge=1)  # epochs between decays
    gamma: float = Field(default=0.1, gt=0)


class ExponentialLRParameters(_Strict):
    gamma: float = Field(gt=0)


class LRSchedulerConfig(_Strict):
    """One learning-rate schedule, stepped after every epoch (ReAgent's ``lr_schedulers`` entries)."""

    CosineAnnealingLR: CosineAnnealingLRParameters | None = None
    StepLR: StepLRParameters | None = None
    ExponentialLR: ExponentialLRParameters | None = None

    @model_validator(mode="after")
    def _one(self) -> LRSchedulerConfig:
        _exactly_one(self, "lr_schedulers entry")
        return self

    @property
    def name(self) -> str:
        return _exactly_one(self, "lr_schedulers entry")


class AdamParameters(_Strict):
    lr: float = Field(default=0.001, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    amsgrad: bool = False
    lr_schedulers: list[LRSchedulerConfig] = Field(default_factory=list)


class SGDParameters(_Strict):
    lr: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    nesterov: bool = False
    lr_schedulers: list[LRSchedulerConfig] = Field(default_factory=list)


class OptimizerConfig(_Strict):
    """``{Adam: {lr, weight_decay, ...}}`` (L2 penalty in the gradient, as torch.optim.Adam and ReAgent),
    ``{AdamW: {...}}`` (decoupled weight decay) or ``{SGD: {...}}``."""

    Adam: AdamParameters | None = None
    AdamW: AdamParameters | None = None
    SGD: SGDParameters | None = None

    @model_validator(mode="after")
    def _one(self) -> OptimizerConfig:
        _exactly_one(self, "optimizer")
        return self

    @property
    def name(self) -> str:
        return _exactly_one(self, "optimizer")

    @property
    def params(self) -> AdamParameters | SGDParameters:
        chosen: AdamParameters | SGDParameters = getattr(self, self.name)
        return chosen


# ---------------------------------------------------------------- networks

Activation = Literal["relu", "leaky_relu", "tanh", "sigmoid", "elu", "selu", "gelu", "silu", "linear"]


_RELU_RELU: list[Activation] = ["relu", "relu"]


class FullyConnectedParameters(_Strict):
    """An MLP: hidden layer sizes, one activation per hidden layer, optional dropout and layer norm."""

    sizes: list[int] = Field(default_factory=lambda: [256, 128])
    activations: list[Activation] = Field(default_factory=lambda: _RELU_RELU.copy())
    dropout_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    use_layer_norm: bool = False

    @model_validator(mode="after")
    def _lengths(self) -> FullyConnectedParameters:
        if len(self.sizes) != len(self.activations):
            raise ValueError(f"sizes ({len(self.sizes)}) and activations ({len(self.activations)}) "
                             "must have the same length: one activation per hidden layer")
        if any(size <= 0 for size in self.sizes):
            raise ValueError("every layer size must be positive")
        return self


class NetBuilderConfig(_Strict):
    """``{FullyConnected: {...}}``: Q(s, .) from an MLP; ``{Dueling: {...}}``: the same trunk with a
    value and an advantage head, Q = V + A - mean(A) (Wang et al. 2016)."""

    FullyConnected: FullyConnectedParameters | None = None
    Dueling: FullyConnectedParameters | None = None

    @model_validator(mode="after")
    def _one(self) -> NetBuilderConfig:
        _exactly_one(self, "net_builder")
        return self

    @property
    def name(self) -> str:
        return _exactly_one(self, "net_builder")

    @property
    def params(self) -> FullyConnectedParameters:
        chosen: FullyConnectedParameters = getattr(self, self.name)
        return chosen


def _default_net() -> NetBuilderConfig:
    return NetBuilderConfig(FullyConnected=FullyConnectedParameters())


# ---------------------------------------------------------------- trainers


class RLParameters(_Strict):
    """ReAgent's ``rl`` block (ReAgent's defaults)."""

    gamma: float = Field(default=0.9, ge=0.0, le=1.0)
    target_update_rate: float = Field(default=0.001, gt=0.0, le=1.0)
    maxq_learning: bool = True  # false: SARSA (bootstrap from the logged next action)
    reward_boost: dict[str, float] | None = None  # action name -> added to the reward
    temperature: float = Field(default=0.01, gt=0.0)  # policy = softmax(Q / temperature) for CPE
    softmax_policy: bool = False  # serving hint stored with the model: sample instead of argmax
    use_seq_num_diff_as_time_diff: bool = False  # discount = gamma ** (time_diff / time_diff_unit_length)
    time_diff_unit_length: float = Field(default=1.0, gt=0.0)
    multi_steps: int | None = Field(default=None, ge=1)  # discount = gamma ** step
    q_network_loss: Literal["mse", "huber"] = "mse"

    @field_validator("reward_boost", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


class EvaluationParameters(_Strict):
    calc_cpe_in_training: bool = True



def _adam(lr: float = 0.001) -> OptimizerConfig:
    return OptimizerConfig(Adam=AdamParameters(lr=lr))


class PreprocessingOptions(_Strict):
    """Options of normalization identification (spec section 4), ReAgent's names; the same names as
    ``batchrl.data.normalize.NormalizeOptions`` (``NormalizeOptions(**opts.model_dump(exclude_none=True))``)."""

    num_samples: int = Field(default=100000, ge=1)
    max_unique_enum_values: int = Field(default=10, ge=1)
    quantile_size: int = Field(default=20, ge=2)
    quantile_k2_threshold: float = Field(default=1000.0, ge=0)
    skip_box_cox: bool = False
    skip_quantiles: bool = True
    feature_overrides: dict[int, str] | None = None  # feature id -> forced type
    stddev_floor: float | None = Field(default=None, gt=0)  # 1.0 reproduces ReAgent's floor
    seed: int | None = None


# ---------------------------------------------------------------- loading


def _allowed_keys(model_type: type[BaseModel], loc: tuple[int | str, ...]) -> list[str] | None:
    """The keys a mapping at ``loc`` (a pydantic error location) accepts."""
    current: Any = model_type
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        annotation = current.model_fields[part].annotation
        args = [a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None)]
        current = args[0] if args else annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def validation_error(exc: ValidationError, where: str, model_type: type[BaseModel]) -> BatchRLError:
    """A :class:`BatchRLError` that names each bad key and where it sits."""
    problems, fixes = [], []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = ".".join(str(p) for p in loc[:-1]) or "the top level"
            problems.append(f"unknown key '{loc[-1]}' in {parent}")
            allowed = _allowed_keys(model_type, loc[:-1])
            if allowed:
                fixes.append(f"keys allowed in {parent}: {', '.join(allowed)}")
        else:
            problems.append(f"{path}: {err['msg']}")
    fix = "; ".join(fixes) if fixes else "correct the value (see docs/training.md for the schema)"
    return BatchRLError("invalid config: " + "; ".join(problems), where=where, fix=fix)

