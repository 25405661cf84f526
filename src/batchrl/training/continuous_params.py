"""Config blocks of the continuous-action algorithms, SAC and TD3, in ReAgent's shape.

``model: {SAC: {trainer_param: {...}, actor_net_builder: {GaussianFullyConnected: {...}},
critic_net_builder: {FullyConnected: {...}}}}`` and ``model: {TD3: {...}}`` with
``actor_net_builder: {FullyConnected: {...}}``. ReAgent's SAC had an optional state-value network
(``value_net_builder``, ``value_network_optimizer``); SAC here is the version without it (Haarnoja et
al. 2018b), so these keys are accepted only as ``null`` and otherwise rejected with that reason.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from batchrl.config import (
    AdamParameters,
    FullyConnectedParameters,
    OptimizerConfig,
    PreprocessingOptions,
    RLParameters,
    _exactly_one,
    _Strict,
)


def _adam(lr: float = 0.001) -> OptimizerConfig:
    return OptimizerConfig(Adam=AdamParameters(lr=lr))


def _continuous_rl() -> RLParameters:
    return RLParameters(gamma=0.99, target_update_rate=0.005)


class ContinuousNetBuilder(_Strict):
    """``{FullyConnected: {...}}`` (critics, TD3 actor) or ``{GaussianFullyConnected: {...}}`` (SAC actor)."""

    FullyConnected: FullyConnectedParameters | None = None
    GaussianFullyConnected: FullyConnectedParameters | None = None

    @model_validator(mode="after")
    def _one(self) -> ContinuousNetBuilder:
        _exactly_one(self, "net builder")
        return self

    @property
    def name(self) -> str:
        return _exactly_one(self, "net builder")

    @property
    def params(self) -> FullyConnectedParameters:
        return getattr(self, self.name)


def _fc(sizes: list[int] | None = None) -> ContinuousNetBuilder:
    sizes = sizes or [256, 256]
    return ContinuousNetBuilder(FullyConnected=FullyConnectedParameters(sizes=sizes,
                                                                        activations=["relu"] * len(sizes)))


def _gaussian() -> ContinuousNetBuilder:
    return ContinuousNetBuilder(GaussianFullyConnected=FullyConnectedParameters(sizes=[256, 256],
                                                                                activations=["relu", "relu"]))


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
    value_network_optimizer: Any = None
    crr_config: Any = None

    @model_validator(mode="after")
    def _no_value_network(self) -> SACTrainerParameters:
        if self.value_network_optimizer is not None:
            raise ValueError("value_network_optimizer: SAC here has no state-value network (the twin-Q "
                             "version of Haarnoja et al. 2018b); remove it or set it to null")
        if self.crr_config is not None:
            raise ValueError("crr_config is not supported for SAC: remove it or set it to null")
        return self


class TD3TrainerParameters(_ContinuousTrainerBase):
    """TD3 (Fujimoto et al. 2018): target smoothing noise N(0, noise_variance) clipped to
    +-noise_clip (normalized action units), actor and targets updated every ``delayed_policy_update``
    critic steps; ``exploration_noise`` is the stddev of the online behaviour noise."""

    noise_variance: float = Field(default=0.2, ge=0.0)
    noise_clip: float = Field(default=0.5, ge=0.0)
    delayed_policy_update: int = Field(default=2, ge=1)
    exploration_noise: float = Field(default=0.1, ge=0.0)


class _ContinuousModelBase(_Strict):
    critic_net_builder: ContinuousNetBuilder = Field(default_factory=_fc)
    value_net_builder: Any = None
    eval_parameters: Any = None
    preprocessing_options: PreprocessingOptions = Field(default_factory=PreprocessingOptions)

    @model_validator(mode="after")
    def _builders(self) -> _ContinuousModelBase:
        if self.critic_net_builder.name != "FullyConnected":
            raise ValueError("critic_net_builder must be FullyConnected")
        if self.value_net_builder is not None:
            raise ValueError("value_net_builder: SAC/TD3 here have no state-value network; remove it")
        if isinstance(self.eval_parameters, dict) and self.eval_parameters.get("calc_cpe_in_training"):
            raise ValueError("eval_parameters.calc_cpe_in_training is not supported for continuous actions")
        return self


class SACModel(_ContinuousModelBase):
    trainer_param: SACTrainerParameters = Field(default_factory=SACTrainerParameters)
    actor_net_builder: ContinuousNetBuilder = Field(default_factory=_gaussian)

    @model_validator(mode="after")
    def _actor(self) -> SACModel:
        if self.actor_net_builder.name != "GaussianFullyConnected":
            raise ValueError("SAC.actor_net_builder must be GaussianFullyConnected")
        return self


class TD3Model(_ContinuousModelBase):
    trainer_param: TD3TrainerParameters = Field(default_factory=TD3TrainerParameters)
    actor_net_builder: ContinuousNetBuilder = Field(default_factory=_fc)

    @model_validator(mode="after")
    def _actor(self) -> TD3Model:
        if self.actor_net_builder.name != "FullyConnected":
            raise ValueError("TD3.actor_net_builder must be FullyConnected")
        return self
