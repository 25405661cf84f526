"""Build a network from its config block (``{FullyConnected: {...}}`` or ``{Dueling: {...}}``)."""

from __future__ import annotations

from torch import nn

from batchrl.config import NetBuilderConfig
from batchrl.models.networks import Dueling, FullyConnected

_BUILDERS = {"FullyConnected": FullyConnected, "Dueling": Dueling}


def build_network(config: NetBuilderConfig, input_dim: int, output_dim: int) -> nn.Module:
    """The network ``config`` names, mapping float32[B, input_dim] to float32[B, output_dim]."""
    p = config.params
    return _BUILDERS[config.name](input_dim, output_dim, sizes=list(p.sizes), activations=list(p.activations),
                                  dropout_ratio=p.dropout_ratio, use_layer_norm=p.use_layer_norm)
