"""Counterfactual policy evaluation on an eval table: every estimator, normalized, with intervals.

:func:`counterfactual_estimates` is the Python API over arrays that the evaluate stage and
``batchrl cpe`` call (training calls :func:`estimate_all`, its estimates alone, every epoch). Each
estimator is a small function in :mod:`batchrl.evaluation.estimators` returning per-row or
per-episode terms; this module wires them to the shared value/normalization/bootstrap code (spec
section 7), attaches each estimate's diagnostics and warnings
(:mod:`batchrl.evaluation.estimators.diagnostics`), lists the estimators the inputs do not allow under
``skipped`` with the reason (nothing is guessed), and names the estimator to act on (``recommended``).
Normalized = raw / the logging policy's value on the same data (one-step: mean logged reward;
sequential: mean discounted logged episode return), so 1.0 means "as good as the logging policy".
Intervals are 95% intervals over the units (rows for one-step estimators, episodes for sequential
ones): Student-t for plain means, percentile bootstrap for the rest
(:mod:`batchrl.evaluation.estimators.core` says which and why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from batchrl.errors import BatchRLError
from batchrl.evaluation.estimators import diagnostics, one_step, sequential
from batchrl.evaluation.estimators.core import Estimate, Pivots, Statistic, estimate, single_thread
from batchrl.evaluation.estimators.fqe import FittedQ, FQEConfig, FQEInputs, fit_fqe, fqe_terms
from batchrl.models.policy import effective_mask

#: Estimators on single decisions, normalized by the mean logged reward.
ONE_STEP = ("DM", "IPS", "SNIPS", "DR", "Switch", "SwitchDR")
#: Estimators of the discounted episode return, normalized by the mean discounted logged return.
SEQUENTIAL = ("SDR", "WDR", "MAGIC", "FQE")
#: Estimators that need the reward model (one-step) or the value model (sequential).
NEEDS_REWARD_MODEL = ("DM", "DR", "Switch", "SwitchDR")
NEEDS_VALUE_MODEL = ("SDR", "WDR", "MAGIC")
#: The estimators a release decision may rest on, in order of preference: for multi-step logs the
#: sequential ones whose 95% intervals held their coverage in benchmarks/cpe_accuracy.py, for one-step
#: logs the one-step ones. The first present and trusted one is ``recommended``.
RECOMMENDED_SEQUENTIAL = ("WDR", "SDR")
RECOMMENDED_ONE_STEP = ("DR", "SNIPS", "IPS")


def kind_of(name: str) -> str:
    """"one-step" or "sequential"."""
    return "one-step" if name in ONE_STEP else "sequential"


@dataclass
class CPEInputs:
    """The eval table as tensors (CPU; N rows, A actions).

    Args:
        reward: [N] logged reward r_i.
        action: [N] long, logged action index a_i.
        logged_propensity: [N] mu(a_i|s_i), in (0, 1].
        target_probs: [N, A] pi(.|s_i) = masked softmax(Q(s_i)/temperature).
        reward_hat: [N, A] reward model r_hat(s_i, .), or None (skips DM, DR, Switch, SwitchDR).
        q_hat: [N, A] value model Q_hat(s_i, .), or None (skips SDR, WDR, MAGIC).
        episode: [N] long episode id; the rows of an episode are contiguous, in sequence order.
        not_terminal: [N] bool.
        logging_probs: [N, A] mu(.|s_i) of every action, when known (logged, or from the logging-policy
            model, :mod:`batchrl.evaluation.logging_policy`); Switch needs it and is skipped without it.
    """

    reward: Tensor
    action: Tensor
    logged_propensity: Tensor
    target_probs: Tensor
    reward_hat: Tensor | None
    q_hat: Tensor | None
    episode: Tensor
    not_terminal: Tensor
    logging_probs: Tensor | None = None

    def check(self) -> None:
        """Shapes agree and propensities are usable; a BatchRLError otherwise."""
        n = self.reward.shape[0]
        if n == 0:
            raise BatchRLError("the eval table has no rows", fix="use an eval table with logged decisions")
        num_actions = self.target_probs.shape[1]
        if self.logged_propensity.shape != (n,):
            raise ValueError(f"CPEInputs.logged_propensity has shape {tuple(self.logged_propensity.shape)}, "
                             f"expected ({n},)")
        for name in ("action", "episode", "not_terminal"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"CPEInputs.{name} has shape {tuple(getattr(self, name).shape)}, expected ({n},)")
        for name in ("target_probs", "reward_hat", "q_hat", "logging_probs"):
            value = getattr(self, name)
            if value is not None and value.shape != (n, num_actions):
                raise ValueError(f"CPEInputs.{name} has shape {tuple(value.shape)}, expected ({n}, {num_actions})")
        bad = ~((self.logged_propensity > 0) & (self.logged_propensity <= 1))
        if bool(bad.any()):
            raise BatchRLError(
                f"{int(bad.sum())} of {n} eval rows have a logged propensity (action_probability) outside (0, 1]",
                where="eval table, column action_probability",
                fix="log the logging policy's probability of each action (generate does); importance-weighted "
                    "estimators cannot work without it")
        if bool(((self.action < 0) | (self.action >= num_actions)).any()):
            raise BatchRLError("eval rows with no valid logged action index", where="eval table, column action",
                               fix="every eval row needs a logged action from the model's action list")


def target_policy_probs(q_values: Tensor, possible: Tensor | None, temperature: float) -> Tensor:
    """pi(.|s) = softmax(Q(s)/temperature) over the possible actions; temperature 0 = greedy (argmax,
    ties to the lowest index). ``q_values`` [N, A], ``possible`` [N, A] bool or None (all possible); a
    row with no possible action means "not recorded" and allows every action."""
    q = q_values.to(torch.float64)
    if possible is None:
        possible = torch.ones_like(q, dtype=torch.bool)
    masked = q.masked_fill(~effective_mask(possible), float("-inf"))
    if temperature <= 0:
        best = masked.argmax(dim=1, keepdim=True)
        return torch.zeros_like(q).scatter(1, best, 1.0)
    probs = torch.softmax(masked / temperature, dim=1)
    return torch.nan_to_num(probs, nan=0.0)


def _one_step_statistics(inputs: CPEInputs, switch_threshold: float) -> tuple[dict[str, Statistic], dict[str, str]]:
    """The one-step statistics the inputs allow, and the reason for each one left out."""
    w = one_step.importance_weights(inputs.target_probs, inputs.action, inputs.logged_propensity)
    r, a, pi = inputs.reward, inputs.action, inputs.target_probs
    stats: dict[str, Statistic] = {"IPS": one_step.ips_terms(w, r), "SNIPS": one_step.snips_terms(w, r)}
    skipped: dict[str, str] = {}
    if inputs.reward_hat is None:
        for name in NEEDS_REWARD_MODEL:
            skipped[name] = "needs a reward model (reward estimates of every action)"
        return stats, skipped
    r_hat = inputs.reward_hat
    stats["DM"] = one_step.direct_method_terms(pi, r_hat)
    stats["DR"] = one_step.doubly_robust_terms(w, r, a, pi, r_hat)
    if inputs.logging_probs is None:
        skipped["Switch"] = ("needs the logging policy's probability of every action (logged, or a logging-policy "
                             "model fitted on the states); only the taken action's is known")
    else:
        stats["Switch"] = one_step.switch_terms(w, r, a, pi, r_hat, inputs.logging_probs, switch_threshold)
    stats["SwitchDR"] = one_step.switch_dr_terms(w, r, a, pi, r_hat, switch_threshold)
    return stats, skipped


def ips_design(inputs: CPEInputs, replicates: int, seed: int) -> tuple[Pivots, dict[str, float]] | None:
    """IPS's interval pivots from the logging policy's draws (:func:`.one_step.ips_design_pivots`) and its
    diagnostics (the design-based and the sample variance of an IPS term), when the inputs have the logging
    policy's probability of every action and a reward model; else None (IPS then gets Student's t)."""
    if inputs.logging_probs is None or inputs.reward_hat is None or replicates <= 0:
        return None
    args = (inputs.target_probs, inputs.logging_probs, inputs.reward_hat, inputs.reward, inputs.action)
    w = one_step.importance_weights(inputs.target_probs, inputs.action, inputs.logged_propensity)
    return one_step.ips_design_pivots(*args, replicates=replicates, seed=seed), {
        "design_variance": one_step.ips_design_variance(*args),
        "sample_variance": float((w * inputs.reward.double()).var())}


def episodes_of(inputs: CPEInputs) -> sequential.Episodes:
    """The eval rows as padded episodes for the sequential estimators (needs ``q_hat``)."""
    if inputs.q_hat is None:
        raise ValueError("sequential estimators need CPEInputs.q_hat")
    w = one_step.importance_weights(inputs.target_probs, inputs.action, inputs.logged_propensity)
    q = inputs.q_hat.to(torch.float64)
    q_logged = q.gather(1, inputs.action.long().reshape(-1, 1)).squeeze(1)
    v = (inputs.target_probs.to(torch.float64) * q).sum(dim=1)
    return sequential.to_episodes(inputs.episode, inputs.reward, w, q_logged, v)


def estimate_all(inputs: CPEInputs, gamma: float, seed: int, bootstrap: int = 200, *,
                 switch_threshold: float = 10.0, magic_j_steps: int = 25) -> dict[str, dict[str, Any]]:
    """The estimates of :func:`counterfactual_estimates` alone (one-step and, with ``q_hat``, sequential)."""
    estimates: dict[str, dict[str, Any]] = counterfactual_estimates(
        inputs, gamma, seed, bootstrap, switch_threshold=switch_threshold, magic_j_steps=magic_j_steps)["estimates"]
    return estimates


def counterfactual_estimates(inputs: CPEInputs, gamma: float, seed: int, bootstrap: int = 200, *,
                             sequential_estimators: bool = True, switch_threshold: float = 10.0,
                             magic_j_steps: int = 25) -> dict[str, Any]:
    """Every estimator the inputs allow, with diagnostics; the Python API of CPE over arrays.

    Returns ``{"estimates": {name: estimate}, "skipped": {name: reason}, "logging_policy": {...},
    "recommended": {...}}``. An estimate is ``{"raw", "normalized", "ci_low", "ci_high",
    "normalized_ci_low", "normalized_ci_high", "std_error", "units"}`` (floats; normalized values NaN
    when the logging policy's value is not a usable denominator), plus ``"diagnostics"`` (effective
    sample size and the other weight statistics, the baseline, ``trusted`` and ``flags``) and
    ``"warnings"`` (plain language). ``recommended`` names the estimator to act on
    (:func:`recommend`).

    One-step estimators (DM, IPS, SNIPS, DR, Switch, SwitchDR) need a reward model for all but IPS and
    SNIPS, and Switch needs ``logging_probs``; sequential ones (SDR, WDR, MAGIC; only when
    ``sequential_estimators``) need the value model ``q_hat``. ``bootstrap`` is the number of bootstrap
    replicates (0: no intervals); ``switch_threshold`` is tau of Switch/SwitchDR.
    """
    inputs.check()
    with single_thread():
        result = _estimate(inputs, gamma, seed, bootstrap, sequential_estimators, switch_threshold, magic_j_steps)
    result["logging_policy"] = logging_policy_values(inputs, gamma)
    result["recommended"] = recommend(result["estimates"], result["logging_policy"]["longest_episode"])
    return result


def _report(est: Estimate, weights: dict[str, float] | None, *, name: str, longest: int,
            extra: dict[str, float] | None = None) -> dict[str, Any]:
    """An estimate's dict with its diagnostics and warnings."""
    info: dict[str, Any] = dict(weights) if weights is not None else {"effective_sample_size": float(est.units),
                                                                      "units": float(est.units)}
    info.update(extra or {})
    info.update(baseline=est.baseline, baseline_std_error=est.baseline_std_error)
    warnings, flags = diagnostics.assess(name, info, importance_weighted=weights is not None, episode_length=longest,
                                         one_step=name in ONE_STEP, normalization=est.normalization)
    if name == "DM":
        warnings.append("DM uses only the reward model: nothing in the data checks the model's errors")
    info.update(trusted=not flags, flags=flags)
    return {**est.as_dict(), "diagnostics": info, "warnings": warnings}


def _estimate(inputs: CPEInputs, gamma: float, seed: int, bootstrap: int, sequential_estimators: bool,
              switch_threshold: float, magic_j_steps: int) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    longest = int(torch.bincount(episode_index(inputs.episode)).max())
    baseline = one_step.logged_reward_terms(inputs.reward)
    stats, skipped = _one_step_statistics(inputs, switch_threshold)
    w = one_step.importance_weights(inputs.target_probs, inputs.action, inputs.logged_propensity)
    row_weights = diagnostics.weight_diagnostics(w)
    design = ips_design(inputs, bootstrap, seed)
    for name in ONE_STEP:
        if name in stats:
            extra = {"model_share": float((w > switch_threshold).double().mean())} if "Switch" in name else None
            pivots = None
            if name == "IPS" and design is not None:  # the interval from the logging policy's draws
                pivots, extra = design
            results[name] = _report(estimate(stats[name], baseline, bootstrap, seed, pivots),
                                    None if name == "DM" else row_weights, name=name, longest=longest, extra=extra)
    if not sequential_estimators:
        return {"estimates": results, "skipped": skipped}
    if inputs.q_hat is None:
        for name in NEEDS_VALUE_MODEL:
            skipped[name] = "needs a value model (Q estimates of every action)"
        return {"estimates": results, "skipped": skipped}
    episodes = episodes_of(inputs)
    episode_baseline = sequential.logged_return_terms(episodes, gamma)
    episode_weights = diagnostics.episode_weight_diagnostics(episodes.cumulative_weight()[:, -1])
    magic = sequential.MagicStatistic(episodes, gamma, num_j_steps=magic_j_steps, seed=seed)
    seq_stats: dict[str, Statistic] = {"SDR": sequential.sequential_dr_terms(episodes, gamma),
                                       "WDR": sequential.weighted_dr_terms(episodes, gamma), "MAGIC": magic}
    for name, stat in seq_stats.items():
        est = estimate(stat, episode_baseline, bootstrap, seed, hull_with_delta=name == "WDR")
        extra = None
        if name == "MAGIC":
            gaps = magic.last_gaps
            _, blend = magic.blend(torch.ones(1, episodes.units, dtype=torch.float64))
            extra = {"model_only_weight": float(blend[0, 0]), "solver_relative_gap": float(magic.last_gaps.max()),
                     "bootstrap_solver_relative_gap": float(gaps.max()) if gaps.numel() else float("nan")}
        results[name] = _report(est, episode_weights, name=name, longest=longest, extra=extra)
    _magic_interval(results["MAGIC"], results["WDR"])
    return {"estimates": results, "skipped": skipped}


def _magic_interval(magic: dict[str, Any], wdr: dict[str, Any]) -> None:
    """MAGIC's interval is the hull of its own bootstrap interval and WDR's (kept as ``bootstrap_ci_*`` in
    the diagnostics): its bias proxy cannot see the value model's bias, so its own interval under-covered
    (benchmarks/cpe_accuracy.py); WDR's interval is the one whose coverage held. Flags an uncertified blend."""
    info = magic["diagnostics"]
    for key in ("ci_low", "ci_high", "normalized_ci_low", "normalized_ci_high"):
        info[f"bootstrap_{key}"] = magic[key]
        pick = min if key.endswith("low") else max
        values = [v for v in (magic[key], wdr[key]) if _finite(v)]
        magic[key] = pick(values) if values else magic[key]
    worst = max(info["solver_relative_gap"], info["bootstrap_solver_relative_gap"])
    if not worst <= sequential.GAP_TOLERANCE:
        magic["warnings"].append(f"MAGIC's blend weights were not solved to optimality (relative duality gap "
                                 f"{worst:.2g})")
        info["flags"].append("magic_not_optimal")
        info["trusted"] = False
    magic["warnings"].append("MAGIC's interval is widened to contain WDR's: its own bootstrap interval "
                             "(diagnostics.bootstrap_ci_*) held the truth less often than 95% in "
                             "benchmarks/cpe_accuracy.py, because it cannot see the value model's bias")


def recommend(estimates: dict[str, dict[str, Any]], longest_episode: int) -> dict[str, Any]:
    """The estimator to act on: the first present and trusted one of :data:`RECOMMENDED_SEQUENTIAL`
    (multi-step logs) or :data:`RECOMMENDED_ONE_STEP` (one-step logs); None, with the reasons, if none is.

    Returns ``{"estimator", "reason", "candidates", "refusals"}`` (refusals: candidate -> why it was passed over).
    """
    multi_step = longest_episode > 1
    candidates = RECOMMENDED_SEQUENTIAL if multi_step else RECOMMENDED_ONE_STEP
    data = f"multi-step logs (episodes of up to {longest_episode} steps)" if multi_step else "one-step logs"
    refusals: dict[str, str] = {}
    for name in candidates:
        result = estimates.get(name)
        if result is None:
            refusals[name] = "not computed (see skipped)"
        elif not result["diagnostics"]["trusted"] or not _finite(result["normalized_ci_low"]):
            refusals[name] = "; ".join(result["warnings"]) or "no normalized interval"
        else:
            return {"estimator": name, "reason": f"{data}: the first trusted of {', '.join(candidates)}",
                    "candidates": list(candidates), "refusals": refusals}
    return {"estimator": None, "reason": f"{data}: none of {', '.join(candidates)} can be trusted",
            "candidates": list(candidates), "refusals": refusals}


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


def logging_policy_values(inputs: CPEInputs, gamma: float) -> dict[str, float]:
    """The normalizers: mean logged reward and mean discounted logged episode return (with their sign)."""
    ones = torch.ones(1, inputs.reward.shape[0], dtype=torch.float64)
    mean_reward = float(one_step.logged_reward_terms(inputs.reward).value(ones)[0])
    zeros = torch.zeros_like(inputs.reward, dtype=torch.float64)
    episodes = sequential.to_episodes(inputs.episode, inputs.reward, torch.ones_like(zeros), zeros, zeros)
    ones_e = torch.ones(1, episodes.units, dtype=torch.float64)
    mean_return = float(sequential.logged_return_terms(episodes, gamma).value(ones_e)[0])
    return {"mean_logged_reward": mean_reward, "mean_discounted_logged_return": mean_return,
            "episodes": episodes.units, "rows": int(inputs.reward.shape[0]),
            "longest_episode": int(episodes.mask.sum(dim=1).max()) if episodes.units else 0}


def episode_index(episode: Tensor) -> Tensor:
    """Episode number 0..n-1 of each row, in order of appearance ([N] long; rows of an episode contiguous)."""
    starts = torch.ones(episode.shape[0], dtype=torch.bool)
    starts[1:] = episode[1:] != episode[:-1]
    return torch.cumsum(starts.long(), dim=0) - 1


def episode_starts(episode: Tensor) -> Tensor:
    """Indices of each episode's first row ([n] long)."""
    starts = torch.ones(episode.shape[0], dtype=torch.bool)
    starts[1:] = episode[1:] != episode[:-1]
    return torch.nonzero(starts).squeeze(1)


def estimate_fqe(inputs: CPEInputs, fqe_inputs: FQEInputs, gamma: float, seed: int, bootstrap: int = 200,
                 config: FQEConfig | None = None) -> tuple[dict[str, Any], FittedQ]:
    """Fit FQE on ``fqe_inputs`` (rows aligned with ``inputs``; its ``fit_mask`` picks the rows to fit
    on) and estimate the value of the logged start states, with the fit's diagnostics.

    The interval resamples episodes with the fitted model held fixed: it covers the sampling of the
    start states, not the fitting error (the estimate's warnings say so). Returns the result dict and
    the fitted model."""
    inputs.check()
    config = config or FQEConfig(seed=seed)
    with single_thread():
        model, fit = fit_fqe(fqe_inputs, gamma, config)
        starts = episode_starts(inputs.episode)
        stat = fqe_terms(model, fqe_inputs.state[starts], inputs.target_probs[starts])
        zeros = torch.zeros_like(inputs.reward, dtype=torch.float64)
        episodes = sequential.to_episodes(inputs.episode, inputs.reward, torch.ones_like(zeros), zeros, zeros)
        baseline = sequential.logged_return_terms(episodes, gamma)
        est = estimate(stat, baseline, bootstrap, seed)
    longest = int(episodes.mask.sum(dim=1).max())
    result = _report(est, None, name="FQE", longest=longest, extra=fit.as_dict())
    if not fit.converged:
        result["warnings"].append(
            f"FQE stopped at its iteration cap ({fit.iterations}) before its value settled (error bound "
            f"{fit.relative_error_bound:.2g} of the value, wanted {config.tolerance:g}): raise fqe_iterations")
        result["diagnostics"]["flags"].append("fqe_not_converged")
        result["diagnostics"]["trusted"] = False
    result["warnings"].append("FQE's interval resamples the start states with the fitted model held fixed: it leaves "
                              "out the model's own error, so the truth can lie outside it")
    return result, model
