"""Optimizer stepping shared by the multi-network trainers: gradient accumulation, AMP scaling, eval mode.

``GradientSteps(loss)`` backpropagates ``loss / k`` each minibatch and, every ``k`` minibatches
(``minibatches_per_step``), steps every optimizer and zeroes their gradients; it returns True then,
so the trainer knows to move its target networks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


class GradientSteps:
    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], every: int, amp_dtype: torch.dtype | None):
        self.optimizers = optimizers
        self.every = every
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        self.minibatches = 0

    def __call__(self, loss: Tensor) -> bool:
        self.scaler.scale(loss / self.every).backward()
        self.minibatches += 1
        if self.minibatches % self.every:
            return False
        for optimizer in self.optimizers.values():
            self.scaler.step(optimizer)
        self.scaler.update()
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        return True

    @property
    def learning_rate(self) -> float:
        """The learning rate of the first optimizer (the one the loop logs)."""
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {"optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
                "scaler": self.scaler.state_dict(), "minibatches": self.minibatches}

    def load_state_dict(self, state: dict) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.scaler.load_state_dict(state["scaler"])
        self.minibatches = int(state["minibatches"])


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
