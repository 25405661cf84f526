"""Container images the pipeline names: the runtime image (CPU), the trainer image (CUDA) and the Spark
image the SparkApplications run in (``spark_mode=kubernetes``).

All have ``batchrl`` and everything it needs installed, so no step installs packages at run time.
Tags default to the package version, so a compiled pipeline names exactly the code it was compiled
from. ``images/`` builds them (``make images``, registry ``$BATCHRL_IMAGE_REGISTRY``); a user who
pushes them to their own registry compiles with ``batchrl pipeline compile --registry REGISTRY`` and
renders the manifests with the kustomize ``images:`` override (docs/deploy.md, "First run").
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

from batchrl import __version__

#: Where the project publishes its images; not reachable for a user who builds their own.
REGISTRY = "ghcr.io/batchrl"
RUNTIME_NAME = "batchrl-runtime"
TRAINER_NAME = "batchrl-trainer"
SPARK_NAME = "batchrl-spark"


@dataclass(frozen=True)
class Images:
    """Image references: ``runtime`` for the data and evaluation steps, ``trainer`` for training,
    ``spark`` for SparkApplications (the ``image`` of the pipeline's ``spark_kubernetes`` default)."""

    runtime: str
    trainer: str
    spark: str

    @classmethod
    def for_tag(cls, tag: str = __version__, registry: str = REGISTRY) -> Images:
        registry = registry.rstrip("/")
        return cls(*(f"{registry}/{name}:{tag}" for name in (RUNTIME_NAME, TRAINER_NAME, SPARK_NAME)))

    def references(self) -> tuple[str, ...]:
        return astuple(self)


DEFAULT_IMAGES = Images.for_tag()
