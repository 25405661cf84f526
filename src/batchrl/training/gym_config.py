"""Config of online gym training (``batchrl gym-train``), in the shape of ReAgent's gym tests.

Keys (ReAgent's names; ``env: {Gym: {env_name: ...}}`` is accepted as well as a plain id)::

    env: CartPole-v0            gymnasium id
    model: {DiscreteDQN: ...}   the batch-training model schema, plus SAC and TD3 (continuous actions)
    replay_memory_size          transitions the replay buffer keeps (oldest dropped first)
    train_after_ts              transitions collected by a uniformly random policy before training starts
                                (they also identify the state normalization)
    train_every_ts              environment steps between two training updates
    num_train_episodes          episodes played by the exploring policy after the prefill
    num_eval_episodes           greedy episodes of the exported policy at the end
    passing_score_bar           mean greedy return required (``batchrl gym-train`` exits 1 below it)
    minibatch_size              overrides trainer_param.minibatch_size
    use_gpu / device            ``device`` (auto | cpu | cuda | cuda:N) or ReAgent's ``use_gpu``
    seed, max_steps             seed of everything; episode time limit (default: the env's own)
    exploration                 discrete actions: ``{epsilon_greedy: {start, end, decay_steps}}`` or
                                ``{softmax: {temperature}}``; SAC/TD3 explore by their own policy
    keep_best                   optional ``{every_episodes, episodes}``: every ``every_episodes`` training
                                episodes, play ``episodes`` greedy episodes (seeds disjoint from training
                                and from the final evaluation); the policy with the best mean is exported
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from batchrl.config import ModelConfig, _exactly_one, _Strict, validation_error
from batchrl.errors import BatchRLError


class EpsilonGreedy(_Strict):
    """epsilon decays linearly from ``start`` to ``end`` over ``decay_steps`` environment steps after the
    prefill; a random action with probability epsilon, else the greedy one."""

    start: float = Field(default=1.0, ge=0.0, le=1.0)
    end: float = Field(default=0.02, ge=0.0, le=1.0)
    decay_steps: int = Field(default=5000, ge=1)


class Softmax(_Strict):
    """pi(a|s) = softmax(Q(s, .) / temperature)."""

    temperature: float = Field(default=1.0, gt=0.0)


class ExplorationConfig(_Strict):
    epsilon_greedy: EpsilonGreedy | None = None
    softmax: Softmax | None = None

    @model_validator(mode="after")
    def _one(self) -> ExplorationConfig:
        _exactly_one(self, "exploration")
        return self

    @property
    def name(self) -> str:
        return _exactly_one(self, "exploration")

    @property
    def chosen(self) -> EpsilonGreedy | Softmax:
        policy: EpsilonGreedy | Softmax = getattr(self, self.name)
        return policy


class KeepBest(_Strict):
    """Model selection in the simulator: greedy checks during training; the best checked policy (the later
    one on ties) is the one exported and evaluated."""

    every_episodes: int = Field(default=10, ge=1)
    episodes: int = Field(default=10, ge=1)


class GymTrainConfig(_Strict):
    env: str
    model: ModelConfig
    replay_memory_size: int = Field(default=100000, ge=1)
    train_after_ts: int = Field(default=1000, ge=20)
    train_every_ts: int = Field(default=1, ge=1)
    num_train_episodes: int = Field(ge=0)
    num_eval_episodes: int = Field(default=100, ge=1)
    passing_score_bar: float | None = None
    minibatch_size: int | None = Field(default=None, ge=1)
    use_gpu: bool | None = None
    device: str | None = None
    seed: int = 42
    max_steps: int | None = Field(default=None, ge=1)
    exploration: ExplorationConfig = Field(default_factory=lambda: ExplorationConfig(epsilon_greedy=EpsilonGreedy()))
    keep_best: KeepBest | None = None

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) != {"Gym"} or not isinstance(value["Gym"], dict) or set(value["Gym"]) != {"env_name"}:
                raise ValueError("env must be a gymnasium id or {Gym: {env_name: ID}}")
            return value["Gym"]["env_name"]
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is not None and value not in ("auto", "cpu", "cuda") and not (
                value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N (got {value!r})")
        return value

    @model_validator(mode="after")
    def _check(self) -> GymTrainConfig:
        if self.use_gpu is not None and self.device is not None and (self.device != "cpu") != self.use_gpu:
            raise ValueError(f"use_gpu: {self.use_gpu} contradicts device: {self.device}; give one of them")
        if self.minibatch_size is not None and self.minibatch_size > self.replay_memory_size:
            raise ValueError("minibatch_size is larger than replay_memory_size")
        if self.train_after_ts > self.replay_memory_size:
            raise ValueError("train_after_ts is larger than replay_memory_size (the prefill would not fit)")
        return self

    @property
    def resolved_device(self) -> str:
        if self.device is not None:
            return self.device
        return "auto" if self.use_gpu is None else "cuda" if self.use_gpu else "cpu"

    @property
    def batch_size(self) -> int:
        return self.minibatch_size or self.model.value.trainer_param.minibatch_size


def parse_gym_config(data: Any, where: str = "gym config") -> GymTrainConfig:
    if not isinstance(data, dict):
        raise BatchRLError("invalid gym config: the top level must be a mapping", where=where,
                           fix="start from configs/gym/cartpole_v0_dqn.yaml")
    try:
        return GymTrainConfig.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, where, GymTrainConfig) from None


def load_gym_config(path: str) -> GymTrainConfig:
    """Read and validate a gym-train config (YAML or JSON; local path or storage URI)."""
    import yaml

    from batchrl import storage

    try:
        data = yaml.safe_load(storage.read_bytes(str(path)).decode())
    except yaml.YAMLError as exc:
        raise BatchRLError(f"config is not valid YAML: {exc}", where=str(path), fix="correct the syntax") from None
    return parse_gym_config(data, where=str(path))
