"""Online training against a gymnasium simulator (``batchrl gym-train``, spec section 9).

The shape of ReAgent's gym tests:

1. a uniformly random policy fills the replay buffer with ``train_after_ts`` transitions; the state
   normalization is identified from their states (:mod:`batchrl.preprocessing.identify`), so the
   exported model embeds a Preprocessor exactly like a batch-trained one;
2. ``num_train_episodes`` episodes of the exploring policy (epsilon-greedy or softmax over Q for
   discrete actions; the algorithm's own noise for SAC/TD3); every ``train_every_ts`` environment
   steps one minibatch drawn uniformly from the buffer goes to the trainer's ``update`` (the same
   trainers as batch training, fed :class:`~batchrl.data.loader.Batch` es);
3. with ``keep_best``, greedy checks during step 2 select the policy to export (the last one
   otherwise); the policy is exported (``model.torchscript``, spec section 8; continuous actions: see
   :func:`export_policy`) and played greedily for ``num_eval_episodes`` episodes; the summary says
   whether the mean return reaches ``passing_score_bar``.

The trainer comes from the algorithm registry (:mod:`batchrl.training.algorithms`), its minibatches go
through the same preprocessing transform as batch training's, and the policy is exported the same way.

Episodes cut by the time limit (truncated) still bootstrap: ``not_terminal`` is False only when the
environment terminated.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from batchrl import __version__, storage
from batchrl.config.continuous import ContinuousModelBase
from batchrl.config.parametric import ParametricModelBase
from batchrl.data.loader import Batch
from batchrl.errors import BatchRLError
from batchrl.evaluation.rollouts import greedy_rollouts
from batchrl.models.continuous import ActionScaler
from batchrl.preprocessing.identify import IdentifyOptions, identify_feature
from batchrl.preprocessing.normalization import Normalization, to_json_dict, write_normalization
from batchrl.preprocessing.preprocessor import Preprocessor
from batchrl.progress import Progress
from batchrl.serving.export import load_policy
from batchrl.training.algorithms import build_trainer, export_policy
from batchrl.training.gym_config import GymTrainConfig, KeepBest, Softmax
from batchrl.training.inputs import network_input, preprocess_fn, resolve_device
from batchrl.training.loop import TensorBoardLog, check_finite
from batchrl.training.trainer import ActingTrainer, Trainer

if TYPE_CHECKING:  # imported where used: gymnasium is slow to import
    import gymnasium as gym

log = logging.getLogger(__name__)

MODEL_FILE = "model.torchscript"
SUMMARY_FILE = "training_summary.json"
NORMALIZATION_FILE = "normalization.json"
#: Updates between two TensorBoard loss points (and finiteness checks).
LOG_EVERY_UPDATES = 100
#: Evaluation episodes are seeded from seed + EVAL_SEED_OFFSET, away from the training episodes' seeds.
EVAL_SEED_OFFSET = 1_000_000
#: The greedy checks of ``keep_best`` are seeded from seed + CHECK_SEED_OFFSET (the same seeds every check).
CHECK_SEED_OFFSET = 2_000_000


# ---------------------------------------------------------------- replay buffer


class ReplayBuffer:
    """A ring buffer of transitions (the oldest is overwritten when full).

    ``action`` is int64 [N] for discrete actions (index into the model's actions) or float32 [N, d] in
    [-1, 1] for continuous ones. ``next_action`` (discrete) is the action taken after the transition in
    the same episode, ``num_actions`` when there was none (terminal, truncated or not yet known).
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int | None, num_actions: int = 0):
        self.capacity, self.num_actions = capacity, num_actions
        self.state = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_state = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.action = (np.zeros(capacity, dtype=np.int64) if action_dim is None
                       else np.zeros((capacity, action_dim), dtype=np.float32))
        self.next_action = np.full(capacity, num_actions, dtype=np.int64)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.not_terminal = np.zeros(capacity, dtype=bool)
        self.size = 0
        self.position = 0
        self._previous: int | None = None  # slot of the previous transition of the running episode

    def __len__(self) -> int:
        return self.size

    def add(self, state: np.ndarray, action: int | np.ndarray, reward: float, next_state: np.ndarray, terminated: bool,
            episode_start: bool) -> None:
        i = self.position
        if not episode_start and self._previous is not None and self.action.ndim == 1:
            self.next_action[self._previous] = int(action)
        self.state[i], self.next_state[i], self.action[i] = state, next_state, action
        self.reward[i], self.not_terminal[i] = reward, not terminated
        self.next_action[i] = self.num_actions
        self._previous = i
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def end_episode(self) -> None:
        self._previous = None

    def sample(self, n: int, rng: np.random.Generator, device: torch.device) -> Batch:
        """``n`` transitions drawn uniformly with replacement, as a :class:`Batch` of raw states."""
        idx = rng.integers(self.size, size=n)
        b = len(idx)
        width = max(self.num_actions, 1)
        ones = torch.ones(b, dtype=torch.long)
        batch = Batch(
            state=torch.from_numpy(self.state[idx]), state_presence=torch.ones(b, self.state.shape[1]),
            next_state=torch.from_numpy(self.next_state[idx]),
            next_state_presence=torch.ones(b, self.state.shape[1]),
            action=torch.from_numpy(self.action[idx]), next_action=torch.from_numpy(self.next_action[idx]),
            reward=torch.from_numpy(self.reward[idx]),
            possible_actions_mask=torch.ones(b, width, dtype=torch.bool),
            possible_next_actions_mask=torch.ones(b, width, dtype=torch.bool),
            not_terminal=torch.from_numpy(self.not_terminal[idx]),
            action_probability=torch.ones(b), step=ones, time_diff=ones)
        return batch.to(device)


# ---------------------------------------------------------------- exploration


def linear_epsilon(step: int, start: float, end: float, decay_steps: int) -> float:
    """epsilon_t = start + (end - start) * min(t / decay_steps, 1)."""
    return start + (end - start) * min(step / decay_steps, 1.0)


def explore_discrete(q: np.ndarray, rng: np.random.Generator, *, epsilon: float | None = None,
                     temperature: float | None = None) -> int:
    """One action index from Q-values ``q`` [A]: epsilon-greedy (``epsilon``) or softmax (``temperature``)."""
    if temperature is not None:
        z = (q - q.max()) / temperature
        p = np.exp(z) / np.exp(z).sum()
        return int(rng.choice(len(q), p=p))
    if epsilon is not None and rng.random() < epsilon:
        return int(rng.integers(len(q)))
    return int(np.argmax(q))


# ---------------------------------------------------------------- normalization


def identify_states(states: np.ndarray, config: GymTrainConfig) -> Normalization:
    """Normalization of every observation index (feature id i = observation index i) from ``states``."""
    model = config.model.value
    opts = model.state_options if isinstance(model, ContinuousModelBase) else model.preprocessing_options
    identify = IdentifyOptions(max_unique_enum_values=opts.max_unique_enum_values, quantile_size=opts.quantile_size,
                               quantile_k2_threshold=opts.quantile_k2_threshold, skip_box_cox=opts.skip_box_cox,
                               skip_quantiles=opts.skip_quantiles,
                               **({"stddev_floor": opts.stddev_floor} if opts.stddev_floor else {}))
    sample = states[: opts.num_samples]
    overrides = opts.feature_overrides or {}
    return {i: identify_feature(sample[:, i], identify, overrides.get(i), feature=f"observation {i}")
            for i in range(states.shape[1])}


# ---------------------------------------------------------------- evaluation


def evaluate_policy(uri: str, config: GymTrainConfig) -> np.ndarray:
    """Greedy returns of the exported policy at ``uri`` over ``num_eval_episodes`` episodes."""
    return greedy_rollouts(load_policy(uri), config.env, config.num_eval_episodes, config.seed + EVAL_SEED_OFFSET,
                           max_steps=config.max_steps).returns


def greedy_check(env_id: str, max_steps: int | None, act: Callable[[np.ndarray], Any], episodes: int, seed: int) -> tuple[float, int]:
    """(mean return, environment steps) of ``episodes`` episodes of ``act`` (observation -> env action).

    One environment reset with ``seed + k`` for episode k, like the training episodes (the vectorized
    :func:`~batchrl.evaluation.rollouts.greedy_rollouts` draws CartPole's initial states differently), on
    the policy being trained, before any export.
    """
    env = make_env(env_id, max_steps)
    total, steps = 0.0, 0
    try:
        for k in range(episodes):
            obs, _ = env.reset(seed=seed + k)
            done = False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(act(obs))
                total, steps, done = total + float(reward), steps + 1, bool(terminated or truncated)
    finally:
        env.close()
    return total / episodes, steps


# ---------------------------------------------------------------- the harness


def make_env(env_id: str, max_steps: int | None) -> gym.Env[Any, Any]:
    """One gymnasium environment (the harness steps a single one); an unknown id is a BatchRLError."""
    import gymnasium as gym

    try:
        return gym.make(env_id, max_episode_steps=max_steps if max_steps else None)
    except gym.error.Error as exc:
        raise BatchRLError(f"unknown gymnasium environment '{env_id}'", fix="use a registered id such as "
                           "CartPole-v0, CartPole-v1 or Pendulum-v1") from exc


@dataclass
class _Spaces:
    obs_dim: int
    action_dim: int  # discrete: number of actions; continuous: dimensions
    action_names: list[str]
    discrete: bool
    first_action: int = 0  # discrete: the environment's first action (Discrete.start)
    bounds: tuple[list[float], list[float]] | None = None  # continuous: (low, high), flattened


def _spaces(env: gym.Env[Any, Any], config: GymTrainConfig) -> _Spaces:
    import gymnasium as gym

    obs_space, action_space = env.observation_space, env.action_space
    if not isinstance(obs_space, gym.spaces.Box):
        raise BatchRLError(f"{config.env} has a {type(obs_space).__name__} observation space",
                           where="env", fix="use an environment with a Box (vector) observation space")
    obs_dim = int(np.prod(obs_space.shape))
    if isinstance(action_space, gym.spaces.Discrete):
        model = config.model.value
        if isinstance(model, ParametricModelBase):
            raise BatchRLError(f"{config.model.name} trains offline on logged candidate sets, not online",
                               where="model", fix="use `batchrl run` with a parametric environment's logged data")
        if isinstance(model, ContinuousModelBase):
            raise BatchRLError(f"{config.model.name} needs continuous actions; {config.env} has discrete ones",
                               where="model", fix="use a discrete algorithm (e.g. DiscreteDQN) for this env")
        names = [str(int(action_space.start) + i) for i in range(int(action_space.n))]
        actions = model.trainer_param.actions
        if actions != names:
            raise BatchRLError(f"trainer_param.actions {actions} differ from {config.env}'s actions {names}",
                               where="model.trainer_param.actions", fix=f"set actions: {names}")
        return _Spaces(obs_dim, len(names), names, True, first_action=int(action_space.start))
    if isinstance(action_space, gym.spaces.Box):
        if not config.model.continuous:
            raise BatchRLError(f"{config.model.name} needs discrete actions; {config.env} has a Box action space",
                               where="model", fix="use SAC or TD3 for continuous actions")
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise BatchRLError(f"{config.env}'s action space is unbounded", where="env",
                               fix="use an environment with finite action bounds")
        dim = int(np.prod(action_space.shape))
        return _Spaces(obs_dim, dim, [str(i) for i in range(dim)], False,
                       bounds=(action_space.low.reshape(-1).tolist(), action_space.high.reshape(-1).tolist()))
    raise BatchRLError(f"unsupported action space {action_space} in {config.env}", where="env",
                       fix="use an environment with a Discrete or Box action space")


def gym_train(config: GymTrainConfig, output: str, device: str | None = None) -> dict[str, Any]:
    """Train online in ``config.env``, export the policy to ``output``, evaluate it greedily.

    Returns the summary (also written to ``output/training_summary.json``); ``passed`` is whether the
    mean greedy return reaches ``passing_score_bar`` (None when no bar is set).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small online minibatches: extra threads only contend (10-100x slower when loaded)
    try:
        return _gym_train(config, output, resolve_device(device or config.resolved_device))
    finally:
        torch.set_num_threads(threads)


class _Harness:
    """One run's environment, replay buffer, preprocessor, trainer and counters.

    Constructing it does step 1: the buffer prefilled by a uniformly random policy, the normalization
    identified from those states, the Preprocessor, and the registry's trainer (torch seeded first).
    """

    def __init__(self, config: GymTrainConfig, output: str, dev: torch.device):
        self.config, self.output, self.dev = config, output, dev
        self.env = make_env(config.env, config.max_steps)
        self.spaces = _spaces(self.env, config)
        self.action_space = self.env.action_space
        self.rng = np.random.default_rng(config.seed)
        self.action_space.seed(config.seed)
        self.scaler = None if self.spaces.bounds is None else ActionScaler(*self.spaces.bounds)
        discrete = self.spaces.discrete
        self.buffer = ReplayBuffer(config.replay_memory_size, self.spaces.obs_dim,
                                   None if discrete else self.spaces.action_dim, self.spaces.action_dim if discrete else 0)
        self.episode_seed = config.seed
        self.env_steps = self.updates = self.steps_since_train = 0
        self.train_seconds = 0.0
        self.last_losses: dict[str, float] = {}
        if storage.exists(f"{output}/tensorboard"):  # a previous run's events (after the checks above)
            storage.delete(f"{output}/tensorboard")
        self._prefill()
        self.normalization = identify_states(self.buffer.state[: len(self.buffer)], config)
        self.preprocessor = Preprocessor(self.normalization, sorted(self.normalization)).to(dev)
        self.transform = preprocess_fn(self.preprocessor)
        torch.manual_seed(config.seed)
        self.trainer: Trainer = build_trainer(config.model, self.preprocessor.output_dim, self.spaces.action_dim,
                                              device=dev, seed=config.seed)

    def to_env(self, index_or_action: Any) -> Any:
        """A model action (index, or a vector in [-1, 1]^d) -> the environment's action."""
        if self.scaler is None:  # discrete actions
            return self.spaces.first_action + int(index_or_action)
        env_units = self.scaler(torch.as_tensor(index_or_action, dtype=torch.float32)).numpy()
        return env_units.reshape(self.action_space.shape)

    def _prefill(self) -> None:
        """``train_after_ts`` transitions of a uniformly random policy into the buffer."""
        config, spaces, env = self.config, self.spaces, self.env
        obs, _ = env.reset(seed=self.episode_seed)
        start_of_episode = True
        with Progress(config.train_after_ts, f"prefill {config.env}", "steps") as bar:
            while len(self.buffer) < config.train_after_ts:
                action = (int(self.rng.integers(spaces.action_dim)) if spaces.discrete
                          else self.rng.uniform(-1.0, 1.0, spaces.action_dim).astype(np.float32))
                next_obs, reward, terminated, truncated, _ = env.step(self.to_env(action))
                self.buffer.add(np.ravel(obs), action, float(reward), np.ravel(next_obs), bool(terminated),
                                start_of_episode)
                start_of_episode = False
                obs = next_obs
                if terminated or truncated:
                    self.buffer.end_episode()
                    self.episode_seed += 1
                    obs, _ = env.reset(seed=self.episode_seed)
                    start_of_episode = True
                bar.update(1)
        self.env_steps = len(self.buffer)

    @torch.no_grad()
    def greedy(self, observation: np.ndarray) -> Any:
        """The environment action of the greedy (deterministic) policy being trained."""
        out = self.trainer.q_network(network_input(self.preprocessor, observation, self.dev)).float()
        return self.to_env(int(out.argmax(dim=1)[0]) if self.spaces.discrete else out[0].cpu().numpy())

    def explore(self, observation: np.ndarray) -> tuple[Any, float | None]:
        """(model action, epsilon or None) of the exploring policy (``exploration`` for discrete actions,
        the trainer's own noise for continuous ones)."""
        x = network_input(self.preprocessor, observation, self.dev)
        if not self.spaces.discrete:
            return cast(ActingTrainer, self.trainer).act(x, explore=True)[0].cpu().numpy(), None
        with torch.no_grad():
            q = self.trainer.q_network(x).float().cpu().numpy()[0]
        e = self.config.exploration.chosen
        if isinstance(e, Softmax):
            return explore_discrete(q, self.rng, temperature=e.temperature), None
        epsilon = linear_epsilon(self.env_steps - self.config.train_after_ts, e.start, e.end, e.decay_steps)
        return explore_discrete(q, self.rng, epsilon=epsilon), epsilon

    def train_step(self, tensorboard: TensorBoardLog) -> None:
        """One minibatch from the buffer to the trainer; every LOG_EVERY_UPDATES, log and check the losses."""
        started = time.perf_counter()
        terms = self.trainer.update(self.transform(self.buffer.sample(self.config.batch_size, self.rng, self.dev)))
        self.train_seconds += time.perf_counter() - started
        self.updates += 1
        if self.updates % LOG_EVERY_UPDATES == 0:
            self.last_losses = {k: float(v) for k, v in terms.items()}
            check_finite(self.last_losses, f"at environment step {self.env_steps}", self.output)
            tensorboard.scalars({f"train/{k}": v for k, v in self.last_losses.items()}, self.env_steps)

    def episode(self, tensorboard: TensorBoardLog) -> float:
        """Step 2, one training episode of the exploring policy (one epoch for the schedules); its return."""
        self.episode_seed += 1
        obs, _ = self.env.reset(seed=self.episode_seed)
        total, length, done, epsilon = 0.0, 0, False, None
        while not done:
            action, epsilon = self.explore(obs)
            next_obs, reward, terminated, truncated, _ = self.env.step(self.to_env(action))
            self.buffer.add(np.ravel(obs), action, float(reward), np.ravel(next_obs), bool(terminated), length == 0)
            obs, total, length, self.env_steps = next_obs, total + float(reward), length + 1, self.env_steps + 1
            done = bool(terminated or truncated)
            self.steps_since_train += 1
            if self.steps_since_train >= self.config.train_every_ts:
                self.steps_since_train = 0
                self.train_step(tensorboard)
        self.buffer.end_episode()
        self.trainer.end_epoch()  # learning-rate schedules: one training episode = one epoch
        scalars = {"episode/return": total, "episode/length": float(length)}
        if epsilon is not None:
            scalars["exploration/epsilon"] = epsilon
        tensorboard.scalars(scalars, self.env_steps)
        return total


@dataclass
class _KeepBest:
    """``keep_best``'s greedy checks during training and the best policy's serving-network state."""

    checks: list[dict[str, float]]
    best: tuple[int, float, dict[str, Any]] | None = None  # (episode, mean return, serving network state)
    check_steps: int = 0

    def check(self, harness: _Harness, settings: KeepBest, episode: int, tensorboard: TensorBoardLog) -> None:
        config = harness.config
        mean, steps = greedy_check(config.env, config.max_steps, harness.greedy, settings.episodes,
                                   config.seed + CHECK_SEED_OFFSET)
        self.check_steps += steps
        self.checks.append({"episode": episode, "mean_return": mean})
        tensorboard.scalars({"check/mean_return": mean}, harness.env_steps)
        if self.best is None or mean >= self.best[1]:  # ties: the later policy, trained longer
            self.best = (episode, mean, copy.deepcopy(harness.trainer.q_network.state_dict()))

    def summary(self) -> dict[str, Any] | None:
        if self.best is None:
            return None
        return {"episode": self.best[0], "mean_return": self.best[1], "checks": self.checks,
                "check_env_steps": self.check_steps}


def _train_episodes(harness: _Harness, tensorboard: TensorBoardLog) -> tuple[list[float], _KeepBest]:
    """Step 2: the training episodes, with ``keep_best``'s checks; the best policy restored at the end."""
    config, keep_best = harness.config, _KeepBest([])
    returns: list[float] = []
    log.info("gym-train: %s on %s (%s), %d prefill transitions, %d training episodes", config.model.name,
             config.env, harness.dev, harness.env_steps, config.num_train_episodes)
    with Progress(config.num_train_episodes, f"train {config.model.name} on {config.env}", "episodes") as bar:
        for episode in range(1, config.num_train_episodes + 1):
            returns.append(harness.episode(tensorboard))
            bar.update(1)
            if config.keep_best is not None and episode % config.keep_best.every_episodes == 0:
                keep_best.check(harness, config.keep_best, episode, tensorboard)
            if episode % 10 == 0:
                log.info("episode %d/%d: return %.1f (mean of last 10: %.1f), %d env steps, %d updates", episode,
                         config.num_train_episodes, returns[-1], float(np.mean(returns[-10:])), harness.env_steps,
                         harness.updates)
    if keep_best.best is not None:
        harness.trainer.q_network.load_state_dict(keep_best.best[2])
        log.info("keep_best: exporting the policy of episode %d (mean greedy check return %.2f)", keep_best.best[0],
                 keep_best.best[1])
    return returns, keep_best


def _gym_train(config: GymTrainConfig, output: str, dev: torch.device) -> dict[str, Any]:
    started = time.perf_counter()
    output = output.rstrip("/")
    harness = _Harness(config, output, dev)
    try:
        tensorboard = TensorBoardLog(output)
        returns, keep_best = _train_episodes(harness, tensorboard)
    finally:
        harness.env.close()

    # 3. export and greedy evaluation of the exported policy
    params = config.model.value.trainer_param
    metadata = {"algorithm": config.model.name, "env": config.env, "seed": config.seed, "online": True,
                "gamma": params.rl.gamma, "temperature": params.rl.temperature,
                "softmax_policy": params.rl.softmax_policy, "batchrl_version": __version__}
    paths = {"model": f"{output}/{MODEL_FILE}", "normalization": f"{output}/{NORMALIZATION_FILE}",
             "tensorboard": f"{output}/tensorboard", "summary": f"{output}/{SUMMARY_FILE}"}
    normalization = harness.normalization
    export_policy(paths["model"], harness.trainer, harness.preprocessor.cpu(), harness.spaces.action_names,
                  sorted(normalization), to_json_dict(normalization), metadata,
                  action_bounds=harness.spaces.bounds)
    write_normalization(paths["normalization"], normalization)
    eval_returns = evaluate_policy(paths["model"], config)
    mean = float(eval_returns.mean())
    tensorboard.scalars({"eval/mean_return": mean}, harness.env_steps)
    tensorboard.close()
    bar_value = config.passing_score_bar
    summary = {
        "algorithm": config.model.name, "env": config.env, "device": str(dev), "seed": config.seed,
        "env_steps": harness.env_steps, "prefill_steps": config.train_after_ts,
        "train_episodes": config.num_train_episodes, "updates": harness.updates, "minibatch_size": config.batch_size,
        "train_returns_last_10": float(np.mean(returns[-10:])) if returns else None,
        "train_returns": returns, "final_losses": harness.last_losses, "keep_best": keep_best.summary(),
        "eval": {"episodes": len(eval_returns), "mean": mean, "std": float(eval_returns.std()),
                 "min": float(eval_returns.min()), "max": float(eval_returns.max())},
        "passing_score_bar": bar_value, "passed": None if bar_value is None else mean >= bar_value,
        "gamma": metadata["gamma"], "temperature": metadata["temperature"],
        "action_names": harness.spaces.action_names, "feature_ids": sorted(normalization),
        "train_seconds": round(harness.train_seconds, 2), "seconds": round(time.perf_counter() - started, 2),
        "paths": paths, "config": config.model_dump(mode="json"),
    }
    storage.write_json(paths["summary"], summary)
    log.info("gym-train: greedy mean return %.2f +- %.2f over %d episodes (bar %s)", mean, float(eval_returns.std()),
             len(eval_returns), bar_value)
    return {k: v for k, v in summary.items() if k not in ("train_returns", "config")}
