"""A model of the logging policy: mu(a|s) for every action, fitted on the logged decisions.

Logs record the logging policy's probability of the action it took, mu_i = mu(a_i|s_i), but Switch
(and any estimator that asks "how likely was an action that was *not* taken?") needs mu(a|s_i) for all
a. We fit mu_hat(.|s) = masked softmax(f(s)) with f linear or a small MLP on standardized state
features, minimizing the negative log-likelihood of the logged actions plus the squared error of the log
propensity of the logged action against the logged one (every logged number is used):

    L = mean_i [ -log mu_hat(a_i|s_i) + (log mu_hat(a_i|s_i) - log mu_i)^2 ] + l2 ||theta||^2

(full-batch L-BFGS). Switch uses mu_hat only to decide, per (state, action), whether to trust the
importance weight or the reward model (:func:`batchrl.evaluation.estimators.one_step.switch_terms`);
the importance weights themselves keep the logged propensities.

Calibration is checked on a held-out fifth of the rows, which also picks the model class with the
smaller error (linear or one hidden layer); the chosen class is then fitted on all rows.
the error of mu_hat(a_i|s_i) against the logged mu_i, and the expected calibration error of mu_hat over
all (row, action) pairs against how often the action was taken (Naeini, Cooper & Hauskrecht, AAAI 2015).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from batchrl.models.policy import effective_mask

#: Held-out share of rows for the calibration check.
HOLDOUT = 0.2
#: Bins of the expected calibration error.
CALIBRATION_BINS = 10
#: Mean absolute error of mu_hat(a_i|s_i) against mu_i above which the model is reported as poorly calibrated.
CALIBRATION_TOLERANCE = 0.05


@dataclass(frozen=True)
class LoggingPolicyConfig:
    """Candidate networks (hidden layer sizes, l2 penalty) and fit of the logging-policy model: the
    candidate with the smallest held-out propensity error is chosen (the first one without calibration)."""

    candidates: tuple[tuple[tuple[int, ...], float], ...] = (((), 1e-4), ((16,), 1e-2))
    max_iterations: int = 100
    seed: int = 0
    max_rows: int = 50_000  # fitted on a seeded sample of this many rows when there are more


class LoggingPolicyNet(nn.Module):
    """Logits f(s) = MLP((s - mean) / std): [B, F] -> [B, A]."""

    mean: Tensor  # buffers, registered in __init__
    std: Tensor

    def __init__(self, num_features: int, num_actions: int, hidden: tuple[int, ...], mean: Tensor, std: Tensor):
        super().__init__()
        layers: list[nn.Module] = []
        width = num_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.Tanh()]
            width = size
        layers.append(nn.Linear(width, num_actions))
        self.net = nn.Sequential(*layers).double()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, state: Tensor) -> Tensor:
        logits: Tensor = self.net((state.double() - self.mean) / self.std)
        return logits


def _log_probs(net: LoggingPolicyNet, state: Tensor, possible: Tensor | None) -> Tensor:
    logits = net(state)
    if possible is not None:
        logits = logits.masked_fill(~effective_mask(possible.bool()), float("-inf"))
    return torch.log_softmax(logits, dim=1)


def _fit(state: Tensor, action: Tensor, propensity: Tensor, possible: Tensor | None, num_actions: int,
         config: LoggingPolicyConfig, hidden: tuple[int, ...], l2_weight: float) -> LoggingPolicyNet:
    state = state.double()
    mean, std = state.mean(dim=0), state.std(dim=0).nan_to_num(1.0).clamp(min=1e-6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = LoggingPolicyNet(state.shape[1], num_actions, hidden, mean, std)
    log_mu = propensity.double().clamp(min=1e-12).log()
    index = action.long().reshape(-1, 1)
    optimizer = torch.optim.LBFGS(net.parameters(), max_iter=config.max_iterations, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        log_p = _log_probs(net, state, possible).gather(1, index).squeeze(1)
        l2 = sum((p * p).sum() for name, p in net.named_parameters() if name.endswith("weight"))
        loss = (-log_p + (log_p - log_mu) ** 2).mean() + l2_weight * l2
        loss.backward()  # type: ignore[no-untyped-call]  # torch.Tensor.backward is unannotated
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]  # torch.optim.LBFGS.step is unannotated
    return net.eval()


def _predict(net: LoggingPolicyNet, state: Tensor, possible: Tensor | None) -> Tensor:
    with torch.no_grad():
        return _log_probs(net, state, possible).exp()


def calibration(probs: Tensor, action: Tensor, propensity: Tensor) -> dict[str, float]:
    """How well ``probs`` [n, A] (a model of mu) matches the logs: errors of the logged action's
    probability against the logged propensity ``propensity`` [n], the expected calibration error over
    all (row, action) pairs, and the mean log-likelihood of the logged actions under the model and under
    the logged propensities (equal in expectation for a calibrated model)."""
    mu_logged = propensity.double()
    predicted = probs.double().gather(1, action.long().reshape(-1, 1)).squeeze(1)
    error = (predicted - mu_logged).abs()
    pairs = probs.double().reshape(-1)
    taken = torch.zeros_like(probs, dtype=torch.float64).scatter(1, action.long().reshape(-1, 1), 1.0).reshape(-1)
    bins = torch.clamp((pairs * CALIBRATION_BINS).long(), max=CALIBRATION_BINS - 1)
    ece = 0.0
    for b in range(CALIBRATION_BINS):
        inside = bins == b
        if bool(inside.any()):
            ece += float(inside.double().mean()) * abs(float(pairs[inside].mean() - taken[inside].mean()))
    return {
        "rows": float(mu_logged.numel()),
        "propensity_mean_abs_error": float(error.mean()),
        "propensity_max_abs_error": float(error.max()),
        "propensity_mean_relative_error": float((error / mu_logged).mean()),
        "expected_calibration_error": ece,
        "log_likelihood_model": float(predicted.clamp(min=1e-300).log().mean()),
        "log_likelihood_logged": float(mu_logged.log().mean()),
    }


@dataclass(frozen=True)
class LoggingPolicyFit:
    """The fitted model's mu_hat(.|s_i) [N, A] on the rows it was fitted on, and its held-out calibration."""

    probs: Tensor
    calibration: dict[str, Any] | None  # calibration's scores, hidden_layers (list[int]) and l2

    def warning(self) -> str | None:
        """A plain-language warning when the held-out propensities are off by more than the tolerance."""
        if self.calibration is None:
            return None
        error = self.calibration["propensity_mean_abs_error"]
        if error <= CALIBRATION_TOLERANCE:
            return None
        return (f"the logging-policy model misses the logged propensities by {error:.3f} on average (held out): "
                "estimates that need the probabilities of untaken actions (Switch) may be off")


def fit_logging_policy(state: Tensor, action: Tensor, propensity: Tensor, num_actions: int,
                       possible: Tensor | None = None, config: LoggingPolicyConfig = LoggingPolicyConfig(),
                       calibrate: bool = True) -> LoggingPolicyFit:
    """Fit mu_hat on the logged rows (see the module docstring).

    Args:
        state: [N, F] state features.
        action: [N] logged action index.
        propensity: [N] logged mu(a_i|s_i).
        num_actions: A.
        possible: [N, A] bool, actions the logging policy could take (None: all).
        calibrate: hold out a fifth of the rows to measure calibration and choose among
            ``config.candidates`` (needs >= 10 rows); without it the first candidate is fitted.
    """
    fit_rows = torch.arange(state.shape[0])
    if state.shape[0] > config.max_rows:
        fit_rows = torch.randperm(state.shape[0], generator=torch.Generator().manual_seed(config.seed))
        fit_rows = fit_rows[: config.max_rows]

    def part(rows: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        return state[rows], action[rows], propensity[rows], None if possible is None else possible[rows]

    report: dict[str, Any] | None
    chosen, report = config.candidates[0], None
    n = fit_rows.numel()
    if calibrate and n >= 10:
        order = fit_rows[torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + 1))]
        held, train = order[: max(int(n * HOLDOUT), 1)], order[max(int(n * HOLDOUT), 1):]
        held_state, held_action, held_propensity, held_possible = part(held)
        for hidden, l2 in config.candidates:
            net = _fit(*part(train), num_actions, config, hidden, l2)
            scores = calibration(_predict(net, held_state, held_possible), held_action, held_propensity)
            if report is None or scores["propensity_mean_abs_error"] < report["propensity_mean_abs_error"]:
                chosen, report = (hidden, l2), {**scores, "hidden_layers": list(hidden), "l2": l2}
    net = _fit(*part(fit_rows), num_actions, config, *chosen)
    return LoggingPolicyFit(_predict(net, state, possible), report)
