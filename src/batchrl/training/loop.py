"""The training loop shared by every trainer: epochs, per-epoch evaluation, logging, checkpoints.

The trainers (:class:`~batchrl.training.trainer.Trainer`, then the CPE models) each return named 0-d loss
tensors from ``update(batch)`` and own their optimizer steps; the loop never computes a loss itself. After each epoch it evaluates on the eval table
(:mod:`batchrl.training.metrics`), writes TensorBoard scalars and, every ``checkpoint_every`` epochs
and after the last, a checkpoint. A non-finite loss stops training with a clear error.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from batchrl import storage
from batchrl.data.loader import TransitionLoader
from batchrl.errors import BatchRLError
from batchrl.progress import Progress
from batchrl.training.cpe_models import CPETrainer
from batchrl.training.trainer import Trainer

log = logging.getLogger(__name__)


class TensorBoardLog:
    """Scalars to ``<output>/tensorboard``; for a remote output, written locally and uploaded on flush."""

    def __init__(self, output: str, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        loc = storage.resolve(output)
        if loc.is_local:
            self.directory, self.remote = os.path.join(loc.path, "tensorboard"), None
        else:
            self.directory, self.remote = tempfile.mkdtemp(prefix="batchrl-tensorboard-"), loc.child("tensorboard")
        self.writer = SummaryWriter(self.directory, purge_step=purge_step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self.writer.flush()
        self._upload()

    def _upload(self) -> None:
        if self.remote is not None:
            for root, _, files in os.walk(self.directory):
                for name in files:
                    path = os.path.join(root, name)
                    rel = os.path.relpath(path, self.directory).replace(os.sep, "/")
                    with open(path, "rb") as fh:
                        storage.write_bytes(self.remote.child(rel).uri, fh.read())

    def close(self) -> None:
        self.writer.close()
        self._upload()
        if self.remote is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


#: How to fix a run whose losses became non-finite (offline and online training).
DIVERGED_FIX = ("lower the learning rate (trainer_param.optimizer), use rl.q_network_loss: huber, a smaller "
                "rl.target_update_rate, or check the rewards and normalization for extreme values")


def check_finite(values: dict[str, float], when: str, where: str, fix_prefix: str = "") -> None:
    """A :class:`BatchRLError` naming the non-finite ``values`` ("training diverged: ... {when}")."""
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad:
        raise BatchRLError(f"training diverged: {', '.join(bad)} became non-finite {when}", where=where,
                           fix=fix_prefix + DIVERGED_FIX)


def _finite_or_raise(values: dict[str, float], epoch: int, step: int, where: str, last_good: int | None) -> None:
    resume = (f"the last checkpoint is epoch {last_good}; " if last_good else "")
    check_finite(values, f"in epoch {epoch} (step {step})", where, resume)


@dataclass
class LoopState:
    """What a checkpoint must carry besides the models: progress and history."""

    epoch: int = 0  # last completed epoch
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainingLoop:
    """Runs epochs ``state.epoch + 1 .. num_epochs``.

    Args:
        trainers: trainers updated in turn on every batch (the Q trainer, then the CPE models).
        loader: training batches (already on the device, preprocessed).
        evaluate: epoch -> metrics dict (``eval``, ``q_values``, ``action_distribution``, ``cpe``, ...).
        save: (epoch, state) -> writes a checkpoint.
        learning_rate: current learning rate (logged).
    """

    trainers: list[Trainer | CPETrainer]
    loader: TransitionLoader
    evaluate: Callable[[int], dict[str, Any]]
    save: Callable[[int, LoopState], None]
    learning_rate: Callable[[], float]
    tensorboard: TensorBoardLog
    num_epochs: int
    checkpoint_every: int = 1
    log_every_steps: int = 50
    where: str = "training"
    train_seconds: float = 0.0
    train_rows: int = 0

    def _train_epoch(self, epoch: int, state: LoopState, last_good: int | None) -> dict[str, float]:
        sums: dict[str, torch.Tensor] = {}
        steps = rows = 0
        check_every = 1 if self.loader.device.type == "cpu" else self.log_every_steps
        start = time.perf_counter()
        with Progress(len(self.loader), f"epoch {epoch}/{self.num_epochs}", "batches") as bar:
            for batch in self.loader.epoch(epoch):
                terms: dict[str, torch.Tensor] = {}
                for trainer in self.trainers:
                    terms.update(trainer.update(batch))
                for name, value in terms.items():
                    sums[name] = sums[name] + value if name in sums else value.clone()
                steps += 1
                rows += len(batch)
                state.global_step += 1
                if steps % check_every == 0 or state.global_step % self.log_every_steps == 0:
                    current = {name: float(value) for name, value in terms.items()}
                    _finite_or_raise(current, epoch, state.global_step, self.where, last_good)
                    if state.global_step % self.log_every_steps == 0:
                        self.tensorboard.scalars({f"train/{k}": v for k, v in current.items()}, state.global_step)
                        self.tensorboard.scalars({"train/learning_rate": self.learning_rate()}, state.global_step)
                bar.update(1)
        if self.loader.device.type == "cuda":
            torch.cuda.synchronize(self.loader.device)
        seconds = time.perf_counter() - start
        self.train_seconds += seconds
        self.train_rows += rows
        means = {name: float(total) / max(steps, 1) for name, total in sums.items()}
        _finite_or_raise(means, epoch, state.global_step, self.where, last_good)
        means.update(steps=steps, rows=rows, seconds=round(seconds, 3),
                     transitions_per_s=round(rows / seconds, 1) if seconds > 0 else 0.0)
        return means

    def run(self, state: LoopState) -> LoopState:
        last_good = state.epoch or None
        for epoch in range(state.epoch + 1, self.num_epochs + 1):
            train = self._train_epoch(epoch, state, last_good)
            metrics = self.evaluate(epoch)
            record = {"epoch": epoch, "global_step": state.global_step, "learning_rate": self.learning_rate(),
                      "train": train, **metrics}
            state.history.append(record)
            state.epoch = epoch
            for trainer in self.trainers:
                trainer.end_epoch()  # learning-rate schedules
            self._log_epoch(record, state.global_step)
            log.info("epoch %d/%d: train loss %.4g, eval td_loss %.4g, %.0f transitions/s", epoch,
                     self.num_epochs, train.get("loss", float("nan")),
                     metrics.get("eval", {}).get("td_loss", float("nan")), train["transitions_per_s"])
            if epoch % self.checkpoint_every == 0 or epoch == self.num_epochs:
                self.save(epoch, state)
                last_good = epoch
        self.tensorboard.flush()
        return state

    def _log_epoch(self, record: dict[str, Any], step: int) -> None:
        scalars: dict[str, float] = {"epoch/learning_rate": record["learning_rate"]}
        for name, value in record["train"].items():
            if name in ("steps", "rows", "seconds"):
                continue
            scalars["perf/transitions_per_s" if name == "transitions_per_s" else f"epoch/train_{name}"] = value
        for name, value in record.get("eval", {}).items():
            scalars[f"eval/{name}"] = value
        for action, value in record.get("q_values", {}).items():
            scalars[f"q_values/{action}"] = value
        for action, value in record.get("action_distribution", {}).items():
            scalars[f"action_distribution/{action}"] = value
        for action, value in record.get("logged_action_distribution", {}).items():
            scalars[f"logged_action_distribution/{action}"] = value
        for name, estimate in record.get("cpe", {}).items():
            for key in ("raw", "normalized"):
                if isinstance(estimate.get(key), float) and math.isfinite(estimate[key]):
                    scalars[f"CPE/{name}/{key}"] = estimate[key]
        self.tensorboard.scalars(scalars, step)
        self.tensorboard.flush()
