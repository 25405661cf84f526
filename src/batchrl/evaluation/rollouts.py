"""Greedy rollouts of an exported policy in a gymnasium environment (spec section 8).

Episodes run in vectors of environments (gymnasium's native vector env where one exists, e.g.
CartPole), ``num_envs`` at a time; each environment of a vector plays exactly one episode, so the
episodes are not biased toward short ones. The vector holding episodes k.. is reset with seed
````seed + k``, so the same seed and ``num_envs`` give the same returns. Observation index i is feature
id i. Discrete actions: the argmax of the Q-values over the possible actions (an environment's
``info["action_mask"]`` when it provides one). Continuous actions: the exported actor's output, already
in the environment's units.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from batchrl.errors import BatchRLError
from batchrl.models.policy import masked_argmax
from batchrl.progress import Progress
from batchrl.serving.export import LoadedModel

if TYPE_CHECKING:
    from gymnasium import Space

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rollouts:
    """Per-episode results, in episode order."""

    returns: np.ndarray
    discounted_returns: np.ndarray
    lengths: np.ndarray


def env_actions(action_names: list[str]) -> np.ndarray:
    """The environment's action for each model action: the integer each name spells ("0" -> 0)."""
    try:
        return np.array([int(name) for name in action_names], dtype=np.int64)
    except ValueError:
        raise BatchRLError(f"the model's actions {action_names} are not gymnasium action indices",
                           fix="evaluate in an environment only models trained on that environment's "
                               "logged data (actions named '0', '1', ...)") from None


def _observation_columns(feature_ids: list[int], obs_dim: int, env_id: str) -> np.ndarray:
    columns = np.asarray(feature_ids, dtype=np.int64)
    if len(columns) and (columns.min() < 0 or columns.max() >= obs_dim):
        raise BatchRLError(f"the model reads feature ids {feature_ids}, but {env_id} observations have "
                           f"{obs_dim} values (feature id i = observation index i)",
                           fix="evaluate in the environment whose logged data trained the model")
    return columns


def greedy_rollouts(policy: LoadedModel, env_id: str, episodes: int, seed: int, gamma: float = 1.0,
                    num_envs: int = 16, max_steps: int | None = None) -> Rollouts:
    """Play ``episodes`` episodes with the greedy policy; returns undiscounted and discounted returns."""
    import gymnasium as gym

    from batchrl.data.gym_logging import make_envs

    continuous = policy.continuous
    mapping = None if continuous else env_actions(policy.action_names)
    space = gym.spaces.Box if continuous else gym.spaces.Discrete
    try:
        limit = max_steps or gym.spec(env_id).max_episode_steps
    except gym.error.Error:
        limit = max_steps  # make_envs reports the unknown id
    if not limit and gym.envs.registration.registry.get(env_id) is not None:
        raise BatchRLError(f"{env_id} has no episode time limit, so a greedy policy may never end an episode",
                           fix="set a time limit (max_steps / --max-steps)")
    returns, discounted, lengths = [], [], []
    with Progress(episodes, f"evaluate {env_id}", "episodes") as bar:
        for start in range(0, episodes, num_envs):
            count = min(num_envs, episodes - start)
            envs = make_envs(env_id, count, max_steps)
            try:
                if not isinstance(envs.single_action_space, space):
                    kind = "continuous" if continuous else "discrete"
                    raise BatchRLError(f"{env_id} has a {type(envs.single_action_space).__name__} action "
                                       f"space; this model's actions are {kind}",
                                       fix=f"evaluate {kind}-action models in {kind}-action environments")
                obs, info = envs.reset(seed=seed + start)
                flat = np.asarray(obs, dtype=np.float32).reshape(count, -1)
                columns = _observation_columns(policy.feature_ids, flat.shape[1], env_id)
                total = np.zeros(count)
                disc_total = np.zeros(count)
                steps = np.zeros(count, dtype=np.int64)
                running = np.ones(count, dtype=bool)
                while running.any():
                    actions = _actions(policy.outputs(flat[:, columns]), info, mapping, envs.single_action_space)
                    obs, reward, terminated, truncated, info = envs.step(actions)
                    total[running] += reward[running]
                    disc_total[running] += gamma ** steps[running] * reward[running]
                    steps[running] += 1
                    ended = running & (terminated | truncated)
                    bar.update(int(ended.sum()))
                    running &= ~ended
                    flat = np.asarray(obs, dtype=np.float32).reshape(count, -1)
            finally:
                envs.close()
            returns.append(total)
            discounted.append(disc_total)
            lengths.append(steps)
    result = Rollouts(np.concatenate(returns), np.concatenate(discounted), np.concatenate(lengths))
    log.info("%s: mean return %.2f over %d greedy episodes", env_id, float(result.returns.mean()), episodes)
    return result


def _actions(out: torch.Tensor, info: dict[str, Any], mapping: np.ndarray | None, action_space: Space[Any]
             ) -> np.ndarray:
    """The environments' actions from the model's outputs: continuous ones as they are (shaped like the
    action space), discrete ones by argmax over the possible actions."""
    from gymnasium.spaces import Box, Discrete

    # greedy_rollouts runs continuous models (no mapping) only in Box envs, discrete ones only in Discrete envs
    count = out.shape[0]
    if mapping is None:
        assert isinstance(action_space, Box)
        return out.numpy().astype(action_space.dtype).reshape(count, *action_space.shape)
    mask = torch.ones_like(out, dtype=torch.bool)
    if "action_mask" in info:
        env_mask = np.asarray(info["action_mask"], dtype=bool).reshape(count, -1)
        assert isinstance(action_space, Discrete)
        mask = torch.from_numpy(env_mask[:, mapping - int(action_space.start)])
    actions: np.ndarray = mapping[masked_argmax(out, mask).numpy()]
    return actions
