"""The generate stage: logged decisions from a gymnasium environment (spec section 1).

Episodes run in a vector of environments (gymnasium's native vectorized env where one exists, e.g.
CartPole). Every transition is logged exactly once, in order: an episode is written when it ends and
gets the next episode id, so the same seed gives the same rows. The last row of each episode records
how it ended (``end_reason``): ``terminated`` or ``truncated`` (time limit, or the transition budget
cutting the last episode short). ``action_probability`` is the logging policy's true probability of
the logged action (for Box action spaces, its density).

Logging policies: ``random`` (uniform over the actions or the Box), ``epsilon-greedy`` and ``softmax`` over
the scores of a TorchScript policy (discrete actions), and ``gaussian`` around the action of a TorchScript
actor (Box actions): a ~ N(mu(s), sigma^2) truncated to [low, high] per dimension, sigma = noise (high - low) / 2
(``noise`` in the normalized [-1, 1] action units), logged with its true density

    p(a|s) = prod_i phi(z_i) / (sigma_i (Phi(b_i) - Phi(l_i))),   z_i = (a_i - mu_i) / sigma_i,
             l_i = (low_i - mu_i) / sigma_i,  b_i = (high_i - mu_i) / sigma_i

The environments are reset with ``seed``; the policy draws from its own stream (:func:`policy_rng`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from batchrl import storage
from batchrl.data.parametric_logging import (
    CANDIDATE_POLICIES,
    candidate_policy,
    is_parametric,
    parametric_table,
    play,
)
from batchrl.data.schema import END_TERMINATED, END_TRUNCATED, logged_schema
from batchrl.errors import BatchRLError
from batchrl.progress import Progress
from batchrl.results import StageResult

if TYPE_CHECKING:  # imported where used: gymnasium and torch are slow to import
    import gymnasium as gym
    import torch

log = logging.getLogger(__name__)


class GenerateOptions(BaseModel):
    """Options of the generate stage."""

    model_config = ConfigDict(extra="forbid")

    env: str = "CartPole-v0"
    transitions: int | None = Field(default=None, gt=0)
    episodes: int | None = Field(default=None, gt=0)
    #: heuristic-softmax and myopic: candidate-set (parametric) environments only (:mod:`.parametric_logging`)
    policy: Literal["random", "epsilon-greedy", "softmax", "gaussian", "heuristic-softmax", "myopic"] = "random"
    model: str | None = None
    epsilon: float = Field(default=0.1, ge=0.0, le=1.0)
    temperature: float = Field(default=1.0, gt=0.0)
    noise: float = Field(default=0.1, gt=0.0)  # gaussian: stddev in normalized [-1, 1] action units
    seed: int = 42
    ds: str = "2019-01-01"
    num_envs: int = Field(default=16, ge=1, le=1024)
    max_steps: int | None = Field(default=None, gt=0)  # episode time limit; None: the env's own

    @model_validator(mode="after")
    def _check(self) -> GenerateOptions:
        if (self.transitions is None) == (self.episodes is None):
            raise ValueError("give exactly one of transitions or episodes")
        if self.policy not in ("random", "heuristic-softmax", "myopic") and not self.model:
            raise ValueError(f"policy '{self.policy}' needs a model (a TorchScript policy file)")
        return self


# ---------------------------------------------------------------- policies


class LoggingPolicy:
    """Chooses actions for a batch of observations and returns their probabilities (or densities)."""

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class RandomDiscrete(LoggingPolicy):
    def __init__(self, n: int, start: int):
        self.n, self.start = n, start

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        actions = self.start + rng.integers(self.n, size=len(obs))
        return actions, np.full(len(obs), 1.0 / self.n)


class RandomBox(LoggingPolicy):
    def __init__(self, low: np.ndarray, high: np.ndarray):
        self.low, self.high = low.astype(np.float64), high.astype(np.float64)
        self.density = float(1.0 / np.prod(self.high - self.low))

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        actions = rng.uniform(self.low, self.high, size=(len(obs), len(self.low)))
        return actions, np.full(len(obs), self.density)


def _load_policy_module(path: str) -> torch.jit.ScriptModule:
    """The TorchScript policy ``(values, presence) -> (action names, out)`` at ``path`` (spec section 8)."""
    import io

    import torch

    data = storage.read_bytes(path)
    try:
        module: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]  # unannotated in torch
            io.BytesIO(data), map_location="cpu")
        return module.eval()
    except RuntimeError as exc:
        raise BatchRLError(f"not a TorchScript model: {str(exc).splitlines()[0]}", where=path,
                           fix="pass the model.torchscript written by `batchrl train`") from exc


def _policy_outputs(module: torch.jit.ScriptModule, obs: np.ndarray) -> tuple[list[str], np.ndarray]:
    import torch

    values = torch.as_tensor(obs, dtype=torch.float32)
    with torch.no_grad():
        result: tuple[list[str], torch.Tensor] = module(values, torch.ones_like(values))
    names, out = result
    return list(names), out.double().numpy()


class ModelPolicy(LoggingPolicy):
    """Epsilon-greedy or softmax over the Q-values of a TorchScript policy (spec section 8)."""

    def __init__(self, path: str, kind: str, epsilon: float, temperature: float, n: int, start: int):
        self.module = _load_policy_module(path)
        self.kind, self.epsilon, self.temperature = kind, epsilon, temperature
        self.n, self.start = n, start
        self.column: np.ndarray | None = None  # model action column -> env action offset

    def _q_values(self, obs: np.ndarray) -> np.ndarray:
        names, q = _policy_outputs(self.module, obs)
        if self.column is None:
            expected = [str(self.start + i) for i in range(self.n)]
            if names != expected:
                raise BatchRLError(f"model actions {names} do not match the environment's {expected}",
                                   fix="use a model trained on data from this environment")
            self.column = np.arange(self.n)
        return q

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        q = self._q_values(obs)
        if self.kind == "softmax":
            z = (q - q.max(axis=1, keepdims=True)) / self.temperature
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
        else:
            p = np.full_like(q, self.epsilon / self.n)
            p[np.arange(len(q)), q.argmax(axis=1)] += 1.0 - self.epsilon
        u = rng.random(len(q))[:, None]
        idx = np.minimum((u > np.cumsum(p, axis=1)).sum(axis=1), self.n - 1)
        return self.start + idx, p[np.arange(len(q)), idx]


class GaussianActorPolicy(LoggingPolicy):
    """Box actions: N(mu(s), sigma^2) truncated to [low, high] around a TorchScript actor's action mu(s) (its
    output in the environment's units), drawn by inverse CDF; logs the true density (module docstring)."""

    def __init__(self, path: str, noise: float, low: np.ndarray, high: np.ndarray):
        self.module = _load_policy_module(path)
        self.low, self.high = low.astype(np.float64), high.astype(np.float64)
        self.sigma = noise * (self.high - self.low) / 2.0

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from scipy.special import ndtr, ndtri

        names, mu = _policy_outputs(self.module, obs)
        if mu.ndim != 2 or mu.shape[1] != len(self.low):
            raise BatchRLError(f"the model's actions {names} (output shape {list(mu.shape)}) do not match the "
                               f"environment's {len(self.low)} action dimensions",
                               fix="use a continuous-action model trained on data from this environment")
        mu = np.clip(mu, self.low, self.high)
        lo, hi = ndtr((self.low - mu) / self.sigma), ndtr((self.high - mu) / self.sigma)
        u = rng.random(mu.shape)
        actions = np.clip(mu + self.sigma * ndtri(lo + u * (hi - lo)), self.low, self.high)
        z = (actions - mu) / self.sigma
        log_density = -0.5 * z ** 2 - 0.5 * np.log(2 * np.pi) - np.log(self.sigma) - np.log(hi - lo)
        return actions, np.exp(log_density.sum(axis=1))


# ---------------------------------------------------------------- episodes


@dataclass
class _Episode:
    obs: list[Any] = field(default_factory=list)
    actions: list[Any] = field(default_factory=list)
    rewards: list[Any] = field(default_factory=list)
    probs: list[Any] = field(default_factory=list)


@dataclass
class _Finished:
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    probs: np.ndarray
    end_reason: str

    def __len__(self) -> int:
        return len(self.rewards)

    def cut(self, n: int) -> _Finished:
        return _Finished(self.obs[:n], self.actions[:n], self.rewards[:n], self.probs[:n], END_TRUNCATED)


def policy_rng(seed: int) -> np.random.Generator:
    """The logging policy's random numbers for a run whose environments are reset with ``seed``: a child
    stream of ``SeedSequence(seed)``. gymnasium seeds an environment with ``PCG64(SeedSequence(seed))``, the
    stream ``default_rng(seed)`` would give; sharing it made the first actions of the first episodes
    functions of their own initial states (CartPole: the draw for env i at step t < 4 was component t of
    its initial state), which the logged propensities did not describe."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def make_envs(env_id: str, num_envs: int, max_steps: int | None = None) -> gym.vector.VectorEnv[Any, Any, Any]:
    """A vector of ``num_envs`` environments (native vectorized where gymnasium has one), NEXT_STEP
    autoreset; an unknown id is a BatchRLError."""
    import gymnasium as gym

    from batchrl.simulators import register_envs

    register_envs()
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as exc:
        raise BatchRLError(f"unknown gymnasium environment '{env_id}'",
                           fix="use a registered id such as CartPole-v0, CartPole-v1, Acrobot-v1, "
                               "MountainCar-v0 or Pendulum-v1") from exc
    mode = "vector_entry_point" if spec.vector_entry_point else "sync"
    kwargs: dict[str, Any] = {} if spec.vector_entry_point else {
        "vector_kwargs": {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}}
    if max_steps:
        kwargs["max_episode_steps"] = max_steps
    with warnings.catch_warnings():  # older versions (CartPole-v0) are chosen on purpose, e.g. for ReAgent parity
        warnings.filterwarnings("ignore", message=".*is out of date.*")
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode, **kwargs)


def make_env(env_id: str, max_steps: int | None = None) -> gym.Env[Any, Any]:
    """One environment (``batchrl/`` simulators registered first); an unknown id is a BatchRLError."""
    import gymnasium as gym

    from batchrl.simulators import register_envs

    register_envs()
    try:
        return gym.make(env_id, max_episode_steps=max_steps)
    except gym.error.Error as exc:
        raise BatchRLError(f"unknown gymnasium environment '{env_id}'",
                           fix="use a registered id such as CartPole-v0, Pendulum-v1 or "
                               "batchrl/Recommendation-v0") from exc


def _policy(options: GenerateOptions, action_space: gym.spaces.Space[Any]) -> LoggingPolicy:
    import gymnasium as gym

    if options.policy == "gaussian" and not isinstance(action_space, gym.spaces.Box):
        raise BatchRLError(f"policy 'gaussian' needs a Box action space; {options.env} has {action_space}",
                           fix="use --policy epsilon-greedy or softmax for discrete actions")
    if isinstance(action_space, gym.spaces.Discrete):
        n, start = int(action_space.n), int(action_space.start)
        if options.policy == "random" or options.model is None:  # (the options require a model otherwise)
            return RandomDiscrete(n, start)
        return ModelPolicy(options.model, options.policy, options.epsilon, options.temperature, n, start)
    if isinstance(action_space, gym.spaces.Box):
        low, high = action_space.low.reshape(-1), action_space.high.reshape(-1)
        if options.policy == "random":
            return RandomBox(low, high)
        if options.policy == "gaussian" and options.model is not None:  # (the options require a model)
            return GaussianActorPolicy(options.model, options.noise, low, high)
        raise BatchRLError(f"policy '{options.policy}' needs discrete actions; {options.env} has a Box "
                           "action space", fix="use --policy random or gaussian for continuous-action environments")
    raise BatchRLError(f"unsupported action space {action_space} in {options.env}",
                       fix="use an environment with a Discrete or Box action space")


def action_names_of(action_space: gym.spaces.Space[Any]) -> list[str] | None:
    """Discrete action names as logged ("0", "1", ...); None for Box action spaces."""
    import gymnasium as gym

    if not isinstance(action_space, gym.spaces.Discrete):
        return None
    return [str(int(action_space.start) + i) for i in range(int(action_space.n))]


def run_episodes(options: GenerateOptions) -> tuple[list[_Finished], list[str] | None]:
    """Run the policy until the budget is met; return finished episodes in order and action names."""
    import gymnasium as gym

    envs = make_envs(options.env, options.num_envs, options.max_steps)
    try:
        policy = _policy(options, envs.single_action_space)
        space = envs.single_action_space
        box_shape = space.shape if isinstance(space, gym.spaces.Box) else None  # None: discrete actions
        action_names = action_names_of(envs.single_action_space)
        rng = policy_rng(options.seed)
        obs, _ = envs.reset(seed=options.seed)
        running = [_Episode() for _ in range(envs.num_envs)]
        skip = np.zeros(envs.num_envs, dtype=bool)  # next step is an autoreset step (NEXT_STEP mode)
        finished: list[_Finished] = []
        logged = 0
        budget = options.transitions or options.episodes or 0  # the options require exactly one
        unit = "transitions" if options.transitions else "episodes"
        with Progress(budget, f"generate {options.env}", unit) as bar:
            while (logged if options.transitions else len(finished)) < budget:
                flat = np.asarray(obs, dtype=np.float64).reshape(envs.num_envs, -1)
                actions, probs = policy.act(flat, rng)
                step_actions = actions if box_shape is None else actions.reshape((envs.num_envs, *box_shape))
                next_obs, rewards, terminated, truncated, _ = envs.step(step_actions)
                for i in np.flatnonzero(~skip):
                    ep = running[i]
                    ep.obs.append(flat[i])
                    ep.actions.append(actions[i])
                    ep.rewards.append(float(rewards[i]))
                    ep.probs.append(float(probs[i]))
                    if terminated[i] or truncated[i]:
                        finished.append(_Finished(np.asarray(ep.obs), np.asarray(ep.actions),
                                                  np.asarray(ep.rewards), np.asarray(ep.probs),
                                                  END_TERMINATED if terminated[i] else END_TRUNCATED))
                        running[i] = _Episode()
                        logged += len(finished[-1])
                        bar.update(len(finished[-1]) if options.transitions else 1)
                skip = np.logical_or(terminated, truncated)
                obs = next_obs
    finally:
        envs.close()
    if options.transitions:
        kept: list[_Finished] = []
        total = 0
        for episode in finished:
            if total + len(episode) >= options.transitions:
                kept.append(episode if total + len(episode) == options.transitions
                            else episode.cut(options.transitions - total))
                break
            kept.append(episode)
            total += len(episode)
        finished = kept
    else:
        finished = finished[: options.episodes]
    return finished, action_names


def _map_array(values: np.ndarray) -> pa.MapArray:
    """Rows of a dense (N, D) matrix as map<int64, double> {0: v0, 1: v1, ...}."""
    n, d = values.shape
    offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int32))
    keys = pa.array(np.tile(np.arange(d, dtype=np.int64), n))
    return pa.MapArray.from_arrays(offsets, keys, pa.array(values.reshape(-1), type=pa.float64()))


def episodes_to_table(episodes: list[_Finished], action_names: list[str] | None, ds: str) -> pa.Table:
    """The logged table (spec section 1) for finished episodes, episode ids 0, 1, 2, ...

    ``action_names`` None means a Box action space: actions are logged as maps {index: value}.
    """
    box = action_names is None
    lengths = np.array([len(ep) for ep in episodes], dtype=np.int64)
    n = int(lengths.sum())
    obs = np.concatenate([ep.obs for ep in episodes])
    rewards = np.concatenate([ep.rewards for ep in episodes])
    probs = np.concatenate([ep.probs for ep in episodes])
    mdp_id = np.repeat(np.arange(len(episodes)), lengths).astype(str)
    seq = np.concatenate([np.arange(length) for length in lengths])
    end_reason = np.full(n, None, dtype=object)
    end_reason[np.cumsum(lengths) - 1] = [ep.end_reason for ep in episodes]
    metrics_offsets = pa.array(np.arange(n + 1, dtype=np.int32))
    metrics = pa.MapArray.from_arrays(metrics_offsets, pa.array(np.full(n, "reward")),
                                      pa.array(rewards, type=pa.float64()))
    columns = {
        "mdp_id": pa.array(mdp_id, type=pa.string()),
        "sequence_number": pa.array(seq, type=pa.int64()),
        "state_features": _map_array(obs),
    }
    if box:
        columns["action"] = _map_array(np.concatenate([ep.actions for ep in episodes]).reshape(n, -1))
    else:
        actions = np.concatenate([ep.actions for ep in episodes]).astype(np.int64)
        columns["action"] = pa.array(actions.astype(str), type=pa.string())
        columns["possible_actions"] = pa.array([action_names] * n, type=pa.list_(pa.string()))
    columns.update({
        "reward": pa.array(rewards, type=pa.float64()),
        "action_probability": pa.array(probs, type=pa.float64()),
        "ds": pa.array(np.full(n, ds), type=pa.string()),
        "metrics": metrics,
        "end_reason": pa.array(end_reason, type=pa.string()),
    })
    schema = logged_schema(parametric=box, possible_actions=not box)
    return pa.table([columns[f.name] for f in schema], schema=schema)


@dataclass(frozen=True)
class GenerateResult(StageResult):
    """What :func:`generate` logged."""

    output: str
    env: str
    rows: int
    episodes: int
    policy: str
    seed: int
    action_kind: str  # discrete | continuous | parametric
    action_names: list[str] | None  # None: continuous (box) actions
    terminated_episodes: int
    truncated_episodes: int
    mean_episode_return: float
    transitions_per_s: float

    METADATA: ClassVar[tuple[str, ...]] = (
        "rows", "episodes", "env", "policy", "seed", "action_kind", "action_names", "terminated_episodes",
        "truncated_episodes", "mean_episode_return")
    HEADLINE: ClassVar[tuple[str, ...]] = ("rows", "episodes", "transitions_per_s")


def generate(output: str, options: GenerateOptions) -> GenerateResult:
    """Log ``options.transitions`` transitions (or ``options.episodes`` episodes) to ``output``."""
    import time

    start = time.perf_counter()
    env = make_env(options.env, options.max_steps)
    if is_parametric(env.observation_space):
        return _generate_parametric(output, options, env, start)
    env.close()
    if options.policy in CANDIDATE_POLICIES and options.policy != "random":
        raise BatchRLError(f"policy '{options.policy}' needs a candidate-set environment; {options.env} is not one",
                           fix="use --policy random, epsilon-greedy, softmax or gaussian")
    episodes, action_names = run_episodes(options)
    elapsed = time.perf_counter() - start
    box = action_names is None
    table = episodes_to_table(episodes, action_names, options.ds)
    ends = table.column("end_reason").value_counts().to_pylist()
    summary = {
        "env": options.env,
        "rows": table.num_rows,
        "episodes": len(episodes),
        "policy": options.policy,
        "seed": options.seed,
        "action_kind": "continuous" if box else "discrete",
        "action_names": action_names,
        "terminated_episodes": sum(e["counts"] for e in ends if e["values"] == END_TERMINATED),
        "truncated_episodes": sum(e["counts"] for e in ends if e["values"] == END_TRUNCATED),
        "mean_episode_return": float(np.mean([ep.rewards.sum() for ep in episodes])),
        "transitions_per_s": round(table.num_rows / elapsed, 1),
    }
    storage.write_table(table, output, metadata={"stage": "generate", **summary})
    log.info("wrote %d transitions (%d episodes) to %s", table.num_rows, len(episodes), output)
    return GenerateResult(output=output, **summary)


def _generate_parametric(output: str, options: GenerateOptions, env: gym.Env[Any, Any], start: float) -> GenerateResult:
    """``generate`` for a candidate-set environment (:mod:`batchrl.data.parametric_logging`)."""
    import time

    try:
        policy = candidate_policy(options.policy, env, options.temperature)
        episodes = play(env, policy, policy_rng(options.seed), options.seed, episodes=options.episodes,
                        transitions=options.transitions, label=f"generate {options.env}")
    finally:
        env.close()
    elapsed = time.perf_counter() - start
    table = parametric_table(episodes, options.ds)
    summary = {
        "env": options.env, "rows": table.num_rows, "episodes": len(episodes), "policy": options.policy,
        "seed": options.seed, "action_kind": "parametric", "action_names": None,
        "terminated_episodes": sum(ep.end_reason == END_TERMINATED for ep in episodes),
        "truncated_episodes": sum(ep.end_reason == END_TRUNCATED for ep in episodes),
        "mean_episode_return": float(np.mean([sum(ep.rewards) for ep in episodes])),
        "transitions_per_s": round(table.num_rows / elapsed, 1),
    }
    storage.write_table(table, output, metadata={"stage": "generate", **summary})
    log.info("wrote %d transitions (%d episodes) to %s", table.num_rows, len(episodes), output)
    return GenerateResult(output=output, **summary)
