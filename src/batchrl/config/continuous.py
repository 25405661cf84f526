"""Config blocks of the continuous-action algorithms, SAC, TD3 and IQL, in ReAgent's shape.

``model: {SAC: {trainer_param: {...}, actor_net_builder: {GaussianFullyConnected: {...}},
critic_net_builder: {FullyConnected: {...}}}}`` and ``model: {TD3: {...}}`` with
``actor_net_builder: {FullyConnected: {...}}``. As in ReAgent, SAC takes an optional state-value
network (``value_net_builder``, ``value_network_optimizer``; Haarnoja et al. 2018a); without one it is
the twin-Q version (Haarnoja et al. 2018b). ``model: {IQL: {...}}`` (implicit Q-learning, continuous
actions; ``DiscreteIQL`` is the discrete one) takes a Gaussian actor and a state-value network. The model keys of ReAgent's offline SAC config
(``state_preprocessing_options``, ``action_preprocessing_options``, ``action_float_features``) are
accepted; the online harness reads only the state options.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from batchrl.config.base import (
    FullyConnectedParameters,
    OptimizerConfig,
    PreprocessingOptions,
    RLParameters,
    _adam,
    _exactly_one,
    _Strict,
)


def _continuous_rl() -> RLParameters:
    return RLParameters(gamma=0.99, target_update_rate=0.005)


class GaussianFullyConnectedParameters(FullyConnectedParameters):
    """A Gaussian actor's MLP: its hidden layers, and whether the log std is a head on the trunk
    (``state_dependent_std``, SAC's) or one learned parameter per action dimension (IQL's)."""

    state_dependent_std: bool = True


class ContinuousNetBuilder(_Strict):
    """``{FullyConnected: {...}}`` (critics, TD3 actor) or ``{GaussianFullyConnected: {...}}`` (SAC and IQL
    actors)."""

    FullyConnected: FullyConnectedParameters | None = None
    GaussianFullyConnected: GaussianFullyConnectedParameters | None = None

    @model_validator(mode="after")
    def _one(self) -> ContinuousNetBuilder:
        _exactly_one(self, "net builder")
        return self

    @property
    def name(self) -> str:
        return _exactly_one(self, "net builder")

    @property
    def params(self) -> FullyConnectedParameters:
        chosen: FullyConnectedParameters = getattr(self, self.name)
        return chosen


def _fc(sizes: list[int] | None = None) -> ContinuousNetBuilder:
    sizes = sizes or [256, 256]
    return ContinuousNetBuilder(FullyConnected=FullyConnectedParameters(sizes=sizes,
                                                                        activations=["relu"] * len(sizes)))


def _gaussian() -> ContinuousNetBuilder:
    return ContinuousNetBuilder(GaussianFullyConnected=GaussianFullyConnectedParameters(
        sizes=[256, 256], activations=["relu", "relu"]))


class _ContinuousTrainerBase(_Strict):
    rl: RLParameters = Field(default_factory=_continuous_rl)
    minibatch_size: int = Field(default=256, ge=1)
    q_network_optimizer: OptimizerConfig = Field(default_factory=_adam)
    actor_network_optimizer: OptimizerConfig = Field(default_factory=_adam)

    @model_validator(mode="after")
    def _rl(self) -> _ContinuousTrainerBase:
        unused = {"maxq_learning", "reward_boost", "multi_steps", "use_seq_num_diff_as_time_diff"}
        given = sorted(unused & self.rl.model_fields_set)
        if given:
            raise ValueError(f"rl.{', rl.'.join(given)} do not apply to continuous actions: remove them")
        return self


class SACTrainerParameters(_ContinuousTrainerBase):
    """Soft actor-critic (Haarnoja et al. 2018). ``entropy_temperature`` is alpha; with an
    ``alpha_optimizer`` alpha is learned toward ``target_entropy`` (default -action_dim)."""

    entropy_temperature: float = Field(default=0.1, gt=0.0)
    alpha_optimizer: OptimizerConfig | None = None
    target_entropy: float | None = None
    value_network_optimizer: OptimizerConfig = Field(default_factory=_adam)  # with value_net_builder
    crr_config: Any = None

    @model_validator(mode="after")
    def _no_crr(self) -> SACTrainerParameters:
        if self.crr_config is not None:
            raise ValueError("crr_config is not supported for SAC: remove it or set it to null")
        return self


class TD3TrainerParameters(_ContinuousTrainerBase):
    """TD3 (Fujimoto et al. 2018): target smoothing noise N(0, noise_variance) clipped to
    +-noise_clip (normalized action units), actor and targets updated every ``delayed_policy_update``
    critic steps; ``exploration_noise`` is the stddev of the online behaviour noise. ``bc_alpha`` turns
    it into TD3+BC (Fujimoto & Gu 2021, the paper's value: 2.5): the actor also regresses to the logged
    actions, for offline data."""

    noise_variance: float = Field(default=0.2, ge=0.0)
    noise_clip: float = Field(default=0.5, ge=0.0)
    delayed_policy_update: int = Field(default=2, ge=1)
    exploration_noise: float = Field(default=0.1, ge=0.0)
    bc_alpha: float | None = Field(default=None, gt=0.0)  # TD3+BC (Fujimoto & Gu 2021) for offline data; 2.5


class ContinuousIQLTrainerParameters(_ContinuousTrainerBase):
    """IQL for continuous actions (Kostrikov et al. 2022, "Offline RL with Implicit Q-Learning"); the
    defaults are the paper's for locomotion: V(s) fits the ``expectile`` (tau) of min_i Q_T,i(s, a_logged);
    the twin Q fit r + gamma V(s'); the Gaussian actor is advantage-weighted regression with weight
    min(exp(beta (min_i Q_T,i - V)), max_weight). ``q_network_optimizer`` trains both Q,
    ``value_network_optimizer`` V and ``actor_network_optimizer`` the actor (all Adam 3e-4, the paper's)."""

    expectile: float = Field(default=0.7, gt=0.0, lt=1.0)
    beta: float = Field(default=3.0, gt=0.0)
    max_weight: float = Field(default=100.0, gt=0.0)
    q_network_optimizer: OptimizerConfig = Field(default_factory=lambda: _adam(3e-4))
    actor_network_optimizer: OptimizerConfig = Field(default_factory=lambda: _adam(3e-4))
    value_network_optimizer: OptimizerConfig = Field(default_factory=lambda: _adam(3e-4))


class ContinuousModelBase(_Strict):
    """The model block of a continuous-action algorithm (which makes it one: ``ModelConfig.continuous``)."""

    critic_net_builder: ContinuousNetBuilder = Field(default_factory=_fc)
    eval_parameters: Any = None
    preprocessing_options: PreprocessingOptions | None = None
    state_preprocessing_options: PreprocessingOptions | None = None  # ReAgent's name of the same block
    action_preprocessing_options: PreprocessingOptions | None = None  # offline: CONTINUOUS_ACTION bounds
    action_float_features: list[tuple[int, str]] | None = None  # offline: [[action feature id, name]]

    @model_validator(mode="after")
    def _builders(self) -> ContinuousModelBase:
        if self.critic_net_builder.name != "FullyConnected":
            raise ValueError("critic_net_builder must be FullyConnected")
        if self.preprocessing_options is not None and self.state_preprocessing_options is not None:
            raise ValueError("give preprocessing_options or state_preprocessing_options, not both")
        if isinstance(self.eval_parameters, dict) and self.eval_parameters.get("calc_cpe_in_training"):
            raise ValueError("eval_parameters.calc_cpe_in_training is not supported for continuous actions")
        return self


    @property
    def state_options(self) -> PreprocessingOptions:
        return self.preprocessing_options or self.state_preprocessing_options or PreprocessingOptions()


class SACModel(ContinuousModelBase):
    """``value_net_builder`` (optional): V(s) of Haarnoja et al. 2018a."""

    trainer_param: SACTrainerParameters = Field(default_factory=SACTrainerParameters)
    actor_net_builder: ContinuousNetBuilder = Field(default_factory=_gaussian)
    value_net_builder: ContinuousNetBuilder | None = None

    @model_validator(mode="after")
    def _actor(self) -> SACModel:
        if self.actor_net_builder.name != "GaussianFullyConnected":
            raise ValueError("SAC.actor_net_builder must be GaussianFullyConnected")
        if self.value_net_builder is not None and self.value_net_builder.name != "FullyConnected":
            raise ValueError("SAC.value_net_builder must be FullyConnected")
        return self


class TD3Model(ContinuousModelBase):
    trainer_param: TD3TrainerParameters = Field(default_factory=TD3TrainerParameters)
    actor_net_builder: ContinuousNetBuilder = Field(default_factory=_fc)

    @model_validator(mode="after")
    def _actor(self) -> TD3Model:
        if self.actor_net_builder.name != "FullyConnected":
            raise ValueError("TD3.actor_net_builder must be FullyConnected")
        return self


class IQLModel(ContinuousModelBase):
    """IQL, continuous actions: ``actor_net_builder`` GaussianFullyConnected (the serving action is its mean),
    ``value_net_builder`` FullyConnected (V(s), one output)."""

    trainer_param: ContinuousIQLTrainerParameters = Field(default_factory=ContinuousIQLTrainerParameters)
    actor_net_builder: ContinuousNetBuilder = Field(default_factory=_gaussian)
    value_net_builder: ContinuousNetBuilder = Field(default_factory=_fc)

    @model_validator(mode="after")
    def _networks(self) -> IQLModel:
        if self.actor_net_builder.name != "GaussianFullyConnected":
            raise ValueError("IQL.actor_net_builder must be GaussianFullyConnected")
        if self.value_net_builder.name != "FullyConnected":
            raise ValueError("IQL.value_net_builder must be FullyConnected")
        return self
