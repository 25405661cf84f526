"""Discrete-action algorithms: DQN, CQL, QR-DQN, C51, BCQ, CRR, IQL (trainers in ``batchrl.training``;
docs/algorithms.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from batchrl.config.base import (
    AdamParameters,
    EvaluationParameters,
    NetBuilderConfig,
    OptimizerConfig,
    PreprocessingOptions,
    RLParameters,
    _adam,
    _default_net,
    _Strict,
)


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


class DiscreteDQNTrainerParameters(DQNTrainerParameters):
    """DQN's own options. ``imitation_weight`` > 0 adds an auxiliary behaviour-cloning loss: a linear head
    on the Q-network's hidden layers trained by cross-entropy on the logged action (plus
    ``imitator_logit_penalty`` * mean(logits^2)), weighted into the Q loss; it shapes the shared features
    only (the policy stays argmax Q)."""

    imitation_weight: float = Field(default=0.0, ge=0.0)
    imitator_logit_penalty: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="after")
    def _penalty_needs_head(self) -> DiscreteDQNTrainerParameters:
        if self.imitator_logit_penalty and not self.imitation_weight:
            raise ValueError("imitator_logit_penalty needs imitation_weight > 0 (it regularizes the imitation head)")
        return self


class CQLTrainerParameters(DQNTrainerParameters):
    """Discrete CQL (Kumar et al. 2020): the DQN loss plus ``alpha`` times the conservative penalty."""

    alpha: float = Field(default=1.0, ge=0.0)


# ---------------------------------------------------------------- discrete offline-RL algorithms
# (trainers in batchrl.training.{qrdqn,c51,bcq,crr,iql}; docs/algorithms.md)


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
    cloning network) trains by cross-entropy (plus ``imitator_logit_penalty`` * mean(logits^2), the
    paper's regularizer) with ``imitator_optimizer``."""

    drop_threshold: float = Field(default=0.3, gt=0.0, le=1.0)
    imitator_optimizer: OptimizerConfig = Field(default_factory=_adam)
    imitator_logit_penalty: float = Field(default=0.0, ge=0.0)  # beta * mean(logits^2) added to the imitator loss


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


class _ModelBase(_Strict):
    net_builder: NetBuilderConfig = Field(default_factory=_default_net)
    cpe_net_builder: NetBuilderConfig = Field(default_factory=_default_net)
    eval_parameters: EvaluationParameters | None = None
    preprocessing_options: PreprocessingOptions = Field(default_factory=PreprocessingOptions)
    if TYPE_CHECKING:  # each model class declares its own trainer_param, a DQNTrainerParameters subclass
        trainer_param: DQNTrainerParameters

    @model_validator(mode="after")
    def _one_eval_block(self) -> _ModelBase:
        old = self.trainer_param.evaluation
        if old is not None and self.eval_parameters is not None:
            raise ValueError("give eval_parameters or trainer_param.evaluation, not both")
        return self

    @property
    def evaluation(self) -> EvaluationParameters:
        return self.eval_parameters or self.trainer_param.evaluation or EvaluationParameters()


class DiscreteDQNModel(_ModelBase):
    trainer_param: DiscreteDQNTrainerParameters


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
    """``net_builder``: the Q-network; ``imitator_net_builder``: the behaviour cloning network, or with
    ``share_trunk`` a linear head on the Q-network's hidden layers (one network, both losses train it)."""

    trainer_param: BCQTrainerParameters
    imitator_net_builder: NetBuilderConfig = Field(default_factory=_default_net)
    share_trunk: bool = False

    @model_validator(mode="after")
    def _shared(self) -> DiscreteBCQModel:
        if self.share_trunk and "imitator_net_builder" in self.model_fields_set:
            raise ValueError("DiscreteBCQ: imitator_net_builder is unused with share_trunk: true (the imitator is a "
                             "head on net_builder's hidden layers); remove one of them")
        return self


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
