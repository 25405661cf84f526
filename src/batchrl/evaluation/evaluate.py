"""The evaluate stage: counterfactual evaluation on the eval table, gym rollouts, reports.

Reads a model directory written by ``batchrl train`` (``model.torchscript``; the CPE models
``reward_model.torchscript`` and ``q_value_model.torchscript`` when CPE ran in training;
``training_summary.json`` for gamma, temperature and the training curves) and writes to ``output``:
``metrics.json`` (every CPE estimate with its 95% interval, diagnostics and warnings, the estimator
recommended for decisions, the gym returns), ``report.md`` (tables), ``report.html`` (self-contained,
with plots) and ``cpe_inputs.parquet`` (the numbers CPE was computed from, in ``batchrl cpe``'s table
format, so anyone can recompute or audit the estimates). Everything is computed before anything is
written. The logging policy's probabilities of every action come from a model fitted on the eval
table's states (:mod:`batchrl.evaluation.logging_policy`), with its calibration reported. Without a
reward model the estimators that need one are skipped; without a value model the sequential
estimators use FQE's Q as their value model. Each fallback is recorded in ``notes``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from batchrl import storage
from batchrl.errors import BatchRLError
from batchrl.evaluation import report
from batchrl.evaluation.cpe import (
    CPEInputs,
    counterfactual_estimates,
    estimate_fqe,
    kind_of,
    recommend,
    target_policy_probs,
)
from batchrl.evaluation.cpe_table import inputs_to_table, table_bytes
from batchrl.evaluation.estimators.core import bootstrap_counts
from batchrl.evaluation.estimators.fqe import FQEConfig, FQEInputs
from batchrl.evaluation.logging_policy import LoggingPolicyConfig, fit_logging_policy
from batchrl.results import StageResult
from batchrl.serving.export import LoadedModel, load_policy

log = logging.getLogger(__name__)

MODEL_FILE = "model.torchscript"
REWARD_MODEL_FILE = "reward_model.torchscript"
VALUE_MODEL_FILE = "q_value_model.torchscript"
SUMMARY_FILE = "training_summary.json"
METRICS_FILE = "metrics.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
CPE_INPUTS = "cpe_inputs.parquet"
DEFAULT_GAMMA = 0.99
DEFAULT_TEMPERATURE = 1.0


class EvaluateOptions(BaseModel):
    """Options of the evaluate stage (``num_eval_episodes`` is accepted for ``episodes``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    env: str | None = None
    episodes: int = Field(default=50, gt=0, validation_alias=AliasChoices("episodes", "num_eval_episodes"))
    seed: int = 42
    passing_score_bar: float | None = None
    gamma: float | None = Field(default=None, ge=0.0, le=1.0)  # None: the training summary's
    temperature: float | None = Field(default=None, ge=0.0)  # None: the training summary's; 0: greedy
    bootstrap: int = Field(default=200, ge=0, le=100_000)
    switch_threshold: float = Field(default=10.0, gt=0.0)
    fqe: bool = True
    fqe_iterations: int = Field(default=1000, gt=0)  # a cap: FQE stops when its value settles
    num_envs: int = Field(default=16, ge=1, le=1024)
    max_steps: int | None = Field(default=None, gt=0)
    #: candidate-set environments: the ``logging`` baseline's policy (random, heuristic-softmax or myopic)
    logging_policy: str = "random"
    logging_temperature: float = Field(default=1.0, gt=0.0)



def _optional_model(uri: str) -> LoadedModel | None:
    return load_policy(uri) if storage.exists(uri) else None


def _check_model_matches(policy: LoadedModel, other: LoadedModel, name: str, where: str) -> None:
    if other.action_names != policy.action_names or other.feature_ids != policy.feature_ids:
        raise BatchRLError(f"{name} has other actions or features than {MODEL_FILE}", where=where,
                           fix="use the files of one `batchrl train` run")


def _settings(options: EvaluateOptions, summary: dict[str, Any], notes: list[str]) -> tuple[float, float]:
    gamma = options.gamma if options.gamma is not None else summary.get("gamma")
    if gamma is None:
        gamma = DEFAULT_GAMMA
        notes.append(f"no gamma in {SUMMARY_FILE} or the options: using {DEFAULT_GAMMA}")
    temperature = options.temperature if options.temperature is not None else summary.get("temperature")
    if temperature is None:
        temperature = DEFAULT_TEMPERATURE
        notes.append(f"no temperature in {SUMMARY_FILE} or the options: using {DEFAULT_TEMPERATURE}")
    return float(gamma), float(temperature)


def _multi_steps(eval_uri: str) -> int:
    """k of the eval table's k-step rows (1: one-step rows)."""
    from batchrl.data.loader import dataset_info

    return dataset_info(eval_uri).multi_steps or 1


def counterfactual_evaluation(model_dir: str, policy: LoadedModel, eval_uri: str, options: EvaluateOptions,
                              gamma: float, temperature: float, notes: list[str]) -> dict[str, Any]:
    """CPE of ``policy`` (pi = masked softmax(Q/temperature)) on the eval table."""
    from batchrl.data.loader import dataset_info, read_eval_batch

    info = dataset_info(eval_uri)
    if info.action_names != policy.action_names or info.feature_ids != policy.feature_ids:
        raise BatchRLError(
            f"the eval table (actions {info.action_names}, feature ids {info.feature_ids}) does not match the "
            f"model (actions {policy.action_names}, feature ids {policy.feature_ids})", where=eval_uri,
            fix="evaluate on the eval table prepared with the model's training table")
    batch = read_eval_batch(eval_uri, info)
    # an eval batch is untransformed (raw features with their presence) and carries episode ids
    assert batch.state_presence is not None and batch.next_state_presence is not None and batch.episode is not None
    if len(batch) == 0:
        raise BatchRLError("the eval table has no rows with a logged action", where=eval_uri,
                           fix="prepare a non-empty eval table (eval_table_sample > 0)")
    reward_model = _optional_model(f"{model_dir}/{REWARD_MODEL_FILE}")
    value_model = _optional_model(f"{model_dir}/{VALUE_MODEL_FILE}")
    for name, other in ((REWARD_MODEL_FILE, reward_model), (VALUE_MODEL_FILE, value_model)):
        if other is not None:
            _check_model_matches(policy, other, name, model_dir)
    q = policy.outputs(batch.state, batch.state_presence)
    state = batch.state * batch.state_presence
    logging_model = fit_logging_policy(state, batch.action, batch.action_probability.double(),
                                       len(policy.action_names), batch.possible_actions_mask,
                                       LoggingPolicyConfig(seed=options.seed))
    inputs = CPEInputs(
        reward=batch.reward.double(), action=batch.action, logged_propensity=batch.action_probability.double(),
        target_probs=target_policy_probs(q, batch.possible_actions_mask, temperature),
        reward_hat=None if reward_model is None else reward_model.outputs(batch.state, batch.state_presence).double(),
        q_hat=None if value_model is None else value_model.outputs(batch.state, batch.state_presence).double(),
        episode=batch.episode, not_terminal=batch.not_terminal,
        logging_probs=logging_model.probs)
    if reward_model is None:
        notes.append(f"no {REWARD_MODEL_FILE} (CPE was off in training): DM, DR, Switch and SwitchDR skipped")
    estimates: dict[str, dict[str, Any]] = {}
    value_source = VALUE_MODEL_FILE if value_model is not None else None
    if options.fqe:
        next_q = policy.outputs(batch.next_state, batch.next_state_presence)
        fqe_inputs = FQEInputs(
            state=state, action=batch.action, reward=batch.reward,
            next_state=batch.next_state * batch.next_state_presence, not_terminal=batch.not_terminal,
            next_target_probs=target_policy_probs(next_q, batch.possible_next_actions_mask, temperature))
        config = FQEConfig(iterations=options.fqe_iterations, seed=options.seed)
        estimates["FQE"], fitted = estimate_fqe(inputs, fqe_inputs, gamma, options.seed, options.bootstrap, config)
        if value_model is None:
            with torch.no_grad():
                inputs.q_hat = fitted(fqe_inputs.state).double()
            value_source = "FQE"
            notes.append(f"no {VALUE_MODEL_FILE}: the sequential estimators use FQE's Q as their value model")
    elif value_model is None:
        notes.append(f"no {VALUE_MODEL_FILE} and FQE off: SDR, WDR and MAGIC skipped")
    result = counterfactual_estimates(inputs, gamma, options.seed, options.bootstrap,
                                      switch_threshold=options.switch_threshold)
    estimates = {**result["estimates"], **estimates}
    warning = logging_model.warning()
    if warning is not None and "Switch" in estimates:
        estimates["Switch"]["warnings"].append(warning)
    return {
        "estimates": estimates,
        "kinds": {name: kind_of(name) for name in estimates},
        "skipped": result["skipped"],
        "recommended": recommend(estimates, result["logging_policy"]["longest_episode"]),
        "logging_policy": result["logging_policy"],
        "logging_policy_model": {"calibration": logging_model.calibration, "used_by": ["Switch"],
                                 "warning": warning},
        "reward_model": REWARD_MODEL_FILE if reward_model is not None else None,
        "value_model": value_source,
        "target_policy": "greedy" if temperature <= 0 else f"softmax(Q/{temperature:g}) over possible actions",
        "inputs": inputs,
    }


def return_statistics(returns: np.ndarray, replicates: int, seed: int) -> dict[str, float]:
    """Mean, std, extremes and a 95% percentile bootstrap interval of the mean of episode returns."""
    values = torch.as_tensor(returns, dtype=torch.float64)
    stats = {"mean_return": float(values.mean()), "std_return": float(values.std()) if len(values) > 1 else 0.0,
             "min_return": float(values.min()), "max_return": float(values.max()),
             "median_return": float(values.median())}
    low = high = float("nan")
    if replicates > 0 and len(values) > 1:
        means = bootstrap_counts(len(values), replicates, seed) @ values / len(values)
        low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {**stats, "ci_low": low, "ci_high": high}


def _rollout_summary(rollouts: Any, options: EvaluateOptions) -> dict[str, Any]:
    return {**return_statistics(rollouts.returns, options.bootstrap, options.seed),
            "mean_discounted_return": float(rollouts.discounted_returns.mean()),
            # the simulated truth's own sampling error: std / sqrt(episodes)
            "discounted_return_std_error": float(np.std(rollouts.discounted_returns, ddof=1)
                                                 / np.sqrt(len(rollouts.discounted_returns)))
            if len(rollouts.discounted_returns) > 1 else float("nan"),
            "mean_length": float(rollouts.lengths.mean()), "returns": rollouts.returns.tolist()}


def candidate_gym_evaluation(policy: LoadedModel, options: EvaluateOptions, gamma: float, temperature: float
                             ) -> dict[str, Any]:
    """A parametric model in a candidate-set environment, with the ``logging``, ``myopic`` and ``random``
    baselines over the same episodes (:mod:`batchrl.evaluation.candidate_rollouts`) under ``baselines``."""
    from batchrl.evaluation.candidate_rollouts import candidate_rollouts

    assert options.env is not None
    model, baselines, target = candidate_rollouts(policy, options.env, options.episodes, options.seed, gamma,
                                                  options.max_steps, options.logging_policy,
                                                  options.logging_temperature, temperature)
    return {"env": options.env, "episodes": options.episodes, "seed": options.seed, "policy": "greedy",
            "gamma": gamma, **_rollout_summary(model, options),
            # the truth CPE estimates: the softmax(Q/temperature) policy's simulated returns
            "target_policy": {"temperature": temperature, **{k: v for k, v in _rollout_summary(target, options).items()
                                                             if k != "returns"}},
            "baselines": {name: {k: v for k, v in _rollout_summary(r, options).items() if k != "returns"}
                          | ({"policy": options.logging_policy, "temperature": options.logging_temperature}
                             if name == "logging" else {})
                          for name, r in baselines.items()}}


def gym_evaluation(policy: LoadedModel, options: EvaluateOptions, gamma: float, temperature: float = 0.0
                   ) -> dict[str, Any]:
    from batchrl.evaluation.rollouts import greedy_rollouts

    assert options.env is not None
    if policy.parametric:
        return candidate_gym_evaluation(policy, options, gamma, temperature)
    rollouts = greedy_rollouts(policy, options.env, options.episodes, options.seed, gamma=gamma,
                               num_envs=options.num_envs, max_steps=options.max_steps)
    return {
        "env": options.env, "episodes": options.episodes, "seed": options.seed, "policy": "greedy",
        **return_statistics(rollouts.returns, options.bootstrap, options.seed),
        "mean_discounted_return": float(rollouts.discounted_returns.mean()), "gamma": gamma,
        "mean_length": float(rollouts.lengths.mean()),
        "returns": rollouts.returns.tolist(),
    }


@dataclass(frozen=True, kw_only=True)
class EvaluateResult(StageResult):
    """What :func:`evaluate` wrote and its headline numbers (the rest is in ``metrics.json``)."""

    output: str
    metrics: str  # the metrics.json URI
    report_md: str
    report_html: str
    gym_score: float | None  # the mean return of the greedy rollouts; None: no env
    gym: dict[str, Any] | None  # the rollouts' statistics (without the per-episode returns)
    cpe: dict[str, Any]  # estimator -> estimate; empty without an eval table (or for continuous actions)
    cpe_recommended: dict[str, Any] | None  # the estimator the diagnostics trust, or why none
    passing_score_bar: float | None
    passed: bool | None  # gym_score >= passing_score_bar; None: no bar or no rollouts
    notes: list[str]
    seconds: float

    METADATA: ClassVar[tuple[str, ...]] = ("passing_score_bar", "gym_score", "notes")
    HEADLINE: ClassVar[tuple[str, ...]] = ("gym_score",)


def evaluate(model: str, eval: str | None, output: str, options: EvaluateOptions) -> EvaluateResult:
    """Evaluate the model in ``model`` (a ``batchrl train`` output) on ``eval`` and/or in
    ``options.env``; write ``metrics.json``, ``report.md`` and ``report.html`` to ``output``."""
    started = time.perf_counter()
    model_dir, output = model.rstrip("/"), output.rstrip("/")
    if eval is None and options.env is None:
        raise BatchRLError("nothing to evaluate: neither an eval table nor an environment was given",
                           fix="pass --eval EVAL_TABLE_URI and/or --env ENV_ID")
    policy = load_policy(f"{model_dir}/{MODEL_FILE}")
    summary_uri = f"{model_dir}/{SUMMARY_FILE}"
    training = storage.read_json(summary_uri) if storage.exists(summary_uri) else {}
    notes: list[str] = []
    if not training:
        notes.append(f"no {SUMMARY_FILE} in the model directory: no training curves")
    gamma, temperature = _settings(options, training, notes)
    metrics: dict[str, Any] = {
        "model": model_dir, "eval": eval, "gamma": gamma, "temperature": temperature, "seed": options.seed,
        "bootstrap": options.bootstrap, "action_names": policy.action_names, "notes": notes,
        "training": {key: training.get(key) for key in ("algorithm", "epochs", "final_losses", "eval_td_loss",
                                                        "train_rows", "eval_rows") if key in training},
    }
    if eval is not None and policy.parametric:
        from batchrl.evaluation.candidate_cpe import candidate_cpe

        metrics["cpe"] = candidate_cpe(policy, eval, gamma, temperature, options.seed, options.bootstrap,
                                       options.switch_threshold, env_id=options.env)
        cpe_inputs = table_bytes(inputs_to_table(metrics["cpe"].pop("inputs")))
    elif eval is not None and policy.continuous:
        notes.append("the model's actions are continuous: the CPE estimators here need discrete actions "
                     "(target-policy probabilities), so no CPE was computed")
    elif eval is not None and (steps := _multi_steps(eval)) > 1:
        notes.append(f"the eval table has {steps}-step rows (rl.multi_steps): each row's reward is a discounted sum "
                     f"of {steps} rewards, and the CPE estimators need one reward per decision, so no CPE was "
                     "computed; for CPE, evaluate on a one-step eval table (`batchrl prepare` without --multi-steps)")
    elif eval is not None:
        metrics["cpe"] = counterfactual_evaluation(model_dir, policy, eval, options, gamma, temperature, notes)
        cpe_inputs = table_bytes(inputs_to_table(metrics["cpe"].pop("inputs")))
    if options.env is not None:
        metrics["gym"] = gym_evaluation(policy, options, gamma, temperature)
    passed = None
    if options.passing_score_bar is not None:
        if "gym" in metrics:
            passed = metrics["gym"]["mean_return"] >= options.passing_score_bar
        else:
            notes.append("passing_score_bar applies to gym returns; no env given, so it was not checked")
    metrics.update(passing_score_bar=options.passing_score_bar, passed=passed,
                   seconds=round(time.perf_counter() - started, 2))
    metrics = storage.json_safe(metrics)
    markdown = report.render_markdown(metrics)
    html = report.render_html(metrics, training.get("per_epoch") or [])
    storage.write_json(f"{output}/{METRICS_FILE}", metrics)
    storage.write_bytes(f"{output}/{REPORT_MD}", markdown.encode())
    storage.write_bytes(f"{output}/{REPORT_HTML}", html.encode())
    if "cpe" in metrics:
        storage.write_bytes(f"{output}/{CPE_INPUTS}", cpe_inputs)
    log.info("evaluate: wrote %s", output)
    gym = {k: v for k, v in metrics.get("gym", {}).items() if k != "returns"} or None
    return EvaluateResult(
        output=output, metrics=f"{output}/{METRICS_FILE}", report_md=f"{output}/{REPORT_MD}",
        report_html=f"{output}/{REPORT_HTML}",
        gym_score=gym["mean_return"] if gym else None, gym=gym,
        cpe=metrics.get("cpe", {}).get("estimates", {}),
        cpe_recommended=metrics.get("cpe", {}).get("recommended"),
        passing_score_bar=options.passing_score_bar, passed=passed, notes=notes,
        seconds=metrics["seconds"],
    )
