"""A recommendation simulator with candidate sets described by item features (docs/recommendation.md).

A user has a latent interest direction ``u`` (a unit vector in R^D, observed) and a satisfaction
``s`` in [0, 1] (observed). Each step shows K candidate items (K drawn from ``k_min..k_max``); item
i has a topic ``e_i`` (unit vector in R^D), an appeal ``a_i`` in [0, 1] (how catchy it is) and a quality
``q_i = clip(1 - a_i + N(0, 0.1^2), 0, 1)`` (catchy items tend to be poor). The agent recommends one
candidate; the user clicks with probability

    p_i = sigmoid(3 u.e_i + 3 a_i + 2 s - 3)

and the reward is the click (1 or 0). Satisfaction moves with what is consumed:

    click:     s <- clip(s + 0.2 (q_i - 0.5), 0, 1)
    no click:  s <- max(s - 0.05, 0)

and the session ends (terminated) when s reaches 0, or after 50 steps (truncated, the registered
time limit). A myopic policy (argmax p_i) favours catchy, poor items and ends sessions early; a
long-horizon one trades a little click probability for quality and keeps the user.

Observation (a ``Dict`` space): ``user`` = [u_1..u_D, s] (state feature id i = index i), ``candidates``
= float32 [k_max, D + 2] rows [e_1..e_D, a, q] (action feature id j = column j; rows past K are 0),
``mask`` = int8 [k_max] (1 for the K real candidates). Action: the index of a real candidate.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

TOPICS = 4
ITEM_FEATURES = TOPICS + 2  # topic, appeal, quality
K_MIN, K_MAX = 4, 8


def click_probabilities(user: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """p = sigmoid(3 u.e + 3 a + 2 s - 3) for each candidate. ``user`` [..., D + 1], ``candidates`` [..., K, D + 2]."""
    u, s = user[..., :TOPICS], user[..., TOPICS]
    relevance = np.einsum("...d,...kd->...k", u, candidates[..., :TOPICS])
    logits = 3.0 * relevance + 3.0 * candidates[..., TOPICS] + 2.0 * s[..., None] - 3.0
    out: np.ndarray = 1.0 / (1.0 + np.exp(-logits))
    return out


def heuristic_scores(user: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The hand-made item score of the logging policy: relevance plus appeal, u.e + a."""
    relevance = np.einsum("...d,...kd->...k", user[..., :TOPICS], candidates[..., :TOPICS])
    out: np.ndarray = relevance + candidates[..., TOPICS]
    return out


class RecommendationEnv(gym.Env[dict[str, Any], Any]):
    """See the module docstring."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, k_min: int = K_MIN, k_max: int = K_MAX):
        if not 1 <= k_min <= k_max:
            raise ValueError(f"need 1 <= k_min <= k_max, got {k_min}, {k_max}")
        self.k_min, self.k_max = k_min, k_max
        self.observation_space: gym.spaces.Dict = gym.spaces.Dict({
            "user": gym.spaces.Box(-1.0, 1.0, (TOPICS + 1,), np.float32),
            "candidates": gym.spaces.Box(-1.0, 1.0, (k_max, ITEM_FEATURES), np.float32),
            "mask": gym.spaces.MultiBinary(k_max),
        })
        self.action_space: gym.spaces.Discrete = gym.spaces.Discrete(k_max)
        self._u = np.zeros(TOPICS)
        self._s = 0.5
        self._candidates = np.zeros((k_max, ITEM_FEATURES))
        self._k = k_min

    @staticmethod
    def expected_rewards(user: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """The immediate expected reward of each candidate: its click probability."""
        return click_probabilities(user, candidates)

    @staticmethod
    def heuristic_scores(user: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """The hand-made item score of the logging policy (:func:`heuristic_scores`)."""
        return heuristic_scores(user, candidates)

    def _unit(self, n: int) -> np.ndarray:
        v = self.np_random.normal(size=(n, TOPICS))
        out: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out

    def _draw_candidates(self) -> None:
        self._k = int(self.np_random.integers(self.k_min, self.k_max + 1))
        appeal = self.np_random.uniform(0.0, 1.0, self._k)
        quality = np.clip(1.0 - appeal + self.np_random.normal(0.0, 0.1, self._k), 0.0, 1.0)
        self._candidates = np.zeros((self.k_max, ITEM_FEATURES))
        self._candidates[: self._k] = np.column_stack([self._unit(self._k), appeal, quality])

    def _observation(self) -> dict[str, Any]:
        mask = np.zeros(self.k_max, dtype=np.int8)
        mask[: self._k] = 1
        return {"user": np.append(self._u, self._s).astype(np.float32),
                "candidates": self._candidates.astype(np.float32), "mask": mask}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self._u = self._unit(1)[0]
        self._s = 0.5
        self._draw_candidates()
        return self._observation(), {}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        a = int(action)
        if not 0 <= a < self._k:
            raise ValueError(f"action {a} is not one of the {self._k} candidates (indices 0..{self._k - 1})")
        obs = self._observation()
        p = float(click_probabilities(obs["user"].astype(np.float64), self._candidates[a][None])[0])
        click = bool(self.np_random.random() < p)
        quality = self._candidates[a, TOPICS + 1]
        self._s = float(np.clip(self._s + 0.2 * (quality - 0.5), 0.0, 1.0)) if click else max(self._s - 0.05, 0.0)
        terminated = self._s <= 0.0
        self._draw_candidates()
        return self._observation(), float(click), terminated, False, {"click_probability": p}
