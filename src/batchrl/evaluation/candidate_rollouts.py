"""Rollouts in a candidate-set environment (e.g. ``batchrl/Recommendation-v0``): an exported parametric
policy (greedy over its candidate scores) and the baselines ``logging`` (the logging policy of the
workflow, e.g. the softmax over the simulator's item score), ``myopic`` (argmax of the immediate expected
reward) and ``random``, each over the same evaluation episodes: episode i starts from ``reset(seed + i)``;
the baselines draw their choices from a generator seeded with ``seed``.

Returns per policy: mean return (with a 95% bootstrap interval), discounted return and episode length.
:func:`simulated_one_step_value` gives the one-step estimators (DR) their simulated counterpart: the target
policy's expected immediate reward on the logged states, from the environment's expected rewards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from batchrl.data.gym_logging import make_env, policy_rng
from batchrl.data.parametric_logging import candidate_policy, is_parametric, softmax, split_observation
from batchrl.errors import BatchRLError
from batchrl.evaluation.estimators.core import single_thread
from batchrl.evaluation.rollouts import Rollouts
from batchrl.progress import Progress
from batchrl.serving.export import LoadedModel

log = logging.getLogger(__name__)

#: (user [S], candidates [K, F]) -> the chosen candidate's index
Chooser = Callable[[np.ndarray, np.ndarray], int]

BASELINES = ("logging", "myopic", "random")


def _model_ids(policy: LoadedModel, user_dim: int, item_dim: int) -> tuple[list[int], list[int]]:
    """The model's state and item feature ids, which index the user vector and the item rows."""
    ids, item_ids = policy.feature_ids, [int(i) for i in policy.metadata.get("action_feature_ids", [])]
    if (ids and max(ids) >= user_dim) or (item_ids and max(item_ids) >= item_dim):
        raise BatchRLError(f"the model reads state ids {ids} and item ids {item_ids}, but the environment has "
                           f"{user_dim} user and {item_dim} item features",
                           fix="evaluate in the environment whose logged data trained the model")
    return ids, item_ids


def model_chooser(policy: LoadedModel, user_dim: int, item_dim: int, k_max: int, temperature: float = 0.0,
                  seed: int = 0) -> Chooser:
    """Greedy over the exported model's scores (``temperature`` > 0: a draw from softmax(scores / temperature),
    the policy CPE evaluates); feature id i = index i of the user vector / item row."""
    ids, item_ids = _model_ids(policy, user_dim, item_dim)
    rng = policy_rng(seed)  # not the stream reset(seed) gives the environment
    padded, mask = np.zeros((1, k_max, len(item_ids)), dtype=np.float32), np.zeros((1, k_max), dtype=bool)

    def choose(user: np.ndarray, candidates: np.ndarray) -> int:
        # one input shape for every call (K padded to k_max): TorchScript specializes on shapes
        k = len(candidates)
        padded[:] = 0.0
        padded[0, :k] = candidates[:, item_ids]
        mask[:] = False
        mask[0, :k] = True
        scores = policy.candidate_scores(user[None, ids], padded, mask)[0, :k].double().numpy()
        if temperature <= 0:
            return int(scores.argmax())
        p = softmax(scores, temperature)
        return min(int(np.searchsorted(np.cumsum(p), rng.random(), side="right")), len(p) - 1)

    return choose


def _candidate_env(env_id: str) -> tuple[Any, Any]:
    """(the observation space, the unwrapped environment); a BatchRLError unless it is a candidate-set one."""
    env = make_env(env_id)
    space: Any = env.observation_space
    base = env.unwrapped
    env.close()
    if not is_parametric(space):
        raise BatchRLError(f"{env_id} is not a candidate-set environment (its observation is not a Dict with user, "
                           "candidates and mask), but the model scores candidate items",
                           fix="evaluate parametric models in the environment whose logged data trained them")
    return space, base


def simulated_one_step_value(env_id: str, policy: LoadedModel, state: np.ndarray, candidates: np.ndarray,
                             probs: np.ndarray) -> float | None:
    """The target policy's expected immediate reward on logged states, as the simulator knows it:

        V_1 = (1/N) sum_i sum_k pi(k|s_i) r(s_i, a_ik)

    with r(s, a) the environment's ``expected_rewards(user, candidates)`` (e.g. the click probability) and
    pi(.|s_i) over row i's candidates (padding has probability 0). This is what one-step DR estimates from
    the same rows. ``state`` [N, S] and ``candidates`` [N, K, A] are the eval table's raw features in the
    model's feature-id order (state id i = user index i, item id j = item column j); ``probs`` [N, K].
    None when the environment does not expose ``expected_rewards``."""
    space, base = _candidate_env(env_id)
    expected_rewards = getattr(base, "expected_rewards", None)
    if expected_rewards is None:
        return None
    ids, item_ids = _model_ids(policy, space["user"].shape[0], space["candidates"].shape[1])
    user = np.zeros((len(state), space["user"].shape[0]))
    user[:, ids] = state
    items = np.zeros((*candidates.shape[:2], space["candidates"].shape[1]))
    items[:, :, item_ids] = candidates
    rewards = np.asarray(expected_rewards(user, items), dtype=np.float64)
    return float((probs * np.where(probs > 0, rewards, 0.0)).sum(axis=1).mean())


def play(env_id: str, choose: Chooser, episodes: int, seed: int, gamma: float, max_steps: int | None = None,
         label: str = "evaluate") -> Rollouts:
    """``episodes`` episodes with ``choose``; episode i from ``reset(seed=seed + i)``."""
    env = make_env(env_id, max_steps)
    returns, discounted, lengths = np.zeros(episodes), np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    try:  # one state per model call: one thread (core.single_thread)
        with Progress(episodes, f"{label} {env_id}", "episodes") as bar, single_thread():
            for i in range(episodes):
                obs, _ = env.reset(seed=seed + i)
                done = False
                while not done:
                    user, candidates = split_observation(obs)
                    obs, reward, terminated, truncated, _ = env.step(choose(user, candidates))
                    returns[i] += reward
                    discounted[i] += gamma ** lengths[i] * reward
                    lengths[i] += 1
                    done = bool(terminated or truncated)
                bar.update(1)
    finally:
        env.close()
    return Rollouts(returns, discounted, lengths)


def baseline_chooser(name: str, env_id: str, seed: int, logging_policy: str, temperature: float) -> Chooser:
    """``logging`` (``logging_policy`` at ``temperature``), ``myopic`` or ``random``, sampling with its own
    generator."""
    env = make_env(env_id)
    probabilities = candidate_policy(logging_policy if name == "logging" else name, env, temperature)
    rng = policy_rng(seed)  # not the stream reset(seed) gives the environment

    def choose(user: np.ndarray, candidates: np.ndarray) -> int:
        p = probabilities(user, candidates, rng)
        return min(int(np.searchsorted(np.cumsum(p), rng.random(), side="right")), len(p) - 1)

    return choose


def candidate_rollouts(policy: LoadedModel, env_id: str, episodes: int, seed: int, gamma: float,
                       max_steps: int | None, logging_policy: str, temperature: float, target_temperature: float
                       ) -> tuple[Rollouts, dict[str, Rollouts], Rollouts]:
    """The model's greedy rollouts, the baselines' (module docstring), and those of the softmax(Q /
    ``target_temperature``) policy that CPE evaluates, over the same episodes."""
    space, _ = _candidate_env(env_id)
    dims = (space["user"].shape[0], space["candidates"].shape[1], space["candidates"].shape[0])
    choose = model_chooser(policy, *dims)
    model = play(env_id, choose, episodes, seed, gamma, max_steps)
    baselines = {name: play(env_id, baseline_chooser(name, env_id, seed, logging_policy, temperature), episodes,
                            seed, gamma, max_steps, label=f"baseline {name}") for name in BASELINES}
    target = play(env_id, model_chooser(policy, *dims, target_temperature, seed), episodes, seed, gamma, max_steps,
                  label="target policy")
    log.info("%s: mean return %.2f (model) vs %s", env_id, float(model.returns.mean()),
             ", ".join(f"{n} {float(r.returns.mean()):.2f}" for n, r in baselines.items()))
    return model, baselines, target
