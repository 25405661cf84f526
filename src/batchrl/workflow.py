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
from typing import Any

from batchrl import storage
from batchrl.config import PreprocessingOptions, WorkflowConfig
from batchrl.errors import BatchRLError

log = logging.getLogger(__name__)

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

DEFAULT_DS = "2019-01-01"
DEFAULT_TRANSITIONS = 30_000


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
    on_stage: Callable[[str, dict[str, Any], float], None] | None = field(default=None, repr=False)


def artifact_uris(workdir: str) -> dict[str, str]:
    base = workdir.rstrip("/")
    return {name: f"{base}/{path}" for name, path in ARTIFACTS.items()}


def episode_limit(env_id: str, max_steps: int | None) -> int | None:
    """ReAgent's ``max_steps``: a cap on top of the environment's own time limit, never beyond it."""
    import gymnasium as gym

    try:
        own = gym.spec(env_id).max_episode_steps
    except gym.error.Error:
        return max_steps  # generate reports the unknown id
    return min(own, max_steps) if own and max_steps else (max_steps or None)


def _normalize_options(prep: PreprocessingOptions, seed: int):
    """The normalize stage's options from a model's preprocessing block (the same names); ``seed`` when the
    block sets none."""
    from batchrl.data.normalize import NormalizeOptions

    return NormalizeOptions(**{"seed": seed, **prep.model_dump(exclude_none=True)})


class _Stop(Exception):
    """Raised after ``RunOptions.stop_after``'s stage."""


def run_workflow(config: WorkflowConfig, options: RunOptions) -> dict[str, Any]:
    """Run every stage in order (up to ``options.stop_after``); return {stage: summary} plus the artifact
    locations."""
    try:
        return _run_stages(config, options)
    except _Stop as stop:
        results = stop.args[0]
        storage.write_json(f"{options.workdir.rstrip('/')}/run_summary.json", results)
        return results


def _run_stages(config: WorkflowConfig, options: RunOptions) -> dict[str, Any]:
    from batchrl.data.gym_logging import GenerateOptions, generate
    from batchrl.data.normalize import normalize, normalize_actions
    from batchrl.data.prepare import PrepareOptions, prepare
    from batchrl.data.timeline import make_options, timeline
    from batchrl.data.validation import validate_input
    from batchrl.evaluation.evaluate import EvaluateOptions, evaluate
    from batchrl.training.train import train

    uris = artifact_uris(options.workdir)
    engine, master = options.engine or config.engine, options.spark_master
    model, continuous = config.model.value, config.model.continuous
    trainer = model.trainer_param
    results: dict[str, Any] = {"algorithm": config.model.name, "artifacts": {}}
    max_steps = episode_limit(config.env_name, config.max_steps) if config.env_name else config.max_steps

    def stage(name: str, fn: Callable[[], dict[str, Any]], artifact: str | None = None) -> dict[str, Any]:
        start = time.perf_counter()
        summary = fn()
        elapsed = time.perf_counter() - start
        results[name] = summary
        if artifact:
            results["artifacts"][name] = uris[artifact]
        if options.on_stage:
            options.on_stage(name, summary, elapsed)
        if name == options.stop_after:
            raise _Stop(results)
        return summary

    logged = options.input or uris["logged"]
    if options.input is None:
        if not config.env_name:
            raise BatchRLError("the config names no env_name and no --input was given",
                               fix="set env_name (e.g. CartPole-v0) or pass --input LOGGED_TABLE_URI")
        stage("generate", lambda: generate(logged, GenerateOptions(
            env=config.env_name, transitions=config.num_train_transitions or DEFAULT_TRANSITIONS,
            seed=config.seed, ds=options.ds, max_steps=max_steps)), "logged")
    else:
        results["artifacts"]["logged"] = logged
    checked = stage("validate", lambda: validate_input(logged, master, engine))
    timeline_options = make_options({"startDs": options.start_ds or checked["min_ds"],
                                     "endDs": options.end_ds or checked["max_ds"],
                                     "addTerminalStateRow": True}, where="batchrl run")
    stage("timeline", lambda: timeline(logged, uris["timeline"], timeline_options, master, engine), "timeline")
    state_options = _normalize_options(model.state_options if continuous else model.preprocessing_options,
                                       config.seed)
    stage("normalize", lambda: normalize(uris["timeline"], uris["normalization"], state_options, master, engine),
          "normalization")
    action_prep = (model.action_preprocessing_options if continuous else None) or PreprocessingOptions()
    action_options = _normalize_options(action_prep, config.seed)
    stage("normalize_actions", lambda: normalize_actions(uris["timeline"], uris["action_normalization"],
                                                         action_options, master, engine),
          "action_normalization")
    spec = config.input_table_spec
    prepare_options = PrepareOptions(
        actions=None if continuous else list(trainer.actions),
        table_sample=spec.table_sample if spec.table_sample is not None else 90,
        eval_table_sample=spec.eval_table_sample if spec.eval_table_sample is not None else 10,
        multi_steps=trainer.rl.multi_steps, gamma=trainer.rl.gamma)
    stage("prepare", lambda: prepare(uris["timeline"], uris["normalization"], uris["train"], uris["eval"],
                                     prepare_options, master, uris["action_normalization"], engine), "train")
    results["artifacts"]["eval"] = uris["eval"]
    stage("train", lambda: train(config, uris["train"], uris["eval"], uris["normalization"], uris["model"],
                                 device=options.device), "model")
    if options.evaluate:
        evaluate_options = EvaluateOptions(
            env=config.env_name, episodes=config.num_eval_episodes or 100, seed=config.seed,
            passing_score_bar=config.passing_score_bar, max_steps=max_steps)
        stage("evaluate", lambda: evaluate(uris["model"], uris["eval"], uris["evaluation"], evaluate_options),
              "evaluation")
    storage.write_json(f"{options.workdir.rstrip('/')}/run_summary.json", results)
    return results
