"""Container images the components run in: the project's runtime image (CPU) and trainer image (CUDA).

Both have ``batchrl`` and everything it needs installed, so no step installs packages at run time.
Tags default to the package version, so a compiled pipeline names exactly the code it was compiled
from. ``images/`` builds them (``make images``).
"""

from __future__ import annotations

from dataclasses import dataclass

from batchrl import __version__

REGISTRY = "ghcr.io/batchrl"
RUNTIME_NAME = "batchrl-runtime"
TRAINER_NAME = "batchrl-trainer"


@dataclass(frozen=True)
class Images:
    """Image references: ``runtime`` for the data and evaluation steps, ``trainer`` for training."""

    runtime: str
    trainer: str

    @classmethod
    def for_tag(cls, tag: str = __version__, registry: str = REGISTRY) -> Images:
        registry = registry.rstrip("/")
        return cls(runtime=f"{registry}/{RUNTIME_NAME}:{tag}", trainer=f"{registry}/{TRAINER_NAME}:{tag}")


DEFAULT_IMAGES = Images.for_tag()
