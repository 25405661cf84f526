"""Networks for continuous actions in [-1, 1]^d: critics Q(s, a), a deterministic actor and a
tanh-squashed Gaussian actor, and the export-time scaling to the environment's units.

Every network scripts with TorchScript. States are the preprocessed network input ``x: float32[B, D]``;
actions inside training live in the normalized box ``[-1, 1]^d``; :class:`ActionScaler` maps them to
``[low, high]`` for serving.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from batchrl.models.networks import mlp_layers

#: log-stddev bounds of the Gaussian actor (Haarnoja et al. 2018 implementations use the same range).
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class Critic(nn.Module):
    """Q(s, a) = MLP([x, a]) -> float32[B]."""

    def __init__(self, state_dim: int, action_dim: int, sizes: list[int], activations: list[str],
                 dropout_ratio: float = 0.0, use_layer_norm: bool = False):
        super().__init__()
        width = sizes[-1] if sizes else state_dim + action_dim
        self.layers = nn.Sequential(*mlp_layers(state_dim + action_dim, sizes, activations, dropout_ratio,
                                                 use_layer_norm), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        q: torch.Tensor = self.layers(torch.cat([x, action], dim=1))
        return q.squeeze(1)


class DeterministicActor(nn.Module):
    """mu(s) = tanh(MLP(x)) in [-1, 1]^d (TD3)."""

    def __init__(self, state_dim: int, action_dim: int, sizes: list[int], activations: list[str],
                 dropout_ratio: float = 0.0, use_layer_norm: bool = False):
        super().__init__()
        width = sizes[-1] if sizes else state_dim
        self.layers = nn.Sequential(*mlp_layers(state_dim, sizes, activations, dropout_ratio, use_layer_norm),
                                    nn.Linear(width, action_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.layers(x))


class StateIndependentLogStd(nn.Module):
    """log std as one learned parameter per action dimension, the same in every state (initially 0):
    ``forward(h)`` broadcasts it to float32[B, d] so it stands in for a linear head on the trunk."""

    def __init__(self, action_dim: int):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(action_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.value.expand(h.shape[0], -1)


class GaussianActor(nn.Module):
    """pi(a|s): u ~ N(mean(s), std(s)^2), a = tanh(u) (SAC, Haarnoja et al. 2018, appendix C).

    ``forward(x)`` is the deterministic (serving) action tanh(mean); :meth:`sample` draws a
    reparameterized action and its log-density
    log pi(a|s) = log N(u; mean, std) - sum_i log(1 - tanh(u_i)^2).
    With ``state_dependent_std`` False, log std is one parameter per action dimension
    (:class:`StateIndependentLogStd`, as IQL's implementation): the actor cannot widen its Gaussian on the
    states it fits badly, so a weighted likelihood fit of the mean is a weighted least-squares fit.
    """

    def __init__(self, state_dim: int, action_dim: int, sizes: list[int], activations: list[str],
                 dropout_ratio: float = 0.0, use_layer_norm: bool = False, state_dependent_std: bool = True):
        super().__init__()
        width = sizes[-1] if sizes else state_dim
        self.trunk = nn.Sequential(*mlp_layers(state_dim, sizes, activations, dropout_ratio, use_layer_norm))
        self.mean = nn.Linear(width, action_dim)
        self.log_std: nn.Module = nn.Linear(width, action_dim) if state_dependent_std \
            else StateIndependentLogStd(action_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mean(self.trunk(x)))

    @torch.jit.unused
    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(a float32[B, d], log pi(a|s) float32[B]) with a reparameterized draw."""
        h = self.trunk(x)
        mean = self.mean(h)
        log_std = self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + std * noise
        action = torch.tanh(u)
        gaussian = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(dim=1)
        # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), numerically stable
        squash = (2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))).sum(dim=1)
        return action, gaussian - squash


    @torch.jit.unused
    def clipped_log_prob(self, x: torch.Tensor, action: torch.Tensor, log_std_min: float) -> torch.Tensor:
        """log N(a; tanh(mean(s)), std(s)^2) float32[B], summed over dimensions, log std clamped to
        [``log_std_min``, LOG_STD_MAX]: the Gaussian around the serving action whose draws are clipped to
        [-1, 1] (IQL's actor, Kostrikov et al. 2022), finite on logged actions at the bounds."""
        h = self.trunk(x)
        log_std = self.log_std(h).clamp(log_std_min, LOG_STD_MAX)
        z = (action - torch.tanh(self.mean(h))) / log_std.exp()
        log_prob: torch.Tensor = (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(dim=1)
        return log_prob

    @torch.jit.unused
    def clipped_sample(self, x: torch.Tensor, log_std_min: float, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """A draw of the clipped Gaussian of :meth:`clipped_log_prob`: clip(tanh(mean) + std * eps, -1, 1)."""
        h = self.trunk(x)
        std = self.log_std(h).clamp(log_std_min, LOG_STD_MAX).exp()
        mean = torch.tanh(self.mean(h))
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        draw: torch.Tensor = (mean + std * noise).clamp(-1.0, 1.0)
        return draw


class ActionScaler(nn.Module):
    """[-1, 1]^d -> [low, high]^d: a_env = low + (a + 1) / 2 * (high - low)."""

    if TYPE_CHECKING:  # buffers, declared for the type checker (TorchScript infers them)
        low: torch.Tensor
        high: torch.Tensor

    def __init__(self, low: list[float], high: list[float]):
        super().__init__()
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.tensor(high, dtype=torch.float32))

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        return self.low + (action.clamp(-1.0, 1.0) + 1.0) * 0.5 * (self.high - self.low)

    def normalize(self, action: torch.Tensor) -> torch.Tensor:
        """The inverse map, [low, high] -> [-1, 1]."""
        return (action - self.low) / (self.high - self.low) * 2.0 - 1.0


class ScaledActor(nn.Module):
    """actor -> :class:`ActionScaler`: the serving policy in the environment's units."""

    def __init__(self, actor: nn.Module, scaler: ActionScaler):
        super().__init__()
        self.actor = actor
        self.scaler = scaler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled: torch.Tensor = self.scaler(self.actor(x))
        return scaled
