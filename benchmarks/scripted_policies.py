"""Scripted teacher policies as TorchScript, for tasks where training one online here is impractical.

Each module follows the serving contract of an exported policy (spec section 8), so ``batchrl generate
--model`` logs around it exactly as around a trained one: ``(values [B, D], presence [B, D]) ->
(action names, out)``, ``out`` the scores [B, A] of the discrete actions (one-hot of the chosen one) or
the continuous action [B, A] in the environment's units. ``values`` are the raw observations.

- ``MountainCar-v0`` (actions 0 push left, 1 none, 2 push right), the energy-pumping controller: push in
  the direction of the velocity, ``a = 2 if v > 0 else 0``, which rocks the car up in about 100-120 steps.
  Its weak variant pushes only while ``|v| > 0.004`` (otherwise nothing), which pumps more slowly.
- ``LunarLander-v3`` and ``LunarLanderContinuous-v3``: the PID-like landing controller that ships with
  gymnasium's environment as its demo heuristic (its formulas, restated): with observation
  ``s = (x, y, vx, vy, angle, angular velocity, left contact, right contact)``,
  ``angle_target = clip(0.5 x + vx, -0.4, 0.4)``, ``hover_target = 0.55 |x|``,
  ``angle_todo = 0.5 (angle_target - angle) - angular_velocity``, ``hover_todo = 0.5 (hover_target - y) -
  0.5 vy``; once a leg touches, ``angle_todo = 0`` and ``hover_todo = -0.5 vy``. Continuous action:
  ``clip((20 hover_todo - 1, -20 angle_todo), -1, 1)``. Discrete: main engine (2) when ``hover_todo >
  |angle_todo|`` and ``hover_todo > 0.05``, else the side engine that turns towards the target (3 when
  ``angle_todo < -0.05``, 1 when ``> 0.05``), else nothing (0). ``gain`` scales both targets' corrections:
  1 is the demo controller; the weak variants use smaller gains, which land harder and drift.
"""

from __future__ import annotations

import pathlib

import torch
from torch import nn


class _Discrete(nn.Module):
    """A scripted discrete policy: the scores are the one-hot of ``choose(values)``."""

    def __init__(self, num_actions: int, start: int = 0):
        super().__init__()
        self.names = [str(start + i) for i in range(num_actions)]
        self.num_actions = num_actions

    def choose(self, values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, values: torch.Tensor, presence: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        chosen = self.choose(values * presence)
        return self.names, nn.functional.one_hot(chosen, self.num_actions).to(torch.float32)


class MountainCarEnergy(_Discrete):
    """Push with the velocity (``a = 2 if v > threshold``, ``0 if v < -threshold``, else 1)."""

    def __init__(self, threshold: float = 0.0):
        super().__init__(3)
        self.threshold = threshold

    def choose(self, values: torch.Tensor) -> torch.Tensor:
        v = values[:, 1]
        none = torch.ones_like(v, dtype=torch.long)
        return torch.where(v > self.threshold, none + 1, torch.where(v < -self.threshold, none - 1, none))


def lander_todo(values: torch.Tensor, gain: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(angle_todo, hover_todo) of the landing controller (module docstring)."""
    x, y, vx, vy, angle, spin = (values[:, i] for i in range(6))
    landed = (values[:, 6] > 0.5) | (values[:, 7] > 0.5)
    angle_target = torch.clamp(0.5 * x + vx, -0.4, 0.4)
    hover_target = 0.55 * x.abs()
    angle_todo = gain * (0.5 * (angle_target - angle) - spin)
    hover_todo = gain * (0.5 * (hover_target - y) - 0.5 * vy)
    angle_todo = torch.where(landed, torch.zeros_like(angle_todo), angle_todo)
    hover_todo = torch.where(landed, -0.5 * vy, hover_todo)
    return angle_todo, hover_todo


class LunarLanderDiscrete(_Discrete):
    """The landing controller's discrete action (module docstring)."""

    def __init__(self, gain: float = 1.0):
        super().__init__(4)
        self.gain = gain

    def choose(self, values: torch.Tensor) -> torch.Tensor:
        angle_todo, hover_todo = lander_todo(values, self.gain)
        nothing = torch.zeros_like(angle_todo, dtype=torch.long)
        side = torch.where(angle_todo < -0.05, nothing + 3, torch.where(angle_todo > 0.05, nothing + 1, nothing))
        return torch.where((hover_todo > angle_todo.abs()) & (hover_todo > 0.05), nothing + 2, side)


class LunarLanderContinuous(nn.Module):
    """The landing controller's continuous action (main, lateral) in [-1, 1] (module docstring)."""

    def __init__(self, gain: float = 1.0):
        super().__init__()
        self.gain = gain
        self.names = ["main", "lateral"]

    def forward(self, values: torch.Tensor, presence: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        angle_todo, hover_todo = lander_todo(values * presence, self.gain)
        action = torch.stack([20.0 * hover_todo - 1.0, -20.0 * angle_todo], dim=1)
        return self.names, torch.clamp(action, -1.0, 1.0)


#: (env, level) -> the scripted module; ``level`` expert or medium.
SCRIPTED: dict[tuple[str, str], nn.Module] = {
    ("MountainCar-v0", "expert"): MountainCarEnergy(0.0),
    ("MountainCar-v0", "medium"): MountainCarEnergy(0.004),
    ("LunarLander-v3", "expert"): LunarLanderDiscrete(1.0),
    ("LunarLander-v3", "medium"): LunarLanderDiscrete(0.25),
    ("LunarLanderContinuous-v3", "expert"): LunarLanderContinuous(1.0),
    ("LunarLanderContinuous-v3", "medium"): LunarLanderContinuous(0.32),
}


def write_scripted(env: str, level: str, path: pathlib.Path) -> pathlib.Path:
    """Script the (env, level) teacher to ``path`` (a ``model.torchscript``) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(SCRIPTED[env, level]), str(path))  # type: ignore[no-untyped-call]
    return path


def greedy_return(env: str, level: str, episodes: int = 20, seed: int = 10_000) -> float:
    """Mean return of the scripted policy acting greedily (evaluation seeds from 10,000, as elsewhere)."""
    import gymnasium as gym
    import numpy as np

    module = torch.jit.script(SCRIPTED[env, level])  # type: ignore[no-untyped-call]
    returns = []
    with gym.make(env) as e:
        for i in range(episodes):
            obs, _ = e.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                values = torch.as_tensor(np.asarray(obs, dtype=np.float32))[None]
                _, out = module(values, torch.ones_like(values))
                action = out[0].numpy() if isinstance(e.action_space, gym.spaces.Box) else int(out[0].argmax())
                obs, reward, terminated, truncated, _ = e.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    return float(np.mean(returns))


if __name__ == "__main__":
    for env_name, level_name in SCRIPTED:
        print(env_name, level_name, round(greedy_return(env_name, level_name), 1), flush=True)
