"""Counterfactual policy evaluation on an eval table: every estimator, normalized, with intervals.

:func:`estimate_all` is what training (each epoch) and the evaluate stage call. Each estimator is a
small function in :mod:`batchrl.evaluation.estimators` returning per-row or per-episode terms; this
module wires them to the shared value/normalization/bootstrap code (spec section 7).
Normalized = raw / the logging policy's value on the same data (one-step: mean logged reward;
sequential: mean discounted logged episode return), so 1.0 means "as good as the logging policy".
Intervals are 95% percentile intervals of a seeded bootstrap of size n (rows for one-step
estimators, episodes for sequential ones), the normalized interval paired on the same resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from batchrl.errors import BatchRLError
from batchrl.evaluation.estimators import one_step, sequential
from batchrl.evaluation.estimators.core import Statistic, estimate, single_thread
from batchrl.evaluation.estimators.fqe import FittedQ, FQEConfig, FQEInputs, fit_fqe, fqe_terms
from batchrl.models.policy import effective_mask

#: Estimators on single decisions, normalized by the mean logged reward.
ONE_STEP = ("DM", "IPS", "SNIPS", "DR", "Switch", "SwitchDR")
#: Estimators of the discounted episode return, normalized by the mean discounted logged return.
SEQUENTIAL = ("SDR", "WDR", "MAGIC", "FQE")
#: Estimators that need the reward model (one-step) or the value model (sequential).
NEEDS_REWARD_MODEL = ("DM", "DR", "Switch", "SwitchDR")
NEEDS_VALUE_MODEL = ("SDR", "WDR", "MAGIC")


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
        logging_probs: [N, A] mu(.|s_i) when the whole logging distribution is known (Switch uses it);
            None: inferred from the logged propensity (:func:`one_step.infer_logging_probs`).
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
        for name in ("action", "logged_propensity", "episode", "not_terminal"):
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


def _one_step_statistics(inputs: CPEInputs, switch_threshold: float) -> dict[str, Statistic]:
    w = one_step.importance_weights(inputs.target_probs, inputs.action, inputs.logged_propensity)
    r, a, pi = inputs.reward, inputs.action, inputs.target_probs
    stats: dict[str, Statistic] = {"IPS": one_step.ips_terms(w, r), "SNIPS": one_step.snips_terms(w, r)}
    if inputs.reward_hat is not None:
        r_hat = inputs.reward_hat
        mu = inputs.logging_probs if inputs.logging_probs is not None else \
            one_step.infer_logging_probs(a, inputs.logged_propensity, pi.shape[1])
        stats["DM"] = one_step.direct_method_terms(pi, r_hat)
        stats["DR"] = one_step.doubly_robust_terms(w, r, a, pi, r_hat)
        stats["Switch"] = one_step.switch_terms(w, r, pi, r_hat, mu, switch_threshold)
        stats["SwitchDR"] = one_step.switch_dr_terms(w, r, a, pi, r_hat, switch_threshold)
    return stats


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
                 switch_threshold: float = 10.0, magic_j_steps: int = 25) -> dict[str, dict]:
    """Every estimator the inputs allow: name -> {"raw", "normalized", "ci_low", "ci_high",
    "normalized_ci_low", "normalized_ci_high", "std_error", "units"} (all floats).

    One-step estimators (DM, IPS, SNIPS, DR, Switch, SwitchDR) need a reward model for all but IPS
    and SNIPS; sequential ones (SDR, WDR, MAGIC) need the value model ``q_hat``. ``bootstrap`` is the
    number of bootstrap replicates (0: no intervals); ``switch_threshold`` is tau of Switch/SwitchDR.
    """
    inputs.check()
    with single_thread():
        return _estimate_all(inputs, gamma, seed, bootstrap, switch_threshold, magic_j_steps)


def _estimate_all(inputs: CPEInputs, gamma: float, seed: int, bootstrap: int, switch_threshold: float,
                  magic_j_steps: int) -> dict[str, dict]:
    results: dict[str, dict] = {}
    baseline = one_step.logged_reward_terms(inputs.reward)
    stats = _one_step_statistics(inputs, switch_threshold)
    for name in ONE_STEP:
        if name in stats:
            results[name] = estimate(stats[name], baseline, bootstrap, seed).as_dict()
    if inputs.q_hat is not None:
        episodes = episodes_of(inputs)
        episode_baseline = sequential.logged_return_terms(episodes, gamma)
        seq_stats: dict[str, Statistic] = {
            "SDR": sequential.sequential_dr_terms(episodes, gamma),
            "WDR": sequential.weighted_dr_terms(episodes, gamma),
            "MAGIC": sequential.MagicStatistic(episodes, gamma, num_j_steps=magic_j_steps,
                                               seed=seed),
        }
        for name, stat in seq_stats.items():
            results[name] = estimate(stat, episode_baseline, bootstrap, seed).as_dict()
    return results


def logging_policy_values(inputs: CPEInputs, gamma: float) -> dict[str, float]:
    """The normalizers: mean logged reward and mean discounted logged episode return."""
    ones = torch.ones(1, inputs.reward.shape[0], dtype=torch.float64)
    mean_reward = float(one_step.logged_reward_terms(inputs.reward).value(ones)[0])
    zeros = torch.zeros_like(inputs.reward, dtype=torch.float64)
    episodes = sequential.to_episodes(inputs.episode, inputs.reward, torch.ones_like(zeros), zeros, zeros)
    ones_e = torch.ones(1, episodes.units, dtype=torch.float64)
    mean_return = float(sequential.logged_return_terms(episodes, gamma).value(ones_e)[0])
    return {"mean_logged_reward": mean_reward, "mean_discounted_logged_return": mean_return,
            "episodes": episodes.units, "rows": int(inputs.reward.shape[0])}


def episode_starts(episode: Tensor) -> Tensor:
    """Indices of each episode's first row ([n] long)."""
    starts = torch.ones(episode.shape[0], dtype=torch.bool)
    starts[1:] = episode[1:] != episode[:-1]
    return torch.nonzero(starts).squeeze(1)


def estimate_fqe(inputs: CPEInputs, fqe_inputs: FQEInputs, gamma: float, seed: int, bootstrap: int = 200,
                 config: FQEConfig | None = None) -> tuple[dict, FittedQ]:
    """Fit FQE on ``fqe_inputs`` (rows aligned with ``inputs``; its ``fit_mask`` picks the rows to fit
    on) and estimate the value of the logged start states. The interval resamples episodes with the fitted model held fixed (it covers the
    start-state sampling, not the fitting error). Returns the result dict and the fitted model."""
    inputs.check()
    with single_thread():
        model = fit_fqe(fqe_inputs, gamma, config or FQEConfig(seed=seed))
        starts = episode_starts(inputs.episode)
        stat = fqe_terms(model, fqe_inputs.state[starts], inputs.target_probs[starts])
        zeros = torch.zeros_like(inputs.reward, dtype=torch.float64)
        episodes = sequential.to_episodes(inputs.episode, inputs.reward, torch.ones_like(zeros), zeros, zeros)
        baseline = sequential.logged_return_terms(episodes, gamma)
        return estimate(stat, baseline, bootstrap, seed).as_dict(), model
