"""Q-networks over the preprocessed state: an MLP (``FullyConnected``) and a dueling head (``Dueling``).

Both map ``x: float32[B, D]`` to ``q: float32[B, A]`` and script with TorchScript.
"""

from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "linear": nn.Identity,
}


def mlp_layers(input_dim: int, sizes: list[int], activations: list[str], dropout_ratio: float = 0.0,
               use_layer_norm: bool = False) -> list[nn.Module]:
    """Hidden layers: Linear -> [LayerNorm] -> activation -> [Dropout], one block per size."""
    if len(sizes) != len(activations):
        raise ValueError("one activation per hidden layer")
    layers: list[nn.Module] = []
    width = input_dim
    for size, activation in zip(sizes, activations, strict=True):
        layers.append(nn.Linear(width, size))
        if use_layer_norm:
            layers.append(nn.LayerNorm(size))
        layers.append(_ACTIVATIONS[activation]())
        if dropout_ratio > 0:
            layers.append(nn.Dropout(dropout_ratio))
        width = size
    return layers


class FullyConnected(nn.Module):
    """Q(s, .) = MLP(x): hidden layers from ``sizes``/``activations``, then a linear output layer."""

    def __init__(self, input_dim: int, output_dim: int, sizes: list[int], activations: list[str],
                 dropout_ratio: float = 0.0, use_layer_norm: bool = False):
        super().__init__()
        width = sizes[-1] if sizes else input_dim
        self.layers = nn.Sequential(*mlp_layers(input_dim, sizes, activations, dropout_ratio, use_layer_norm),
                                    nn.Linear(width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q: torch.Tensor = self.layers(x)
        return q


def hidden_trunk(network: nn.Module) -> tuple[nn.Module, int]:
    """The hidden layers of a ``FullyConnected`` or ``Dueling`` network (the same modules, so shared, not
    copied) and their output width: what another head can be put on (BCQ's imitator, ``share_trunk``)."""
    if isinstance(network, FullyConnected):
        *hidden, output = list(network.layers)
        assert isinstance(output, nn.Linear)
        return nn.Sequential(*hidden), output.in_features
    if isinstance(network, Dueling):
        return network.trunk, network.value.in_features
    raise TypeError(f"{type(network).__name__} has no hidden trunk to share")


class Dueling(nn.Module):
    """Dueling Q-network (Wang et al. 2016, "Dueling Network Architectures"):
    Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a'), with V and A linear heads on a shared MLP trunk."""

    def __init__(self, input_dim: int, output_dim: int, sizes: list[int], activations: list[str],
                 dropout_ratio: float = 0.0, use_layer_norm: bool = False):
        super().__init__()
        width = sizes[-1] if sizes else input_dim
        self.trunk = nn.Sequential(*mlp_layers(input_dim, sizes, activations, dropout_ratio, use_layer_norm))
        self.value = nn.Linear(width, 1)
        self.advantage = nn.Linear(width, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        advantage: torch.Tensor = self.advantage(h)
        value: torch.Tensor = self.value(h)
        return value + advantage - advantage.mean(dim=1, keepdim=True)
