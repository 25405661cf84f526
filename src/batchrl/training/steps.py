"""Optimizer stepping, the one way every trainer does it: gradient accumulation, AMP scaling,
learning-rate schedules; and eval mode.

``GradientSteps`` builds one optimizer (and its ``lr_schedulers``) per named parameter group.
``steps(loss)`` backpropagates ``loss / k`` each minibatch and, every ``k`` minibatches
(``minibatches_per_step``; 1 for the actor-critic trainers), steps every optimizer; it returns True then,
so the trainer knows to move its target networks. Gradients are zeroed before the first backward of
each step (another loss may have reached these parameters since: SAC's actor loss backpropagates
through the critics) and after the step. ``end_epoch()`` steps the schedules. Its ``state_dict``
holds the optimizers, schedules, scaler and minibatch count, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from batchrl.config import OptimizerConfig
from batchrl.training.optim import build_optimizer, build_schedulers

#: name -> (optimizer config, parameters): the groups a :class:`GradientSteps` steps together.
ParameterGroups = dict[str, tuple[OptimizerConfig, Iterable[torch.Tensor]]]


class GradientSteps:
    """The optimizers of named parameter groups, stepped together every ``every`` minibatches."""

    def __init__(self, groups: ParameterGroups, every: int,
                 amp_dtype: torch.dtype | None):
        self.optimizers = {name: build_optimizer(config, params) for name, (config, params) in groups.items()}
        self.schedulers = [scheduler for name, (config, _) in groups.items()
                           for scheduler in build_schedulers(config, self.optimizers[name])]
        self.every = every
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        self.minibatches = 0

    def __call__(self, loss: Tensor) -> bool:
        if self.minibatches % self.every == 0:
            self.zero_grad()
        self.scaler.scale(loss / self.every).backward()  # type: ignore[no-untyped-call]  # torch: unannotated
        self.minibatches += 1
        if self.minibatches % self.every:
            return False
        for optimizer in self.optimizers.values():
            self.scaler.step(optimizer)
        self.scaler.update()
        self.zero_grad()
        return True

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def end_epoch(self) -> None:
        for scheduler in self.schedulers:
            scheduler.step()

    @property
    def learning_rate(self) -> float:
        """The learning rate of the first optimizer (the one the loop logs)."""
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
                "schedulers": [s.state_dict() for s in self.schedulers], "scaler": self.scaler.state_dict(),
                "minibatches": self.minibatches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        self.scaler.load_state_dict(state["scaler"])
        self.minibatches = int(state["minibatches"])


def every_update(config: OptimizerConfig, parameters: Iterable[torch.Tensor]) -> GradientSteps:
    """One optimizer stepped after every update, in float32 (the actor-critic trainers: SAC, TD3)."""
    return GradientSteps({"main": (config, parameters)}, 1, None)


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Modules in eval mode (dropout off) and no gradient inside; their modes restored after."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


def detached(terms: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: value.detach() for name, value in terms.items()}
