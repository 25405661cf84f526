"""The recommendation simulator (docs/recommendation.md): its formulas, candidate sets, termination, seeding, and
that a long-horizon policy beats the myopic one."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from batchrl.simulators import RECOMMENDATION_ID, register_envs
from batchrl.simulators.recommendation import K_MAX, K_MIN, TOPICS, RecommendationEnv, click_probabilities


def _env() -> gym.Env:
    register_envs()
    return gym.make(RECOMMENDATION_ID)


def test_click_probability_formula_by_hand():
    user = np.array([1.0, 0.0, 0.0, 0.0, 0.5])
    items = np.array([[1.0, 0.0, 0.0, 0.0, 0.2, 0.8], [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]])
    # logits 3*1 + 3*0.2 + 2*0.5 - 3 = 1.6 and 3*0 + 3*1 + 1 - 3 = 1.0
    assert click_probabilities(user, items) == pytest.approx(1 / (1 + np.exp([-1.6, -1.0])))


def test_observation_candidates_mask_and_bad_action():
    env = _env()
    obs, _ = env.reset(seed=3)
    sizes = set()
    for _ in range(40):
        k = int(obs["mask"].sum())
        sizes.add(k)
        assert K_MIN <= k <= K_MAX and obs["mask"][:k].all() and not obs["candidates"][k:].any()
        assert np.linalg.norm(obs["candidates"][:k, :TOPICS], axis=1) == pytest.approx(np.ones(k), abs=1e-5)
        obs, _, terminated, truncated, _ = env.step(0)
        if terminated or truncated:
            obs, _ = env.reset()
    assert len(sizes) > 1  # K varies
    with pytest.raises(ValueError, match="not one of the"):
        env.step(int(obs["mask"].sum()))


def test_satisfaction_dynamics_and_termination():
    env = RecommendationEnv()
    env.reset(seed=0)
    env._s = 0.04  # one step without a click ends the session
    env._candidates[0] = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    env._u = np.array([0.0, -1.0, 0.0, 0.0])  # p = sigmoid(-3 + 0 + 0.08 - 3): almost surely no click
    _, reward, terminated, truncated, info = env.step(0)
    assert info["click_probability"] < 0.01 and reward == 0.0 and terminated and not truncated
    env.reset(seed=0)
    env._candidates[0] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.9]
    env._u = np.array([1.0, 0.0, 0.0, 0.0])  # p = sigmoid(3 + 3 + 1 - 3) = 0.98
    clicked = 0
    for _ in range(20):  # a click moves s by 0.2 (q - 0.5) = +0.08
        env._s, env._candidates[0] = 0.5, [1.0, 0.0, 0.0, 0.0, 1.0, 0.9]
        _, reward, *_ = env.step(0)
        clicked += reward == 1.0
        assert env._s == pytest.approx(0.58 if reward else 0.45)
    assert clicked >= 15


def _returns(policy, episodes=60, seed=0) -> float:
    env = _env()
    total = 0.0
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            k = int(obs["mask"].sum())
            obs, reward, terminated, truncated, _ = env.step(policy(obs["user"], obs["candidates"][:k]))
            total += reward
            done = terminated or truncated
    return total / episodes


def test_same_seed_same_episode_and_myopic_is_worse_than_long_horizon():
    def myopic(user, items):
        return int(np.argmax(click_probabilities(user.astype(float), items.astype(float))))

    def long_horizon(user, items):  # relevance plus quality, ignoring appeal
        return int(np.argmax(items[:, :TOPICS] @ user[:TOPICS] + 1.5 * items[:, TOPICS + 1]))

    assert _returns(myopic, 5) == _returns(myopic, 5)
    assert _returns(long_horizon) > 1.5 * _returns(myopic)
