"""Every network a trainer trains, built from its config block, in one place.

- discrete Q-networks / actors / imitators: :func:`build_network` (``{FullyConnected: ...}`` or
  ``{Dueling: ...}``), float32[B, D] -> float32[B, A];
- distributional Q-networks: :func:`quantile_network` (QR-DQN) and :func:`categorical_network` (C51), the
  mean over an ``[B, A, N]`` head (:mod:`batchrl.models.distributional`);
- state values: :func:`state_value` (IQL, ``[B]``) and :func:`continuous_mlp` with one output (SAC's V);
- continuous actions: :func:`critic` Q(s, a), :func:`gaussian_actor` (SAC), :func:`deterministic_actor` (TD3)
  (:mod:`batchrl.models.continuous`).

Construction draws the initial weights from torch's global generator, so a caller that seeds torch and
builds in a fixed order gets the same networks every run.
"""

from __future__ import annotations

from torch import nn

from batchrl.config import ContinuousNetBuilder, NetBuilderConfig
from batchrl.models.continuous import Critic, DeterministicActor, GaussianActor
from batchrl.models.distributional import AtomNetwork, CategoricalMean, QuantileMean, categorical_support
from batchrl.models.heads import StateValue
from batchrl.models.networks import Dueling, FullyConnected

_BUILDERS = {"FullyConnected": FullyConnected, "Dueling": Dueling}


def build_network(config: NetBuilderConfig, input_dim: int, output_dim: int) -> nn.Module:
    """The network ``config`` names, mapping float32[B, input_dim] to float32[B, output_dim]."""
    p = config.params
    return _BUILDERS[config.name](input_dim, output_dim, sizes=list(p.sizes), activations=list(p.activations),
                                  dropout_ratio=p.dropout_ratio, use_layer_norm=p.use_layer_norm)


def quantile_network(config: NetBuilderConfig, input_dim: int, num_actions: int, num_atoms: int) -> QuantileMean:
    """Q-values [B, A] as the mean of a body's [B, A * N] outputs read as N quantiles per action."""
    body = build_network(config, input_dim, num_actions * num_atoms)
    return QuantileMean(AtomNetwork(body, num_actions, num_atoms))


def categorical_network(config: NetBuilderConfig, input_dim: int, num_actions: int, qmin: float, qmax: float,
                        num_atoms: int) -> CategoricalMean:
    """Q-values [B, A] as the expectation of a body's [B, A * N] logits over N atoms on [qmin, qmax]."""
    body = build_network(config, input_dim, num_actions * num_atoms)
    return CategoricalMean(AtomNetwork(body, num_actions, num_atoms), categorical_support(qmin, qmax, num_atoms))


def state_value(config: NetBuilderConfig, input_dim: int) -> StateValue:
    """V(s) [B] from a network with one output."""
    return StateValue(build_network(config, input_dim, 1))


def continuous_mlp(config: ContinuousNetBuilder, input_dim: int, output_dim: int) -> FullyConnected:
    """An MLP from a continuous-action builder block (sizes, activations, dropout, layer norm)."""
    p = config.params
    return FullyConnected(input_dim, output_dim, list(p.sizes), list(p.activations),
                          dropout_ratio=p.dropout_ratio, use_layer_norm=p.use_layer_norm)


def critic(config: ContinuousNetBuilder, state_dim: int, action_dim: int) -> Critic:
    """Q(s, a) float32[B]."""
    p = config.params
    return Critic(state_dim, action_dim, list(p.sizes), list(p.activations),
                  dropout_ratio=p.dropout_ratio, use_layer_norm=p.use_layer_norm)


def gaussian_actor(config: ContinuousNetBuilder, state_dim: int, action_dim: int) -> GaussianActor:
    """pi(a|s), a tanh-squashed Gaussian over [-1, 1]^d (SAC, IQL)."""
    p = config.GaussianFullyConnected
    if p is None:
        raise ValueError(f"a Gaussian actor needs GaussianFullyConnected, not {config.name}")
    return GaussianActor(state_dim, action_dim, list(p.sizes), list(p.activations), dropout_ratio=p.dropout_ratio,
                         use_layer_norm=p.use_layer_norm, state_dependent_std=p.state_dependent_std)


def deterministic_actor(config: ContinuousNetBuilder, state_dim: int, action_dim: int) -> DeterministicActor:
    """mu(s) in [-1, 1]^d (TD3)."""
    p = config.params
    return DeterministicActor(state_dim, action_dim, list(p.sizes), list(p.activations),
                              dropout_ratio=p.dropout_ratio, use_layer_norm=p.use_layer_norm)
