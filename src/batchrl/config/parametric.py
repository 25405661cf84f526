"""Config blocks of parametric-action algorithms, in ReAgent's shape: items described by features, chosen
among a candidate set per step (docs/recommendation.md, docs/training.md).

``model: {ParametricDQN: {trainer_param: {rl, double_q_learning, minibatch_size, minibatches_per_step,
optimizer}, net_builder: {FullyConnected: {...}}, state_preprocessing_options, action_preprocessing_options}}``
(ReAgent's ``ParametricDQN`` keys); ``ParametricCQL`` adds ``trainer_param.alpha``, the weight of the
conservative penalty over the candidate set.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from batchrl.config.base import (
    AdamParameters,
    EvaluationParameters,
    NetBuilderConfig,
    OptimizerConfig,
    PreprocessingOptions,
    RLParameters,
    _default_net,
    _Strict,
)


class ParametricDQNTrainerParameters(_Strict):
    """Q(s, a) over state and item features; the next value is max (double Q: Q_T at the online argmax)
    over the next state's candidates, or the logged next item (``rl.maxq_learning: false``)."""

    rl: RLParameters = Field(default_factory=RLParameters)
    double_q_learning: bool = True
    minibatch_size: int = Field(default=1024, ge=1)
    minibatches_per_step: int = Field(default=1, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(Adam=AdamParameters()))

    @model_validator(mode="after")
    def _rl(self) -> ParametricDQNTrainerParameters:
        if self.rl.reward_boost:
            raise ValueError("rl.reward_boost names discrete actions; parametric actions have none: remove it")
        if self.rl.use_seq_num_diff_as_time_diff and self.rl.multi_steps:
            raise ValueError("choose one discount mode: use_seq_num_diff_as_time_diff or multi_steps")
        if self.rl.multi_steps is not None and self.rl.multi_steps > 1:
            raise ValueError("rl.multi_steps: parametric-action tables are one-step (prepare builds k-step rows "
                             "for discrete actions only): remove it")
        return self


class ParametricCQLTrainerParameters(ParametricDQNTrainerParameters):
    """Conservative Q-learning (Kumar et al. 2020) over candidate sets: ``alpha`` times
    logsumexp_{a in candidates} Q(s, a) - Q(s, a_logged) added to the TD loss."""

    alpha: float = Field(default=1.0, ge=0.0)


class ParametricModelBase(_Strict):
    """The model block of a parametric-action algorithm (which makes it one: ``ModelConfig.parametric``).
    ``net_builder``: the MLP of Q over [state input, item input] (one output)."""

    net_builder: NetBuilderConfig = Field(default_factory=_default_net)
    eval_parameters: EvaluationParameters | None = None
    state_preprocessing_options: PreprocessingOptions = Field(default_factory=PreprocessingOptions)
    action_preprocessing_options: PreprocessingOptions | None = None  # item [min, max] sampling; default: the state's
    state_float_features: list[tuple[int, str]] | None = None  # accepted (ReAgent's); ids come from the data
    action_float_features: list[tuple[int, str]] | None = None  # when given: must list the table's item ids

    @model_validator(mode="after")
    def _builder(self) -> ParametricModelBase:
        if self.net_builder.name != "FullyConnected":
            raise ValueError("net_builder must be FullyConnected (Q over the concatenated state and item inputs)")
        if self.eval_parameters is not None and self.eval_parameters.calc_cpe_in_training:
            raise ValueError("eval_parameters.calc_cpe_in_training is not supported for parametric actions: "
                             "set it to false")
        return self

    @property
    def preprocessing_options(self) -> PreprocessingOptions:
        """The state block (the name the discrete algorithms use)."""
        return self.state_preprocessing_options

    @property
    def evaluation(self) -> Any:
        return self.eval_parameters or EvaluationParameters(calc_cpe_in_training=False)


class ParametricDQNModel(ParametricModelBase):
    trainer_param: ParametricDQNTrainerParameters = Field(default_factory=ParametricDQNTrainerParameters)


class ParametricCQLModel(ParametricModelBase):
    trainer_param: ParametricCQLTrainerParameters = Field(default_factory=ParametricCQLTrainerParameters)
