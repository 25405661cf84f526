"""Checkpoints: ``<output>/checkpoints/epoch-XXXX.pt``, one whole-file write each (local or s3://).

A checkpoint holds everything needed to continue exactly where the run stopped: network, target and
optimizer states, the random-number generator states, the epoch history and a fingerprint of the
settings that must not change across a resume.
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any

import pyarrow.fs as pafs
import torch

from batchrl import storage
from batchrl.errors import BatchRLError

log = logging.getLogger(__name__)

_NAME = re.compile(r"epoch-(\d{4,})\.pt$")


def checkpoint_uri(output: str, epoch: int) -> str:
    return f"{output.rstrip('/')}/checkpoints/epoch-{epoch:04d}.pt"


def list_checkpoints(output: str) -> dict[int, str]:
    """epoch -> URI of every checkpoint under ``output``."""
    directory = storage.resolve(f"{output.rstrip('/')}/checkpoints")
    try:
        infos = directory.fs.get_file_info(pafs.FileSelector(directory.path, allow_not_found=True))
    except OSError as exc:
        raise BatchRLError(f"could not list checkpoints: {exc}", where=directory.uri,
                           fix="check the output location and its permissions") from exc
    found = {}
    for info in infos:
        match = _NAME.search(info.base_name)
        if match and info.type == pafs.FileType.File:
            found[int(match.group(1))] = checkpoint_uri(output, int(match.group(1)))
    return dict(sorted(found.items()))


def save_checkpoint(output: str, epoch: int, state: dict[str, Any]) -> str:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    uri = checkpoint_uri(output, epoch)
    storage.write_bytes(uri, buffer.getvalue())
    log.info("checkpoint %s", uri)
    return uri


def prune_checkpoints(output: str, keep: int) -> list[str]:
    """Delete all but the ``keep`` latest checkpoints under ``output``; return the deleted URIs."""
    epochs = list(list_checkpoints(output).items())
    stale = [uri for _, uri in epochs[:-keep]] if keep < len(epochs) else []
    for uri in stale:
        storage.delete(uri)
    return stale


def load_checkpoint(uri: str) -> dict[str, Any]:
    data = storage.read_bytes(uri)
    try:
        state: dict[str, Any] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return state
    except Exception as exc:  # a truncated or foreign file: torch raises several types
        raise BatchRLError(f"unreadable checkpoint: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                           where=uri, fix="delete it to resume from the previous one, or start without --resume"
                           ) from None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
