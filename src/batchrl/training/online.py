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

Episodes cut by the time limit (truncated) still bootstrap: ``not_terminal`` is False only when the
environment terminated.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from batchrl import __version__, storage
from batchrl.data.loader import Batch
from batchrl.errors import BatchRLError
from batchrl.models.builders import build_network
from batchrl.models.continuous import ActionScaler
from batchrl.preprocessing.identify import IdentifyOptions, identify_feature
from batchrl.preprocessing.normalization import Normalization, to_json_dict, write_normalization
from batchrl.preprocessing.preprocessor import Preprocessor
from batchrl.progress import Progress
from batchrl.serving.export import export_model, load_policy
from batchrl.training.continuous import build_continuous_trainer, export_actor
from batchrl.training.gym_config import GymTrainConfig
from batchrl.training.loop import TensorBoardLog

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

    def add(self, state: np.ndarray, action, reward: float, next_state: np.ndarray, terminated: bool,
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
    opts = model.state_options if config.model.continuous else model.preprocessing_options
    identify = IdentifyOptions(max_unique_enum_values=opts.max_unique_enum_values, quantile_size=opts.quantile_size,
                               quantile_k2_threshold=opts.quantile_k2_threshold, skip_box_cox=opts.skip_box_cox,
                               skip_quantiles=opts.skip_quantiles,
                               **({"stddev_floor": opts.stddev_floor} if opts.stddev_floor else {}))
    sample = states[: opts.num_samples]
    overrides = opts.feature_overrides or {}
    return {i: identify_feature(sample[:, i], identify, overrides.get(i), feature=f"observation {i}")
            for i in range(states.shape[1])}


# ---------------------------------------------------------------- trainers


def build_trainer(config: GymTrainConfig, input_dim: int, action_dim: int, device: torch.device):
    """The configured trainer with fresh networks (torch seeded by the caller)."""
    model, name = config.model.value, config.model.name
    if config.model.continuous:
        return build_continuous_trainer(model, input_dim, action_dim, device=device, seed=config.seed)
    if name == "DiscreteDQN":
        from batchrl.training.dqn import DQNTrainer

        return DQNTrainer(build_network(model.net_builder, input_dim, action_dim), model.trainer_param,
                          device=device)
    if name == "DiscreteCQL":
        from batchrl.training.cql import cql_trainer

        return cql_trainer(build_network(model.net_builder, input_dim, action_dim), model.trainer_param,
                           device=device)
    from batchrl.training.algorithms import build_algorithm_trainer

    return build_algorithm_trainer(model, input_dim, device=device)


# ---------------------------------------------------------------- export and evaluation


def export_policy(uri: str, config: GymTrainConfig, trainer, preprocessor: Preprocessor, normalization: Normalization,
                  action_names: list[str], action_space, metadata: dict) -> None:
    """Write ``model.torchscript``: ``(values float32[B, F], presence float32[B, F]) -> (names, out)``.

    Discrete actions: ``out`` = Q-values float32[B, A] (spec section 8). Continuous actions (SAC/TD3):
    ``out`` = the deterministic action float32[B, d] in the environment's units ([low, high] per
    dimension) and ``names`` = ["0", ..., "d-1"], the action dimensions; metadata ``output: actions``.
    """
    feature_ids = sorted(normalization)
    norm_json = to_json_dict(normalization)
    if config.model.continuous:
        export_actor(uri, preprocessor, trainer.actor, action_space.low.reshape(-1).tolist(),
                     action_space.high.reshape(-1).tolist(), action_names, feature_ids, norm_json, metadata)
    else:
        export_model(uri, preprocessor, trainer.q_network, action_names, feature_ids, norm_json,
                     {**metadata, "output": "q_values", "action_space": "discrete"})


def evaluate_policy(uri: str, config: GymTrainConfig) -> np.ndarray:
    """Greedy returns of the exported policy at ``uri`` over ``num_eval_episodes`` episodes."""
    from batchrl.evaluation.rollouts import greedy_rollouts

    return greedy_rollouts(load_policy(uri), config.env, config.num_eval_episodes, config.seed + EVAL_SEED_OFFSET,
                           max_steps=config.max_steps).returns


def greedy_check(env_id: str, max_steps: int | None, act, episodes: int, seed: int) -> tuple[float, int]:
    """(mean return, environment steps) of ``episodes`` episodes of ``act`` (observation -> env action)."""
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


def make_env(env_id: str, max_steps: int | None):
    import gymnasium as gym

    try:
        return gym.make(env_id, **({"max_episode_steps": max_steps} if max_steps else {}))
    except gym.error.Error as exc:
        raise BatchRLError(f"unknown gymnasium environment '{env_id}'", fix="use a registered id such as "
                           "CartPole-v0, CartPole-v1 or Pendulum-v1") from exc


@dataclass
class _Spaces:
    obs_dim: int
    action_dim: int  # discrete: number of actions; continuous: dimensions
    action_names: list[str]
    discrete: bool


def _spaces(env, config: GymTrainConfig) -> _Spaces:
    import gymnasium as gym

    obs_space, action_space = env.observation_space, env.action_space
    if not isinstance(obs_space, gym.spaces.Box):
        raise BatchRLError(f"{config.env} has a {type(obs_space).__name__} observation space",
                           where="env", fix="use an environment with a Box (vector) observation space")
    obs_dim = int(np.prod(obs_space.shape))
    if isinstance(action_space, gym.spaces.Discrete):
        if config.model.continuous:
            raise BatchRLError(f"{config.model.name} needs continuous actions; {config.env} has discrete ones",
                               where="model", fix="use a discrete algorithm (e.g. DiscreteDQN) for this env")
        names = [str(int(action_space.start) + i) for i in range(int(action_space.n))]
        actions = config.model.value.trainer_param.actions
        if actions != names:
            raise BatchRLError(f"trainer_param.actions {actions} differ from {config.env}'s actions {names}",
                               where="model.trainer_param.actions", fix=f"set actions: {names}")
        return _Spaces(obs_dim, len(names), names, True)
    if isinstance(action_space, gym.spaces.Box):
        if not config.model.continuous:
            raise BatchRLError(f"{config.model.name} needs discrete actions; {config.env} has a Box action space",
                               where="model", fix="use SAC or TD3 for continuous actions")
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise BatchRLError(f"{config.env}'s action space is unbounded", where="env",
                               fix="use an environment with finite action bounds")
        dim = int(np.prod(action_space.shape))
        return _Spaces(obs_dim, dim, [str(i) for i in range(dim)], False)
    raise BatchRLError(f"unsupported action space {action_space} in {config.env}", where="env",
                       fix="use an environment with a Discrete or Box action space")


def _check_finite(terms: dict[str, float], step: int, where: str) -> None:
    bad = [name for name, value in terms.items() if not math.isfinite(value)]
    if bad:
        raise BatchRLError(f"training diverged: {', '.join(bad)} became non-finite at environment step {step}",
                           where=where, fix="lower the learning rate, use rl.q_network_loss: huber or a smaller "
                           "rl.target_update_rate")


def gym_train(config: GymTrainConfig, output: str, device: str | None = None) -> dict:
    """Train online in ``config.env``, export the policy to ``output``, evaluate it greedily.

    Returns the summary (also written to ``output/training_summary.json``); ``passed`` is whether the
    mean greedy return reaches ``passing_score_bar`` (None when no bar is set).
    """
    from batchrl.training.train import resolve_device

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small online minibatches: extra threads only contend (10-100x slower when loaded)
    try:
        return _gym_train(config, output, resolve_device(device or config.resolved_device))
    finally:
        torch.set_num_threads(threads)


def _gym_train(config: GymTrainConfig, output: str, dev: torch.device) -> dict:
    started = time.perf_counter()
    output = output.rstrip("/")
    env = make_env(config.env, config.max_steps)
    spaces = _spaces(env, config)
    action_space = env.action_space
    rng = np.random.default_rng(config.seed)
    action_space.seed(config.seed)
    scaler = None if spaces.discrete else ActionScaler(action_space.low.reshape(-1).tolist(),
                                                         action_space.high.reshape(-1).tolist())
    buffer = ReplayBuffer(config.replay_memory_size, spaces.obs_dim, None if spaces.discrete else spaces.action_dim,
                          spaces.action_dim if spaces.discrete else 0)
    if storage.exists(f"{output}/tensorboard"):
        storage.delete(f"{output}/tensorboard")
    episode_seed = config.seed

    def to_env(index_or_action):
        if spaces.discrete:
            return int(action_space.start) + int(index_or_action)
        env_units = scaler(torch.as_tensor(index_or_action, dtype=torch.float32)).numpy()
        return env_units.reshape(action_space.shape)

    # 1. prefill with a uniformly random policy
    obs, _ = env.reset(seed=episode_seed)
    start_of_episode = True
    with Progress(config.train_after_ts, f"prefill {config.env}", "steps") as bar:
        while len(buffer) < config.train_after_ts:
            action = (int(rng.integers(spaces.action_dim)) if spaces.discrete
                      else rng.uniform(-1.0, 1.0, spaces.action_dim).astype(np.float32))
            next_obs, reward, terminated, truncated, _ = env.step(to_env(action))
            buffer.add(np.ravel(obs), action, float(reward), np.ravel(next_obs), bool(terminated), start_of_episode)
            start_of_episode = False
            obs = next_obs
            if terminated or truncated:
                buffer.end_episode()
                episode_seed += 1
                obs, _ = env.reset(seed=episode_seed)
                start_of_episode = True
            bar.update(1)
    env_steps = len(buffer)

    normalization = identify_states(buffer.state[: len(buffer)], config)
    preprocessor = Preprocessor(normalization, sorted(normalization)).to(dev)
    torch.manual_seed(config.seed)
    trainer = build_trainer(config, preprocessor.output_dim, spaces.action_dim, dev)

    @torch.no_grad()
    def transform(batch: Batch) -> Batch:
        from dataclasses import replace

        return replace(batch, state=preprocessor(batch.state, batch.state_presence), state_presence=None,
                       next_state=preprocessor(batch.next_state, batch.next_state_presence), next_state_presence=None)

    @torch.no_grad()
    def network_input(observation: np.ndarray) -> torch.Tensor:
        values = torch.as_tensor(np.ravel(observation), dtype=torch.float32, device=dev).unsqueeze(0)
        return preprocessor(values, torch.ones_like(values))

    @torch.no_grad()
    def greedy(observation: np.ndarray):
        x = network_input(observation)
        if spaces.discrete:
            return to_env(int(trainer.q_network(x).float().argmax(dim=1)[0]))
        return to_env(trainer.act(x, explore=False)[0].cpu().numpy())

    keep_best = config.keep_best
    checks: list[dict[str, float]] = []
    best: tuple[int, float, dict] | None = None  # (episode, mean return, serving network state)
    check_steps = 0

    exploration = config.exploration
    tensorboard = TensorBoardLog(output)
    episode_returns: list[float] = []
    updates, train_seconds, steps_since_train = 0, 0.0, 0
    last_losses: dict[str, float] = {}
    log.info("gym-train: %s on %s (%s), %d prefill transitions, %d training episodes", config.model.name,
             config.env, dev, env_steps, config.num_train_episodes)
    try:
        # 2. training episodes
        with Progress(config.num_train_episodes, f"train {config.model.name} on {config.env}", "episodes") as bar:
            for episode in range(config.num_train_episodes):
                episode_seed += 1
                obs, _ = env.reset(seed=episode_seed)
                total, length, done = 0.0, 0, False
                epsilon = None
                while not done:
                    x = network_input(obs)
                    if spaces.discrete:
                        with torch.no_grad():
                            q = trainer.q_network(x).float().cpu().numpy()[0]
                        explored = env_steps - config.train_after_ts
                        if exploration.name == "softmax":
                            action = explore_discrete(q, rng, temperature=exploration.softmax.temperature)
                        else:
                            e = exploration.epsilon_greedy
                            epsilon = linear_epsilon(explored, e.start, e.end, e.decay_steps)
                            action = explore_discrete(q, rng, epsilon=epsilon)
                    else:
                        action = trainer.act(x, explore=True)[0].cpu().numpy()
                    next_obs, reward, terminated, truncated, _ = env.step(to_env(action))
                    buffer.add(np.ravel(obs), action, float(reward), np.ravel(next_obs), bool(terminated), length == 0)
                    obs, total, length, env_steps = next_obs, total + float(reward), length + 1, env_steps + 1
                    done = bool(terminated or truncated)
                    steps_since_train += 1
                    if steps_since_train >= config.train_every_ts:
                        steps_since_train = 0
                        t0 = time.perf_counter()
                        terms = trainer.update(transform(buffer.sample(config.batch_size, rng, dev)))
                        train_seconds += time.perf_counter() - t0
                        updates += 1
                        if updates % LOG_EVERY_UPDATES == 0:
                            last_losses = {k: float(v) for k, v in terms.items()}
                            _check_finite(last_losses, env_steps, output)
                            tensorboard.scalars({f"train/{k}": v for k, v in last_losses.items()}, env_steps)
                buffer.end_episode()
                trainer.end_epoch()  # learning-rate schedules: one training episode = one epoch
                episode_returns.append(total)
                scalars = {"episode/return": total, "episode/length": float(length)}
                if epsilon is not None:
                    scalars["exploration/epsilon"] = epsilon
                tensorboard.scalars(scalars, env_steps)
                bar.update(1)
                if keep_best is not None and (episode + 1) % keep_best.every_episodes == 0:
                    mean, steps = greedy_check(config.env, config.max_steps, greedy, keep_best.episodes,
                                               config.seed + CHECK_SEED_OFFSET)
                    check_steps += steps
                    checks.append({"episode": episode + 1, "mean_return": mean})
                    tensorboard.scalars({"check/mean_return": mean}, env_steps)
                    if best is None or mean >= best[1]:  # ties: the later policy, trained longer
                        best = (episode + 1, mean, copy.deepcopy(trainer.q_network.state_dict()))
                if (episode + 1) % 10 == 0:
                    log.info("episode %d/%d: return %.1f (mean of last 10: %.1f), %d env steps, %d updates",
                             episode + 1, config.num_train_episodes, total, float(np.mean(episode_returns[-10:])),
                             env_steps, updates)
    finally:
        env.close()
    if best is not None:
        trainer.q_network.load_state_dict(best[2])
        log.info("keep_best: exporting the policy of episode %d (mean greedy check return %.2f)", best[0], best[1])

    # 3. export and greedy evaluation of the exported policy
    metadata = {"algorithm": config.model.name, "env": config.env, "seed": config.seed, "online": True,
                "gamma": config.model.value.trainer_param.rl.gamma,
                "temperature": config.model.value.trainer_param.rl.temperature,
                "softmax_policy": config.model.value.trainer_param.rl.softmax_policy,
                "batchrl_version": __version__}
    paths = {"model": f"{output}/{MODEL_FILE}", "normalization": f"{output}/{NORMALIZATION_FILE}",
             "tensorboard": f"{output}/tensorboard", "summary": f"{output}/{SUMMARY_FILE}"}
    export_policy(paths["model"], config, trainer, preprocessor.cpu(), normalization, spaces.action_names,
                  action_space, metadata)
    write_normalization(paths["normalization"], normalization)
    returns = evaluate_policy(paths["model"], config)
    mean = float(returns.mean())
    tensorboard.scalars({"eval/mean_return": mean}, env_steps)
    tensorboard.close()
    bar_value = config.passing_score_bar
    summary = {
        "algorithm": config.model.name, "env": config.env, "device": str(dev), "seed": config.seed,
        "env_steps": env_steps, "prefill_steps": config.train_after_ts, "train_episodes": config.num_train_episodes,
        "updates": updates, "minibatch_size": config.batch_size,
        "train_returns_last_10": float(np.mean(episode_returns[-10:])) if episode_returns else None,
        "train_returns": episode_returns, "final_losses": last_losses,
        "keep_best": None if best is None else {"episode": best[0], "mean_return": best[1], "checks": checks,
                                                 "check_env_steps": check_steps},
        "eval": {"episodes": len(returns), "mean": mean, "std": float(returns.std()),
                 "min": float(returns.min()), "max": float(returns.max())},
        "passing_score_bar": bar_value, "passed": None if bar_value is None else mean >= bar_value,
        "gamma": metadata["gamma"], "temperature": metadata["temperature"],
        "action_names": spaces.action_names, "feature_ids": sorted(normalization),
        "train_seconds": round(train_seconds, 2), "seconds": round(time.perf_counter() - started, 2),
        "paths": paths, "config": config.model_dump(mode="json"),
    }
    storage.write_json(paths["summary"], summary)
    log.info("gym-train: greedy mean return %.2f +- %.2f over %d episodes (bar %s)", mean, float(returns.std()),
             len(returns), bar_value)
    return {k: v for k, v in summary.items() if k not in ("train_returns", "config")}
