"""What offline and online training feed their trainers: the device, mixed precision, and batches whose
states are replaced by the network input (the Preprocessor's output)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from batchrl.data.loader import Batch
from batchrl.errors import BatchRLError
from batchrl.preprocessing.preprocessor import Preprocessor


def resolve_device(requested: str | None) -> torch.device:
    """``auto`` (or None): CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BatchRLError(f"device '{requested}' requested but no CUDA device is available",
                           fix="use --device cpu (or auto), or run on a machine with a GPU")
    try:
        return torch.device(requested)
    except RuntimeError as exc:
        raise BatchRLError(f"unknown device '{requested}'", fix="use auto, cpu, cuda or cuda:N") from exc


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA: bfloat16 where supported, else float16 (with a gradient scaler)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def preprocess_fn(preprocessor: Preprocessor, action_preprocessor: Preprocessor | None = None
                  ) -> Callable[[Batch], Batch]:
    """Batch -> Batch with states replaced by the network input (run on the batch's device); with an
    ``action_preprocessor``, continuous actions scaled to [-1, 1] as well."""

    @torch.no_grad()
    def transform(batch: Batch) -> Batch:
        batch = replace(batch, state=preprocessor(batch.state, batch.state_presence), state_presence=None,
                        next_state=preprocessor(batch.next_state, batch.next_state_presence),
                        next_state_presence=None)
        if action_preprocessor is not None:
            batch = replace(batch, action=action_preprocessor(batch.action, batch.action_presence),
                            action_presence=None)
        return batch

    return transform


def parametric_preprocess_fn(preprocessor: Preprocessor, item_preprocessor: Preprocessor) -> Callable[[Batch], Batch]:
    """Batch -> Batch for parametric actions: states as :func:`preprocess_fn`, and the chosen item, the next
    item and both candidate sets [B, K, A] through ``item_preprocessor`` (the network input of items)."""
    states = preprocess_fn(preprocessor)

    def items(values: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        flat: torch.Tensor = item_preprocessor(values.reshape(-1, values.shape[-1]),
                                               presence.reshape(-1, values.shape[-1]).float())
        return flat.reshape(*values.shape[:-1], flat.shape[-1])

    @torch.no_grad()
    def transform(batch: Batch) -> Batch:
        candidates, candidates_presence = batch.candidates, batch.candidates_presence
        next_candidates, next_presence = batch.next_candidates, batch.next_candidates_presence
        action_presence = batch.action_presence
        assert candidates is not None and candidates_presence is not None  # parametric tables carry them
        assert next_candidates is not None and next_presence is not None and action_presence is not None
        batch = states(batch)
        ones = torch.ones_like(batch.next_action)  # (the loader keeps no next-item presence: all present)
        return replace(batch, action=items(batch.action, action_presence), action_presence=None,
                       next_action=items(batch.next_action, ones),
                       candidates=items(candidates, candidates_presence), candidates_presence=None,
                       next_candidates=items(next_candidates, next_presence), next_candidates_presence=None)

    return transform


@torch.no_grad()
def network_input(preprocessor: Preprocessor, observation: np.ndarray, device: torch.device) -> torch.Tensor:
    """One environment observation (every value present) -> the network input float32[1, D]."""
    values = torch.as_tensor(np.ravel(observation), dtype=torch.float32, device=device).unsqueeze(0)
    features: torch.Tensor = preprocessor(values, torch.ones_like(values))
    return features
