"""Logging throughput of `batchrl generate`: transitions/s by environment and vector width.

    .venv/bin/python benchmarks/generate.py [--transitions 100000]

Times the stage function (rollouts + Arrow conversion + Parquet write) and, for comparison in the same
run, a plain single-environment gymnasium loop that only steps the env and keeps nothing.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import gymnasium as gym
import numpy as np

from batchrl.data.gym_logging import GenerateOptions, generate


def plain_loop(env_id: str, transitions: int, seed: int) -> float:
    """Transitions/s of a bare single-env random loop (no logging at all)."""
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(transitions):
        _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            env.reset()
    return transitions / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transitions", type=int, default=100_000)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.python_version()}, transitions={args.transitions}")
    print("| env | num_envs | batchrl generate (transitions/s) | bare single-env loop, no logging (transitions/s) |")
    print("|---|---|---|---|")
    for env_id in ("CartPole-v0", "Acrobot-v1"):
        bare = plain_loop(env_id, args.transitions // 4, 0)
        for num_envs in (1, 16, 64):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                generate(f"{tmp}/out", GenerateOptions(env=env_id, transitions=args.transitions, seed=0,
                                                       num_envs=num_envs))
                rate = args.transitions / (time.perf_counter() - start)
            print(f"| {env_id} | {num_envs} | {rate:,.0f} | {bare:,.0f} |")


if __name__ == "__main__":
    main()
