"""Simulators shipped with batchrl, registered as gymnasium environments under the ``batchrl/`` namespace.

:func:`register_envs` registers them (idempotent); :func:`batchrl.data.gym_logging.make_envs` and the
rollouts call it before resolving an id, so ``batchrl generate --env batchrl/Recommendation-v0`` works
without any import by the user. Users of plain gymnasium call it once (or ``import batchrl.simulators``
and call it) before ``gymnasium.make``.
"""

from __future__ import annotations

RECOMMENDATION_ID = "batchrl/Recommendation-v0"


def register_envs() -> None:
    """Register the ``batchrl/`` environments with gymnasium (once)."""
    import gymnasium as gym

    if RECOMMENDATION_ID not in gym.envs.registration.registry:
        gym.register(RECOMMENDATION_ID, entry_point="batchrl.simulators.recommendation:RecommendationEnv",
                     max_episode_steps=50)
