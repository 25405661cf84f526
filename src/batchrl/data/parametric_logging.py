"""Logging an environment whose actions are candidate items described by features (parametric actions,
spec section 1, Ex.2), e.g. ``batchrl/Recommendation-v0`` (:mod:`batchrl.simulators.recommendation`).

Such an environment's observation is a ``Dict`` with ``user`` (state features, feature id i = index i),
``candidates`` (float [k_max, F], action feature id j = column j) and ``mask`` (the real candidates);
its action is a candidate's index. Rows are logged in the parametric schema: ``action`` = the chosen
item's features as a map, ``possible_actions`` = every candidate's map, ``action_probability`` = the
logging policy's true probability of the chosen candidate among this step's candidates:

    random:             p_i = 1 / K
    heuristic-softmax:  p_i = exp(h_i / T) / sum_j exp(h_j / T),  h = the environment's ``heuristic_scores``
    myopic:             p_i = 1 for i = argmax of the environment's ``expected_rewards`` (ties: the first)

Episodes run one after another in one environment seeded once (``reset(seed)`` for the first), so the
same options give the same rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from batchrl.data.schema import END_TERMINATED, END_TRUNCATED, logged_schema
from batchrl.errors import BatchRLError
from batchrl.progress import Progress

log = logging.getLogger(__name__)

#: Logging policies of parametric environments that need no model.
CANDIDATE_POLICIES = ("random", "heuristic-softmax", "myopic")

#: (user [S], candidates [K, F], rng) -> probabilities over the K candidates
CandidatePolicy = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def is_parametric(observation_space: Any) -> bool:
    """Whether an observation space is a candidate-set one (a Dict with user, candidates and mask)."""
    import gymnasium as gym

    return isinstance(observation_space, gym.spaces.Dict) and {"user", "candidates", "mask"} <= set(
        observation_space.spaces)


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = (scores - scores.max()) / temperature
    p: np.ndarray = np.exp(z)
    out: np.ndarray = p / p.sum()
    return out


def candidate_policy(name: str, env: Any, temperature: float = 1.0) -> CandidatePolicy:
    """The probabilities of logging policy ``name`` (module docstring) for the environment ``env``."""
    base = env.unwrapped
    if name == "random":
        return lambda user, candidates, rng: np.full(len(candidates), 1.0 / len(candidates))
    if name == "heuristic-softmax":
        return lambda user, candidates, rng: softmax(base.heuristic_scores(user, candidates), temperature)
    if name == "myopic":
        def greedy(user: np.ndarray, candidates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            p = np.zeros(len(candidates))
            p[int(np.argmax(base.expected_rewards(user, candidates)))] = 1.0
            return p
        return greedy
    raise BatchRLError(f"policy '{name}' is not a candidate-set logging policy",
                       fix=f"use one of {', '.join(CANDIDATE_POLICIES)} for parametric environments")


def split_observation(obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(user features float64 [S], the real candidates float64 [K, F])."""
    mask = np.asarray(obs["mask"]).astype(bool)
    return np.asarray(obs["user"], dtype=np.float64), np.asarray(obs["candidates"], dtype=np.float64)[mask]


@dataclass
class ParametricEpisode:
    users: list[np.ndarray] = field(default_factory=list)
    chosen: list[np.ndarray] = field(default_factory=list)
    candidates: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    end_reason: str | None = None

    def __len__(self) -> int:
        return len(self.rewards)


def play(env: Any, policy: CandidatePolicy, rng: np.random.Generator, seed: int, *, episodes: int | None = None,
         transitions: int | None = None, label: str = "generate") -> list[ParametricEpisode]:
    """Run ``policy`` for ``episodes`` episodes or ``transitions`` steps (the last episode cut short and
    marked truncated); the environment is seeded once, at the first reset."""
    budget = episodes or transitions or 0
    finished: list[ParametricEpisode] = []
    steps = 0
    obs, _ = env.reset(seed=seed)
    current = ParametricEpisode()
    with Progress(budget, label, "episodes" if episodes else "transitions") as bar:
        while (len(finished) if episodes else steps) < budget:
            user, candidates = split_observation(obs)
            p = policy(user, candidates, rng)
            index = min(int(np.searchsorted(np.cumsum(p), rng.random(), side="right")), len(p) - 1)
            obs, reward, terminated, truncated, _ = env.step(index)
            current.users.append(user)
            current.chosen.append(candidates[index])
            current.candidates.append(candidates)
            current.rewards.append(float(reward))
            current.probs.append(float(p[index]))
            steps += 1
            if not episodes:
                bar.update(1)
            cut = transitions is not None and steps >= transitions
            if terminated or truncated or cut:
                current.end_reason = END_TERMINATED if terminated else END_TRUNCATED
                finished.append(current)
                if episodes:
                    bar.update(1)
                current = ParametricEpisode()
                if not cut:
                    obs, _ = env.reset()
    return finished


def _maps(rows: list[np.ndarray]) -> pa.MapArray:
    """Feature vectors (one per row, possibly of different lengths) as map<int64, double> {j: v_j}."""
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    keys = pa.array(np.concatenate([np.arange(n, dtype=np.int64) for n in lengths]) if rows else [], pa.int64())
    values = pa.array(np.concatenate(rows) if rows else [], pa.float64())
    return pa.MapArray.from_arrays(offsets, keys, values)


def parametric_table(episodes: list[ParametricEpisode], ds: str) -> pa.Table:
    """The logged table (spec section 1, parametric actions) of ``episodes``, episode ids 0, 1, 2, ..."""
    lengths = np.array([len(ep) for ep in episodes], dtype=np.int64)
    n = int(lengths.sum())
    rewards = np.array([r for ep in episodes for r in ep.rewards], dtype=np.float64)
    end_reason = np.full(n, None, dtype=object)
    end_reason[np.cumsum(lengths) - 1] = [ep.end_reason for ep in episodes]
    candidate_sets = [c for ep in episodes for c in ep.candidates]
    set_sizes = np.array([len(c) for c in candidate_sets], dtype=np.int32)
    possible = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(set_sizes)]).astype(np.int32)),
                                        _maps([row for c in candidate_sets for row in c]))
    columns = {
        "mdp_id": pa.array(np.repeat(np.arange(len(episodes)), lengths).astype(str), pa.string()),
        "sequence_number": pa.array(np.concatenate([np.arange(k) for k in lengths]) if n else [], pa.int64()),
        "state_features": _maps([u for ep in episodes for u in ep.users]),
        "action": _maps([a for ep in episodes for a in ep.chosen]),
        "reward": pa.array(rewards, pa.float64()),
        "possible_actions": possible,
        "action_probability": pa.array([p for ep in episodes for p in ep.probs], pa.float64()),
        "ds": pa.array(np.full(n, ds), pa.string()),
        "metrics": pa.MapArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)),
                                           pa.array(np.full(n, "reward")), pa.array(rewards, pa.float64())),
        "end_reason": pa.array(end_reason, pa.string()),
    }
    schema = logged_schema(parametric=True, possible_actions=True)
    return pa.table([columns[f.name] for f in schema], schema=schema)
