"""The stage graph, described once: each stage's input and output artifacts and the options it takes
from the workflow config.

``batchrl run`` (:mod:`batchrl.workflow`) executes this table in order; the KFP pipeline
(:mod:`batchrl.kfp.pipeline`) takes its parameters' defaults from the same option functions, and
``tests/test_stages.py`` checks that the compiled pipeline hands every component the options
``batchrl run`` gives the stage. What is not in the config (dates, the run's ds) comes in a
:class:`Context`.

::

    generate -> logged -> validate -> timeline -> timeline ─┬─> normalize -> normalization ───────┬─> prepare
                                                            └─> normalize_actions -> action_normalization ┘
    prepare -> train, eval -> train (+ normalization) -> model -> evaluate (+ eval) -> evaluation
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchrl.config import PreprocessingOptions, WorkflowConfig
from batchrl.config.continuous import ContinuousModelBase
from batchrl.config.discrete import DQNTrainerParameters
from batchrl.config.parametric import ParametricModelBase
from batchrl.errors import BatchRLError

DEFAULT_DS = "2019-01-01"
DEFAULT_TRANSITIONS = 30_000
DEFAULT_EVAL_EPISODES = 100
DEFAULT_TABLE_SAMPLE = 90.0
DEFAULT_EVAL_TABLE_SAMPLE = 10.0


@dataclass(frozen=True)
class Context:
    """What a stage's options need beside the config: the generated data's ds and the timeline's range."""

    ds: str = DEFAULT_DS
    start_ds: str = DEFAULT_DS
    end_ds: str = DEFAULT_DS


def episode_limit(env_id: str, max_steps: int | None) -> int | None:
    """ReAgent's ``max_steps``: a cap on top of the environment's own time limit, never beyond it."""
    import gymnasium as gym

    try:
        own = gym.spec(env_id).max_episode_steps
    except gym.error.Error:
        return max_steps  # generate reports the unknown id
    return min(own, max_steps) if own and max_steps else (max_steps or None)


def max_steps(config: WorkflowConfig) -> int | None:
    """The episode time limit of generate and evaluate (:func:`episode_limit` of the config's)."""
    return episode_limit(config.env_name, config.max_steps) if config.env_name else config.max_steps


def _normalize_options(prep: PreprocessingOptions, seed: int) -> Any:
    """The normalize stage's options from a model's preprocessing block (the same names); ``seed`` when the
    block sets none."""
    from batchrl.data.normalize import NormalizeOptions

    return NormalizeOptions(**{"seed": seed, **prep.model_dump(exclude_none=True)})


def generate_options(config: WorkflowConfig, context: Context) -> Any:
    from batchrl.data.gym_logging import GenerateOptions

    if config.env_name is None:
        raise BatchRLError("the workflow config names no env_name to generate logged data in",
                           where="workflow config", fix="set env_name, or give your logged table with --input")
    return GenerateOptions(env=config.env_name, transitions=config.num_train_transitions or DEFAULT_TRANSITIONS,
                           seed=config.seed, ds=context.ds, max_steps=max_steps(config),
                           policy=config.logging_policy.policy, temperature=config.logging_policy.temperature)


def multi_steps(config: WorkflowConfig) -> int | None:
    """``rl.multi_steps`` of a discrete trainer (None otherwise): the timeline's ``steps`` and prepare's
    discounted k-step rewards both follow it, as ReAgent's workflow passed it to its timeline query."""
    trainer = config.model.value.trainer_param
    return trainer.rl.multi_steps if isinstance(trainer, DQNTrainerParameters) else None


def timeline_options(config: WorkflowConfig, context: Context) -> Any:
    from batchrl.data.timeline import make_options

    steps = multi_steps(config)
    return make_options({"startDs": context.start_ds, "endDs": context.end_ds, "addTerminalStateRow": True,
                         **({"steps": steps} if steps else {})}, where="workflow timeline")


def normalize_options(config: WorkflowConfig, context: Context) -> Any:
    model = config.model.value
    if isinstance(model, ContinuousModelBase):
        return _normalize_options(model.state_options, config.seed)
    return _normalize_options(model.preprocessing_options, config.seed)


def normalize_actions_options(config: WorkflowConfig, context: Context) -> Any:
    """Continuous and parametric actions: the action preprocessing block (item features are scaled by
    their [min, max], CONTINUOUS_ACTION, as continuous actions are); discrete: the state block's sample
    size (the stage reads only the schema then)."""
    model = config.model.value
    if isinstance(model, ContinuousModelBase | ParametricModelBase) and model.action_preprocessing_options is not None:
        prep = model.action_preprocessing_options
    else:
        prep = PreprocessingOptions(num_samples=normalize_options(config, context).num_samples)
    from batchrl.preprocessing.normalization import FeatureType

    return _normalize_options(prep, config.seed).model_copy(
        update={"column": "action", "feature_type": FeatureType.CONTINUOUS_ACTION})


def prepare_options(config: WorkflowConfig, context: Context) -> Any:
    from batchrl.data.prepare import PrepareOptions

    trainer = config.model.value.trainer_param
    spec = config.input_table_spec
    steps = multi_steps(config)
    return PrepareOptions(
        actions=[str(a) for a in trainer.actions] if isinstance(trainer, DQNTrainerParameters) else None,
        table_sample=spec.table_sample if spec.table_sample is not None else DEFAULT_TABLE_SAMPLE,
        eval_table_sample=spec.eval_table_sample if spec.eval_table_sample is not None
        else DEFAULT_EVAL_TABLE_SAMPLE,
        multi_steps=steps, gamma=trainer.rl.gamma if steps else None)


def train_options(config: WorkflowConfig, context: Context) -> WorkflowConfig:
    """Training reads the whole config."""
    return config


def evaluate_options(config: WorkflowConfig, context: Context) -> Any:
    from batchrl.evaluation.evaluate import EvaluateOptions

    return EvaluateOptions(env=config.env_name, episodes=config.num_eval_episodes or DEFAULT_EVAL_EPISODES,
                           seed=config.seed, passing_score_bar=config.passing_score_bar, max_steps=max_steps(config),
                           logging_policy=config.logging_policy.policy,
                           logging_temperature=config.logging_policy.temperature)


@dataclass(frozen=True)
class StageSpec:
    """One stage: the artifacts it reads and writes (names of :data:`batchrl.workflow.ARTIFACTS`) and its
    options from the config (None: the stage takes none from it)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    options: Callable[[WorkflowConfig, Context], Any] | None = None


STAGES: tuple[StageSpec, ...] = (
    StageSpec("generate", (), ("logged",), generate_options),
    StageSpec("validate", ("logged",), ()),
    StageSpec("timeline", ("logged",), ("timeline",), timeline_options),
    StageSpec("normalize", ("timeline",), ("normalization",), normalize_options),
    StageSpec("normalize_actions", ("timeline",), ("action_normalization",), normalize_actions_options),
    StageSpec("prepare", ("timeline", "normalization", "action_normalization"), ("train", "eval"), prepare_options),
    StageSpec("train", ("train", "eval", "normalization"), ("model",), train_options),
    StageSpec("evaluate", ("model", "eval"), ("evaluation",), evaluate_options),
)
SPECS = {spec.name: spec for spec in STAGES}


def stage_options(config: WorkflowConfig, context: Context = Context()) -> dict[str, Any]:
    """Every stage's options (stage name -> options) for ``config``."""
    return {spec.name: spec.options(config, context) for spec in STAGES if spec.options is not None}
