"""Workflow configuration: one validated schema in ReAgent's shape (spec section 6).

ReAgent's ``discrete_dqn_cartpole_offline.yaml`` is accepted unchanged. Single-key mappings name a
choice, as in ReAgent: ``model: {DiscreteDQN: {...}}``, ``optimizer: {Adam: {...}}``,
``net_builder: {FullyConnected: {...}}``, ``publisher: {FileSystemPublisher: {}}``. Every mapping
rejects unknown keys; :func:`load_config` turns a validation failure into a :class:`BatchRLError` that
names the key, where it is, and the keys that are allowed there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
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
        return getattr(self, self.name)


# ---------------------------------------------------------------- networks

Activation = Literal["relu", "leaky_relu", "tanh", "sigmoid", "elu", "selu", "gelu", "silu", "linear"]


class FullyConnectedParameters(_Strict):
    """An MLP: hidden layer sizes, one activation per hidden layer, optional dropout and layer norm."""

    sizes: list[int] = Field(default_factory=lambda: [256, 128])
    activations: list[Activation] = Field(default_factory=lambda: ["relu", "relu"])
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
        return getattr(self, self.name)


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


class DQNTrainerParameters(_Strict):
    actions: list[str] = Field(min_length=1)
    rl: RLParameters = Field(default_factory=RLParameters)
    double_q_learning: bool = True
    minibatch_size: int = Field(default=1024, ge=1)
    minibatches_per_step: int = Field(default=1, ge=1)  # gradient accumulation: minibatches per update
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(Adam=AdamParameters()))
    evaluation: EvaluationParameters | None = None  # older ReAgent location of eval_parameters

    @field_validator("actions", mode="before")
    @classmethod
    def _action_strings(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _check(self) -> DQNTrainerParameters:
        if len(set(self.actions)) != len(self.actions):
            raise ValueError(f"actions must be distinct: {self.actions}")
        unknown = set(self.rl.reward_boost or {}) - set(self.actions)
        if unknown:
            raise ValueError(f"rl.reward_boost names actions that are not in actions: {sorted(unknown)}")
        if self.rl.use_seq_num_diff_as_time_diff and self.rl.multi_steps:
            raise ValueError("choose one discount mode: use_seq_num_diff_as_time_diff or multi_steps")
        return self


class CQLTrainerParameters(DQNTrainerParameters):
    """Discrete CQL (Kumar et al. 2020): the DQN loss plus ``alpha`` times the conservative penalty."""

    alpha: float = Field(default=1.0, ge=0.0)


# ---------------------------------------------------------------- discrete offline-RL algorithms
# (trainers in batchrl.training.{qrdqn,c51,bcq,crr,iql}; docs/algorithms.md)


def _adam(lr: float = 0.001) -> OptimizerConfig:
    return OptimizerConfig(Adam=AdamParameters(lr=lr))


def _reject_unused(params: DQNTrainerParameters, algorithm: str) -> None:
    """CRR and IQL bootstrap from their policy or V(s'): double Q and SARSA do not apply."""
    if "double_q_learning" in params.model_fields_set:
        raise ValueError(f"{algorithm} does not use double_q_learning: remove it")
    if not params.rl.maxq_learning:
        raise ValueError(f"{algorithm} has no SARSA mode: remove rl.maxq_learning")


class QRDQNTrainerParameters(DQNTrainerParameters):
    """QR-DQN (Dabney et al. 2018): ``num_atoms`` quantiles per action, quantile Huber loss (kappa)."""

    num_atoms: int = Field(default=51, ge=1)
    huber_kappa: float = Field(default=1.0, gt=0.0)

    @model_validator(mode="after")
    def _unused(self) -> QRDQNTrainerParameters:
        if "q_network_loss" in self.rl.model_fields_set:
            raise ValueError("DiscreteQRDQN uses the quantile Huber loss: remove rl.q_network_loss "
                             "(huber_kappa sets the Huber threshold)")
        return self


class C51TrainerParameters(DQNTrainerParameters):
    """C51 (Bellemare et al. 2017): a categorical distribution on ``num_atoms`` evenly spaced atoms
    from ``qmin`` to ``qmax`` (ReAgent's names and defaults)."""

    num_atoms: int = Field(default=51, ge=2)
    qmin: float = -100.0
    qmax: float = 200.0

    @model_validator(mode="after")
    def _support(self) -> C51TrainerParameters:
        if self.qmin >= self.qmax:
            raise ValueError(f"qmin ({self.qmin}) must be below qmax ({self.qmax})")
        if "q_network_loss" in self.rl.model_fields_set:
            raise ValueError("DiscreteC51DQN uses the cross-entropy loss: remove rl.q_network_loss")
        return self


class BCQTrainerParameters(DQNTrainerParameters):
    """Discrete BCQ (Fujimoto et al. 2019): Q-learning whose max/argmax only considers actions with
    imitator probability >= ``drop_threshold`` times the most likely action's; the imitator (behaviour
    cloning network) trains by cross-entropy with ``imitator_optimizer``."""

    drop_threshold: float = Field(default=0.3, gt=0.0, le=1.0)
    imitator_optimizer: OptimizerConfig = Field(default_factory=_adam)


class CRRTrainerParameters(DQNTrainerParameters):
    """Discrete CRR (Wang et al. 2020): a critic Q trained toward the actor's expected next value and an
    actor trained by advantage-weighted log-likelihood of the logged actions.

    ``advantage``: A = Q(s, a) - sum_a' pi(a'|s) Q(s, a') (``mean``) or - max_a' Q(s, a') (``max``);
    ``weight``: min(exp(A / beta), max_weight) (``exp``) or 1[A > 0] (``binary``).
    ``optimizer`` trains the critic, ``actor_optimizer`` the actor.
    """

    beta: float = Field(default=1.0, gt=0.0)
    max_weight: float = Field(default=20.0, gt=0.0)
    advantage: Literal["mean", "max"] = "mean"
    weight: Literal["exp", "binary"] = "exp"
    actor_optimizer: OptimizerConfig = Field(default_factory=_adam)

    @model_validator(mode="after")
    def _unused(self) -> CRRTrainerParameters:
        _reject_unused(self, "DiscreteCRR")
        return self


class IQLTrainerParameters(DQNTrainerParameters):
    """IQL (Kostrikov et al. 2022, "Offline RL with Implicit Q-Learning"), discrete actions.

    V(s) fits the ``expectile`` of Q_T(s, a_logged); Q(s, a) fits r + d V(s'); the actor is
    advantage-weighted regression with weight min(exp(beta (Q_T - V)), max_weight). ``optimizer``
    trains Q, ``value_optimizer`` V and ``actor_optimizer`` the actor.
    """

    expectile: float = Field(default=0.7, gt=0.0, lt=1.0)
    beta: float = Field(default=3.0, gt=0.0)
    max_weight: float = Field(default=100.0, gt=0.0)
    value_optimizer: OptimizerConfig = Field(default_factory=_adam)
    actor_optimizer: OptimizerConfig = Field(default_factory=_adam)

    @model_validator(mode="after")
    def _unused(self) -> IQLTrainerParameters:
        _reject_unused(self, "DiscreteIQL")
        return self


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


class _ModelBase(_Strict):
    net_builder: NetBuilderConfig = Field(default_factory=_default_net)
    cpe_net_builder: NetBuilderConfig = Field(default_factory=_default_net)
    eval_parameters: EvaluationParameters | None = None
    preprocessing_options: PreprocessingOptions = Field(default_factory=PreprocessingOptions)

    @model_validator(mode="after")
    def _one_eval_block(self) -> _ModelBase:
        old = self.trainer_param.evaluation  # type: ignore[attr-defined]
        if old is not None and self.eval_parameters is not None:
            raise ValueError("give eval_parameters or trainer_param.evaluation, not both")
        return self

    @property
    def evaluation(self) -> EvaluationParameters:
        return self.eval_parameters or self.trainer_param.evaluation or EvaluationParameters()  # type: ignore


class DiscreteDQNModel(_ModelBase):
    trainer_param: DQNTrainerParameters


class DiscreteCQLModel(_ModelBase):
    trainer_param: CQLTrainerParameters


def _fully_connected_only(builder: NetBuilderConfig, key: str, algorithm: str) -> None:
    if builder.name != "FullyConnected":
        raise ValueError(f"{algorithm}.{key}: only FullyConnected is supported (the distributional head "
                         f"reshapes the MLP's outputs into atoms)")


class DiscreteQRDQNModel(_ModelBase):
    trainer_param: QRDQNTrainerParameters

    @model_validator(mode="after")
    def _net(self) -> DiscreteQRDQNModel:
        _fully_connected_only(self.net_builder, "net_builder", "DiscreteQRDQN")
        return self


class DiscreteC51DQNModel(_ModelBase):
    trainer_param: C51TrainerParameters

    @model_validator(mode="after")
    def _net(self) -> DiscreteC51DQNModel:
        _fully_connected_only(self.net_builder, "net_builder", "DiscreteC51DQN")
        return self


class DiscreteBCQModel(_ModelBase):
    """``net_builder``: the Q-network; ``imitator_net_builder``: the behaviour cloning network."""

    trainer_param: BCQTrainerParameters
    imitator_net_builder: NetBuilderConfig = Field(default_factory=_default_net)


class _ActorCriticModel(_ModelBase):
    """``actor_net_builder`` and ``critic_net_builder`` (ReAgent's keys); ``net_builder`` is accepted
    for the critic instead of ``critic_net_builder``."""

    actor_net_builder: NetBuilderConfig = Field(default_factory=_default_net)
    critic_net_builder: NetBuilderConfig | None = None

    @model_validator(mode="after")
    def _one_critic(self) -> _ActorCriticModel:
        if self.critic_net_builder is not None and "net_builder" in self.model_fields_set:
            raise ValueError("give critic_net_builder or net_builder, not both")
        return self

    @property
    def critic(self) -> NetBuilderConfig:
        return self.critic_net_builder or self.net_builder


class DiscreteCRRModel(_ActorCriticModel):
    trainer_param: CRRTrainerParameters


class DiscreteIQLModel(_ActorCriticModel):
    """``value_net_builder``: V(s) (one output)."""

    trainer_param: IQLTrainerParameters
    value_net_builder: NetBuilderConfig = Field(default_factory=_default_net)


AnyModel = (DiscreteDQNModel | DiscreteCQLModel | DiscreteQRDQNModel | DiscreteC51DQNModel | DiscreteBCQModel
            | DiscreteCRRModel | DiscreteIQLModel)


class ModelConfig(_Strict):
    DiscreteDQN: DiscreteDQNModel | None = None
    DiscreteCQL: DiscreteCQLModel | None = None
    DiscreteQRDQN: DiscreteQRDQNModel | None = None
    DiscreteC51DQN: DiscreteC51DQNModel | None = None
    DiscreteBCQ: DiscreteBCQModel | None = None
    DiscreteCRR: DiscreteCRRModel | None = None
    DiscreteIQL: DiscreteIQLModel | None = None

    @model_validator(mode="after")
    def _one(self) -> ModelConfig:
        _exactly_one(self, "model")
        return self

    @property
    def name(self) -> str:
        return _exactly_one(self, "model")

    @property
    def value(self) -> AnyModel:
        return getattr(self, self.name)


# ---------------------------------------------------------------- workflow


class InputTableSpec(_Strict):
    """Train/eval split by a stable hash of mdp_id into [0, 100] (spec section 3)."""

    table_name: str | None = None
    table_sample: float | None = Field(default=None, ge=0, le=100)
    eval_table_sample: float | None = Field(default=None, ge=0, le=100)


class FileSystemPublisherParameters(_Strict):
    pass


class PublisherConfig(_Strict):
    FileSystemPublisher: FileSystemPublisherParameters | None = None
    NoPublishing: FileSystemPublisherParameters | None = None

    @model_validator(mode="after")
    def _one(self) -> PublisherConfig:
        _exactly_one(self, "publisher")
        return self


class WorkflowConfig(_Strict):
    """A whole workflow file: ReAgent's keys plus ``device`` and ``checkpoint_every``."""

    env_name: str | None = None
    model_path: str | None = None
    pkl_path: str | None = None
    input_table_spec: InputTableSpec = Field(default_factory=InputTableSpec)
    model: ModelConfig
    num_train_transitions: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    seed: int = 42
    num_epochs: int = Field(default=1, ge=1)
    publisher: PublisherConfig | None = None
    num_eval_episodes: int | None = Field(default=None, ge=1)
    passing_score_bar: float | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_every: int = Field(default=1, ge=1)  # epochs between checkpoints (the last is always kept)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N (got {value!r})")
        return value


# ---------------------------------------------------------------- loading


def _allowed_keys(model_type: type[BaseModel], loc: tuple) -> list[str] | None:
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


def parse_config(data: Any, where: str = "config") -> WorkflowConfig:
    """Validate a parsed YAML/JSON mapping into a :class:`WorkflowConfig`."""
    if not isinstance(data, dict):
        raise BatchRLError("invalid config: the top level must be a mapping", where=where,
                           fix="start from configs/cartpole_dqn_offline.yaml")
    try:
        return WorkflowConfig.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, where, WorkflowConfig) from None


def load_config(path: str | Path) -> WorkflowConfig:
    """Read and validate a workflow config (YAML or JSON; local path or any storage URI)."""
    from batchrl import storage

    text = storage.read_bytes(str(path)).decode()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BatchRLError(f"config is not valid YAML: {exc}", where=str(path),
                           fix="correct the syntax") from None
    return parse_config(data, where=str(path))
