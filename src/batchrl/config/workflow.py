"""The workflow file (``batchrl run``, ``batchrl train``): ReAgent's keys (spec section 6).

ReAgent's ``discrete_dqn_cartpole_offline.yaml`` and ``sac_pendulum_offline.yaml`` are accepted unchanged. Single-key mappings name a
choice, as in ReAgent: ``model: {DiscreteDQN: {...}}``, ``optimizer: {Adam: {...}}``,
``net_builder: {FullyConnected: {...}}``, ``publisher: {FileSystemPublisher: {}}``. Every mapping
rejects unknown keys; :func:`load_config` turns a validation failure into a :class:`BatchRLError` that
names the key, where it is, and the keys that are allowed there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from batchrl.config.base import _exactly_one, _Strict, validation_error
from batchrl.config.continuous import ContinuousModelBase, IQLModel, SACModel, TD3Model
from batchrl.config.discrete import (
    DiscreteBCQModel,
    DiscreteC51DQNModel,
    DiscreteCQLModel,
    DiscreteCRRModel,
    DiscreteDQNModel,
    DiscreteIQLModel,
    DiscreteQRDQNModel,
)
from batchrl.config.parametric import ParametricCQLModel, ParametricDQNModel, ParametricModelBase
from batchrl.errors import BatchRLError

AnyModel = (DiscreteDQNModel | DiscreteCQLModel | DiscreteQRDQNModel | DiscreteC51DQNModel | DiscreteBCQModel
            | DiscreteCRRModel | DiscreteIQLModel | SACModel | TD3Model | IQLModel | ParametricDQNModel
            | ParametricCQLModel)


class ModelConfig(_Strict):
    DiscreteDQN: DiscreteDQNModel | None = None
    DiscreteCQL: DiscreteCQLModel | None = None
    DiscreteQRDQN: DiscreteQRDQNModel | None = None
    DiscreteC51DQN: DiscreteC51DQNModel | None = None
    DiscreteBCQ: DiscreteBCQModel | None = None
    DiscreteCRR: DiscreteCRRModel | None = None
    DiscreteIQL: DiscreteIQLModel | None = None
    SAC: SACModel | None = None
    TD3: TD3Model | None = None
    IQL: IQLModel | None = None
    ParametricDQN: ParametricDQNModel | None = None
    ParametricCQL: ParametricCQLModel | None = None

    @model_validator(mode="after")
    def _one(self) -> ModelConfig:
        _exactly_one(self, "model")
        return self

    @property
    def name(self) -> str:
        return _exactly_one(self, "model")

    @property
    def value(self) -> AnyModel:
        chosen: AnyModel = getattr(self, self.name)
        return chosen

    @property
    def continuous(self) -> bool:
        return self.name in CONTINUOUS_ALGORITHMS

    @property
    def parametric(self) -> bool:
        """Items described by features, chosen among candidate sets (:mod:`batchrl.config.parametric`)."""
        return isinstance(self.value, ParametricModelBase)


def _algorithms_with(base: type) -> tuple[str, ...]:
    """The algorithm names whose model block is a ``base``."""
    return tuple(name for name, field in ModelConfig.model_fields.items()
                 if any(isinstance(t, type) and issubclass(t, base) for t in get_args(field.annotation)))


def _block_class(annotation: Any) -> type[_Strict] | None:
    """The config class in a ``Class | None`` annotation (None when there is none)."""
    classes = [t for t in (get_args(annotation) or (annotation,)) if isinstance(t, type) and issubclass(t, _Strict)]
    return classes[0] if len(classes) == 1 else None


def switch_algorithm(body: dict[str, Any], old: str, new: str) -> tuple[dict[str, Any], list[str]]:
    """``old``'s model block as ``new``'s, and the options dropped on the way.

    What both algorithms accept carries over (networks, optimizer, ``rl``, ...); ``old``'s own options that
    ``new`` lacks (e.g. DQN's ``imitation_weight`` for DiscreteCQL, BCQ's ``drop_threshold``), in the model
    block and in its ``trainer_param``, are dropped and named in the returned list. A key neither algorithm
    knows stays, so validation still reports a misspelt option."""
    fields = ModelConfig.model_fields
    if old not in fields or new not in fields:
        return body, []
    result, dropped = dict(body), []
    old_model, new_model = _block_class(fields[old].annotation), _block_class(fields[new].annotation)
    levels: list[tuple[dict[str, Any], type[_Strict] | None, type[_Strict] | None, str]] = [(result, old_model, new_model, "")]
    if isinstance(body.get("trainer_param"), dict) and old_model is not None and new_model is not None:
        result["trainer_param"] = dict(body["trainer_param"])
        levels.append((result["trainer_param"],
                       _block_class(old_model.model_fields["trainer_param"].annotation),
                       _block_class(new_model.model_fields["trainer_param"].annotation), "trainer_param."))
    for block, old_class, new_class, prefix in levels:
        if old_class is None or new_class is None:
            continue
        for key in [k for k in block if k in old_class.model_fields and k not in new_class.model_fields]:
            del block[key]
            dropped.append(prefix + key)
    return result, dropped


#: Algorithms whose actions are continuous vectors: those whose model block is a continuous one
#: (:mod:`batchrl.config.continuous`).
CONTINUOUS_ALGORITHMS = _algorithms_with(ContinuousModelBase)
#: Algorithms whose actions are items described by features, chosen among candidate sets
#: (:mod:`batchrl.config.parametric`). The rest choose among named discrete actions.
PARAMETRIC_ALGORITHMS = _algorithms_with(ParametricModelBase)


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


class ReaderOptions(_Strict):
    """ReAgent's ``reader_options``: ``minibatch_size`` is the training batch size when given."""

    minibatch_size: int | None = Field(default=None, ge=1)


class CheckpointSelection(_Strict):
    """Export the epoch whose CPE criterion on the eval table is the highest instead of the last (discrete
    models with ``calc_cpe_in_training``): the ``statistic`` (``ci_low``: the lower end of the 95%
    interval, which bootstraps every epoch; ``raw``: the point estimate) of ``estimator`` (a key of the
    per-epoch ``cpe``, e.g. WDR, SequentialDR, MAGIC, DR). The candidates are the epochs whose checkpoint is
    kept (``checkpoint_every``, ``keep_checkpoints``). No simulator needed."""

    estimator: str = "WDR"
    statistic: Literal["ci_low", "raw"] = "ci_low"


class LoggingPolicyConfig(_Strict):
    """How ``batchrl run`` generates its logged data (and, in evaluation, the ``logging`` baseline of a
    candidate-set simulator): ``random``, or for candidate-set environments ``heuristic-softmax`` (softmax of
    the environment's hand-made item score at ``temperature``) or ``myopic``."""

    policy: Literal["random", "heuristic-softmax", "myopic"] = "random"
    temperature: float = Field(default=1.0, gt=0.0)


class WorkflowConfig(_Strict):
    """A whole workflow file: ReAgent's keys plus ``device``, ``checkpoint_every`` and ``engine`` (the data
    stages' engine: auto = DuckDB in this process, or spark).

    ``max_steps`` caps the episodes ``batchrl run`` generates and evaluates, as ReAgent's
    ``run_episode`` did: on top of the environment's own time limit, never beyond it.
    """

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
    keep_checkpoints: int | None = Field(default=None, ge=1)  # the latest N checkpoints stay; None: all
    cpu_threads: int | None = Field(default=None, ge=1)  # torch intra-op threads while training; None: torch's
    reader_options: ReaderOptions | None = None
    engine: Literal["auto", "duckdb", "spark"] = "auto"  # data stages: DuckDB in this process, or Spark
    checkpoint_selection: CheckpointSelection | None = None  # None: export the last epoch
    logging_policy: LoggingPolicyConfig = Field(default_factory=LoggingPolicyConfig)  # generate's policy

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N (got {value!r})")
        return value

    @model_validator(mode="after")
    def _one_batch_size(self) -> WorkflowConfig:
        params = self.model.value.trainer_param
        reader = self.reader_options.minibatch_size if self.reader_options else None
        if reader is not None and "minibatch_size" in params.model_fields_set and reader != params.minibatch_size:
            raise ValueError(f"reader_options.minibatch_size {reader} contradicts trainer_param.minibatch_size "
                             f"{params.minibatch_size}: give one of them")
        return self

    @model_validator(mode="after")
    def _selection_needs_one_step_rows(self) -> WorkflowConfig:
        steps = self.model.value.trainer_param.rl.multi_steps
        if self.checkpoint_selection is not None and steps is not None and steps > 1:
            raise ValueError(f"checkpoint_selection scores epochs by CPE, which needs one reward per decision, but "
                             f"rl.multi_steps {steps} trains on {steps}-step rows: drop one of them")
        return self

    @property
    def batch_size(self) -> int:
        """Rows per training minibatch: ``reader_options.minibatch_size``, else the trainer's."""
        reader = self.reader_options.minibatch_size if self.reader_options else None
        return reader or self.model.value.trainer_param.minibatch_size


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
