"""Publishing a model that passed the pipeline's bar: the serving files, atomically, at one URI.

The published folder holds what serving and audit need, not the training state: the TorchScript
models, ``training_summary.json``, the evaluation's ``metrics.json`` and reports, and
``published.json`` (where each file came from, the score and the bar). It is written with the
storage commit protocol, so a reader never sees half a model (``_SUCCESS`` is written last).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from batchrl import storage
from batchrl.errors import BatchRLError
from batchrl.results import StageResult, when_set

log = logging.getLogger(__name__)

MODEL_FILES = ("model.torchscript", "reward_model.torchscript", "q_value_model.torchscript",
               "training_summary.json")
EVALUATION_FILES = ("metrics.json", "report.md", "report.html")
RECORD_FILE = "published.json"


@dataclass(frozen=True, kw_only=True)
class PublishResult(StageResult):
    """What :func:`publish` committed (also written as ``published.json`` and the commit's metadata)."""

    destination: str
    files: list[str]
    model: str
    evaluation: str
    score: float | None = when_set()  # the publish gate's number
    passed: bool | None = when_set()  # whether the model passed the gate

    METADATA: ClassVar[tuple[str, ...]] = ("destination", "files", "score")


def publish(model: str, evaluation: str, destination: str, *, score: float | None = None,
            passed: bool | None = None) -> PublishResult:
    """Copy the model's serving files and the evaluation's reports from ``model``/``evaluation`` to
    ``destination``; the gate's ``score`` and ``passed`` are stored with them in ``published.json``."""
    model, evaluation = model.rstrip("/"), evaluation.rstrip("/")
    if not storage.exists(f"{model}/{MODEL_FILES[0]}"):
        raise BatchRLError(f"no {MODEL_FILES[0]} in the model folder", where=model,
                           fix="publish the output folder of the train stage")
    sources = [f"{model}/{name}" for name in MODEL_FILES] + [f"{evaluation}/{name}" for name in EVALUATION_FILES]
    sources = [uri for uri in sources if storage.exists(uri)]
    copied = []
    with storage.DatasetWriter(destination) as writer:
        for uri in sources:
            name = uri.rsplit("/", 1)[-1]
            storage.write_bytes(writer.staging.child(name).uri, storage.read_bytes(uri))
            copied.append(name)
        result = PublishResult(destination=destination, files=copied, model=model, evaluation=evaluation,
                               score=score, passed=passed)
        storage.write_json(writer.staging.child(RECORD_FILE).uri, result.to_dict())
        writer.commit({"stage": "publish", **result.to_dict()})
    log.info("published %d files to %s", len(copied), destination)
    return result
