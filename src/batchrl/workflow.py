"""``batchrl run``: the whole batch-RL workflow from one ReAgent-shaped config, on one machine.

generate (or ``--input`` logged data) -> validate -> timeline -> normalize -> prepare -> train ->
evaluate, each by calling the same stage function the CLI and the KFP components call. Artifacts
land under ``workdir`` with fixed names (:data:`ARTIFACTS`); the summary says where each one is.
``normalize_actions`` finds the CONTINUOUS_ACTION bounds of continuous (map) actions, which ``prepare``
and the exported actor use (for discrete actions it writes an empty normalization).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from batchrl import stages, storage
from batchrl.config import WorkflowConfig
from batchrl.errors import BatchRLError
from batchrl.results import StageResult

log = logging.getLogger(__name__)
ResultT = TypeVar("ResultT", bound=StageResult)

#: Artifact name -> path under the workdir.
ARTIFACTS = {
    "logged": "logged",
    "timeline": "timeline",
    "normalization": "normalization.json",
    "action_normalization": "action_normalization.json",
    "train": "training_table/train",
    "eval": "training_table/eval",
    "model": "model",
    "evaluation": "evaluation",
}

DEFAULT_DS = stages.DEFAULT_DS
DEFAULT_TRANSITIONS = stages.DEFAULT_TRANSITIONS
episode_limit = stages.episode_limit  # re-exported: callers of batchrl.workflow.episode_limit


@dataclass
class RunOptions:
    """What ``batchrl run`` may change beside the config."""

    workdir: str
    input: str | None = None  # logged table to use instead of generating one
    ds: str = DEFAULT_DS  # the ds written by generate
    start_ds: str | None = None  # timeline range; None: the range present in the logged table
    end_ds: str | None = None
    spark_master: str = "local[*]"
    engine: str | None = None  # data stages' engine; None: the config's (auto: DuckDB)
    device: str | None = None
    evaluate: bool = True
    stop_after: str | None = None  # a stage name: stop once it is done (e.g. "prepare": the data stages only)
    #: Called after each stage with its name, its typed result and its seconds.
    on_stage: Callable[[str, StageResult, float], None] | None = field(default=None, repr=False)


def artifact_uris(workdir: str) -> dict[str, str]:
    base = workdir.rstrip("/")
    return {name: f"{base}/{path}" for name, path in ARTIFACTS.items()}


class _Stop(Exception):
    """Raised after ``RunOptions.stop_after``'s stage."""


def run_workflow(config: WorkflowConfig, options: RunOptions) -> dict[str, Any]:
    """Run every stage in order (up to ``options.stop_after``); return {stage: its result as a dict
    (:meth:`~batchrl.results.StageResult.to_dict`)} plus the artifact locations."""
    try:
        return _run_stages(config, options)
    except _Stop as stop:
        results: dict[str, Any] = stop.args[0]
        storage.write_json(f"{options.workdir.rstrip('/')}/run_summary.json", results)
        return results


def _run_stages(config: WorkflowConfig, options: RunOptions) -> dict[str, Any]:
    """Each stage of :data:`batchrl.stages.STAGES` with its options from the config (the ones the KFP
    pipeline's defaults come from), on the artifacts under the workdir."""
    from batchrl.data.gym_logging import generate
    from batchrl.data.normalize import normalize, normalize_actions
    from batchrl.data.prepare import prepare
    from batchrl.data.timeline import timeline
    from batchrl.data.validation import validate_input
    from batchrl.evaluation.evaluate import evaluate
    from batchrl.training.train import train

    uris = artifact_uris(options.workdir)
    if options.input is not None:
        uris["logged"] = options.input
    engine, master = options.engine or config.engine, options.spark_master
    results: dict[str, Any] = {"algorithm": config.model.name, "artifacts": {}}
    context = stages.Context(ds=options.ds)

    def run(name: str, fn: Callable[..., ResultT]) -> ResultT:
        spec = stages.SPECS[name]
        stage_options = spec.options(config, context) if spec.options else None
        start = time.perf_counter()
        result = fn(*(uris[a] for a in spec.inputs), *(uris[a] for a in spec.outputs), stage_options)
        elapsed = time.perf_counter() - start
        results[name] = result.to_dict()
        for artifact in spec.outputs:
            results["artifacts"][name if artifact == spec.outputs[0] else artifact] = uris[artifact]
        if options.on_stage:
            options.on_stage(name, result, elapsed)
        if name == options.stop_after:
            raise _Stop(results)
        return result

    if options.input is None:
        if not config.env_name:
            raise BatchRLError("the config names no env_name and no --input was given",
                               fix="set env_name (e.g. CartPole-v0) or pass --input LOGGED_TABLE_URI")
        run("generate", generate)
    else:
        results["artifacts"]["logged"] = options.input
    checked = run("validate", lambda logged, _: validate_input(logged, master, engine))
    context = stages.Context(ds=options.ds, start_ds=options.start_ds or checked.min_ds,
                             end_ds=options.end_ds or checked.max_ds)
    data = {"spark_master": master, "engine": engine}
    run("timeline", lambda logged, out, opts: timeline(logged, out, opts, **data))
    run("normalize", lambda timeline_, out, opts: normalize(timeline_, out, opts, **data))
    run("normalize_actions", lambda timeline_, out, opts: normalize_actions(timeline_, out, opts, **data))
    run("prepare", lambda timeline_, norm, action_norm, train_, eval_, opts: prepare(
        timeline_, norm, train_, eval_, opts, master, action_norm, engine))
    run("train", lambda train_, eval_, norm, model, cfg: train(cfg, train_, eval_, norm, model,
                                                               device=options.device))
    if options.evaluate:
        run("evaluate", evaluate)
    storage.write_json(f"{options.workdir.rstrip('/')}/run_summary.json", results)
    return results
