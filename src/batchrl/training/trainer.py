"""The trainer contract: what the training loop, checkpoints, per-epoch metrics, export and the online
harness use of a trainer, whatever its algorithm (:mod:`batchrl.training.algorithms` builds them).

- ``update(batch)``: one minibatch of training (the trainer owns its optimizer steps,
  :class:`~batchrl.training.steps.GradientSteps`); returns named detached 0-d loss terms, ``loss`` among them;
- ``evaluate(batch)``: the same kind of terms on held-out data, without training;
- ``end_epoch()``: steps the learning-rate schedules;
- ``state_dict()`` / ``load_state_dict(state)``: everything a resumed run needs to continue exactly;
- ``learning_rate``: the first optimizer's current rate (logged);
- ``q_network``: the serving network, state -> ``scores``: Q-values [B, A] (``q_values``), BCQ's filtered
  Q-values, an actor's logits (``actor_logits``; greedy = argmax), or, for continuous actions, the
  deterministic action in [-1, 1]^d (``actions``).

Batches hold preprocessed states (``Batch.state`` = the network input). Continuous-action trainers also
``act(state, explore)``: an exploring (or deterministic) action, for online training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from batchrl.data.loader import Batch


@runtime_checkable
class Trainer(Protocol):
    """Every trainer of :data:`batchrl.training.algorithms.ALGORITHMS` satisfies this."""

    scores: str

    @property
    def q_network(self) -> nn.Module: ...

    @property
    def learning_rate(self) -> float: ...

    def update(self, batch: Batch) -> dict[str, Tensor]: ...

    def evaluate(self, batch: Batch) -> dict[str, Tensor]: ...

    def end_epoch(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class ActingTrainer(Trainer, Protocol):
    """A continuous-action trainer (SAC, TD3): the contract plus its own exploration."""

    def act(self, state: Tensor, explore: bool) -> Tensor: ...


@dataclass(frozen=True)
class BuildContext:
    """What building a trainer takes besides its model block (:data:`~batchrl.training.algorithms.ALGORITHMS`).

    Builders seed nothing: the caller seeds torch first; networks are drawn in the builder's fixed order.
    """

    input_dim: int  # width of the preprocessed state (the networks' input)
    action_dim: int  # discrete: the number of actions; continuous: the action dimensions
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp_dtype: torch.dtype | None = None  # CUDA mixed precision of the discrete trainers
    seed: int = 0  # the trainer's own generator (SAC/TD3 sampling and noise)
