"""Optimizers from ReAgent-shaped config blocks, and soft target updates."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from batchrl.config import AdamParameters, OptimizerConfig


def build_optimizer(config: OptimizerConfig, parameters: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """``{Adam: {...}}`` -> torch.optim.Adam (L2 in the gradient), AdamW (decoupled decay), SGD."""
    p = config.params
    if isinstance(p, AdamParameters):  # Adam or AdamW
        cls = torch.optim.Adam if config.name == "Adam" else torch.optim.AdamW
        return cls(parameters, lr=p.lr, weight_decay=p.weight_decay, betas=p.betas, eps=p.eps, amsgrad=p.amsgrad)
    return torch.optim.SGD(parameters, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay,
                           nesterov=p.nesterov)


def build_schedulers(config: OptimizerConfig, optimizer: torch.optim.Optimizer
                     ) -> list[torch.optim.lr_scheduler.LRScheduler]:
    """The ``lr_schedulers`` of the optimizer block, each stepped once per epoch (chained)."""
    out: list[torch.optim.lr_scheduler.LRScheduler] = []
    for entry in config.params.lr_schedulers:
        cls = getattr(torch.optim.lr_scheduler, entry.name)
        out.append(cls(optimizer, **getattr(entry, entry.name).model_dump()))
    return out


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: theta_T <- tau * theta + (1 - tau) * theta_T, for every parameter;
    buffers are copied."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, tau)
    for target_buffer, source_buffer in zip(target.buffers(), source.buffers(), strict=True):
        target_buffer.copy_(source_buffer)
