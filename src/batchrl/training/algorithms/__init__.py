"""The algorithm registry: the config's algorithm name -> the builder of its networks and trainer.

Offline training (:mod:`batchrl.training.train`), online gym training (:mod:`batchrl.training.online`)
and the export of the serving policy (:func:`export_policy`) all go through this table, so which
algorithms exist and how each is built is decided here and nowhere else. Every trainer satisfies
:class:`~batchrl.training.trainer.Trainer`. Adding an algorithm (docs/algorithms.md, "Adding an
algorithm"): its module here with a ``build(model, context)`` function, one entry below, its config
class in :mod:`batchrl.config` (a field of ``ModelConfig``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from batchrl.config import (
    DiscreteBCQModel,
    DiscreteC51DQNModel,
    DiscreteCQLModel,
    DiscreteCRRModel,
    DiscreteDQNModel,
    DiscreteIQLModel,
    DiscreteQRDQNModel,
    IQLModel,
    ModelConfig,
    ParametricCQLModel,
    ParametricDQNModel,
    SACModel,
    TD3Model,
)
from batchrl.models.continuous import ActionScaler, ScaledActor
from batchrl.serving.export import export_model
from batchrl.training.algorithms import (
    bcq,
    c51,
    continuous_iql,
    cql,
    crr,
    dqn,
    iql,
    parametric_dqn,
    qrdqn,
    sac,
    td3,
)
from batchrl.training.trainer import BuildContext, Trainer


@dataclass(frozen=True)
class Algorithm:
    """One registry row: the model block's class and the function building its trainer."""

    config: type
    build: Callable[[Any, BuildContext], Trainer]


#: The config's algorithm name (the key under ``model:``) -> its registry row.
ALGORITHMS: dict[str, Algorithm] = {
    "DiscreteDQN": Algorithm(DiscreteDQNModel, dqn.build),
    "DiscreteCQL": Algorithm(DiscreteCQLModel, cql.build),
    "DiscreteQRDQN": Algorithm(DiscreteQRDQNModel, qrdqn.build),
    "DiscreteC51DQN": Algorithm(DiscreteC51DQNModel, c51.build),
    "DiscreteBCQ": Algorithm(DiscreteBCQModel, bcq.build),
    "DiscreteCRR": Algorithm(DiscreteCRRModel, crr.build),
    "DiscreteIQL": Algorithm(DiscreteIQLModel, iql.build),
    "SAC": Algorithm(SACModel, sac.build),
    "TD3": Algorithm(TD3Model, td3.build),
    "IQL": Algorithm(IQLModel, continuous_iql.build),
    "ParametricDQN": Algorithm(ParametricDQNModel, parametric_dqn.build),
    "ParametricCQL": Algorithm(ParametricCQLModel, parametric_dqn.build_conservative),
}


def build_trainer(model: ModelConfig, input_dim: int, action_dim: int, *, device: torch.device | str = "cpu",
                  amp_dtype: torch.dtype | None = None, seed: int = 0) -> Trainer:
    """The trainer of the configured algorithm with fresh networks (seed torch before calling).

    ``action_dim``: the number of actions (discrete), the action dimensions (continuous) or the item input's
    width (parametric); ``amp_dtype``:
    CUDA mixed precision of the discrete trainers (the actor-critic ones run in float32); ``seed`` seeds
    SAC's and TD3's own sampling generator.
    """
    context = BuildContext(input_dim, action_dim, torch.device(device), amp_dtype, seed)
    return ALGORITHMS[model.name].build(model.value, context)


def export_policy(uri: str, trainer: Trainer, preprocessor: nn.Module, action_names: list[str],
                  feature_ids: list[int], normalization: dict[str, Any], metadata: dict[str, Any],
                  action_bounds: tuple[list[float], list[float]] | None = None) -> None:
    """Write the serving policy ``(values, presence) -> (action names, out)`` (spec section 8).

    Discrete actions: ``out`` = the trainer's scores [B, A] (metadata ``output``: ``trainer.scores``).
    Continuous actions (``action_bounds`` = (low, high) per dimension): ``out`` = the deterministic
    action scaled from [-1, 1] to [low, high], the environment's (logged) units.
    """
    if action_bounds is None:
        export_model(uri, preprocessor, trainer.q_network, action_names, feature_ids, normalization,
                     {**metadata, "output": trainer.scores, "action_space": "discrete"})
        return
    low, high = action_bounds
    export_model(uri, preprocessor, ScaledActor(trainer.q_network, ActionScaler(low, high)), action_names,
                 feature_ids, normalization, {**metadata, "output": trainer.scores, "action_space": "continuous",
                                              "action_low": low, "action_high": high})
