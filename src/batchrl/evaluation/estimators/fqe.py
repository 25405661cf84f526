"""Fitted Q evaluation: a value model of the target policy learnt from logged transitions.

Q_0 = 0; for k = 1..K fit Q_k(s, a) by least squares to the targets
y = r + gamma * not_terminal * sum_a' pi(a'|s') Q_{k-1}(s', a'), warm-starting from Q_{k-1}; targets
are clipped to the values rewards in [r_min, r_max] allow, [min(r_min, 0), max(r_max, 0)] / (1 - gamma),
which stops extrapolation error from compounding beyond any achievable value.
The estimate is the model's value of the logged start states, V(s_0) = sum_a pi(a|s_0) Q_K(s_0, a).

Stopping rule: the Bellman operator of pi contracts by gamma, so the iterates approach its fixed
point geometrically, Q_k - Q* ~ gamma^k c (Bertsekas & Tsitsiklis, *Neuro-Dynamic Programming*, 1996,
sec. 2.2), and the distance left after iteration k is about the change over the last w iterations
divided by 1 - gamma^w. We measure that change as the mean absolute change of Q on a fixed probe set of
rows over ``window`` iterations (a window rather than one step, so that the noise of the stochastic
gradient steps does not pass for drift) and stop when the estimated distance is at most ``tolerance``
times mean |Q| for ``patience`` iterations in a row (``converged``). The learning rate is halved
whenever that estimate has not reached a new low for ``plateau`` iterations (the gradient noise
otherwise sets a floor). ``iterations`` is a cap. :class:`FQEDiagnostics` reports what happened: iterations run, whether
the rule was met, the final error bound and the regression's relative fitting loss.
Consistent given a rich enough function class; its error is model bias rather than importance-weight
variance. Le, Voloshin & Yue, "Batch Policy Learning under Constraints", ICML 2019, sec. 4 (FQE);
Voloshin et al., "Empirical Study of Off-Policy Policy Evaluation for RL", 2019.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from batchrl.evaluation.estimators.core import Terms


@dataclass
class FQEInputs:
    """Logged transitions for FQE (CPU tensors, N rows, F features, A actions).

    Args:
        state: [N, F] float, state features (raw; standardized inside).
        action: [N] long, logged action index.
        reward: [N] logged reward.
        next_state: [N, F] float.
        not_terminal: [N] bool, False on a terminal transition.
        next_target_probs: [N, A] pi(.|s'), zero on impossible next actions.
        fit_mask: [N] bool or None; rows to fit on (False: a row without a usable next state, e.g. the
            last row of an episode cut by a time limit). None: every row.
    """

    state: Tensor
    action: Tensor
    reward: Tensor
    next_state: Tensor
    not_terminal: Tensor
    next_target_probs: Tensor
    fit_mask: Tensor | None = None


@dataclass(frozen=True)
class FQEConfig:
    """Network and fitting schedule of FQE (``iterations`` caps the stopping rule's iterations)."""

    hidden: tuple[int, ...] = (64, 64)
    iterations: int = 1000
    steps_per_iteration: int = 20
    batch_size: int = 512
    learning_rate: float = 1e-3
    seed: int = 0
    tolerance: float = 0.01
    window: int = 20
    patience: int = 3
    plateau: int = 20
    probe_rows: int = 2048


@dataclass(frozen=True)
class FQEDiagnostics:
    """How the fit went.

    Args:
        iterations: fitted Q iterations run.
        converged: whether the stopping rule was met (else the ``iterations`` cap stopped it).
        relative_error_bound: the estimated distance to the fixed point, change over the window /
            (1 - gamma^window) / mean |Q| (the rule wants <= tolerance).
        fit_loss: the last regression's mean squared error on all rows / the variance of its targets
            (the part of the targets Q does not follow; includes reward noise).
        learning_rate: the final learning rate.
    """

    iterations: int
    converged: bool
    relative_error_bound: float
    fit_loss: float
    learning_rate: float

    def as_dict(self) -> dict[str, float | bool]:
        return {"iterations": float(self.iterations), "converged": self.converged,
                "relative_error_bound": self.relative_error_bound, "fit_loss": self.fit_loss,
                "learning_rate": self.learning_rate}


class FittedQ(nn.Module):
    """Q(s, .) = scale * MLP((s - mean) / std): [B, F] -> [B, A]."""

    mean: Tensor  # buffers, registered in __init__
    std: Tensor

    def __init__(self, num_features: int, num_actions: int, hidden: tuple[int, ...], mean: Tensor,
                 std: Tensor, scale: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = num_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, num_actions))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.scale = scale

    def forward(self, state: Tensor) -> Tensor:
        q: Tensor = self.net((state - self.mean) / self.std)
        return self.scale * q


def fit_fqe(inputs: FQEInputs, gamma: float, config: FQEConfig = FQEConfig()) -> tuple[FittedQ, FQEDiagnostics]:
    """Fit Q of the target policy by fitted Q iteration on ``inputs`` until the stopping rule holds
    (see the module docstring); returns the model and its diagnostics."""
    rows = slice(None) if inputs.fit_mask is None else inputs.fit_mask.bool()
    state = inputs.state[rows].to(torch.float32)
    next_state = inputs.next_state[rows].to(torch.float32)
    reward = inputs.reward[rows].to(torch.float32)
    action = inputs.action[rows].long()
    not_terminal = inputs.not_terminal[rows].to(torch.float32)
    next_probs = inputs.next_target_probs[rows].to(torch.float32)
    n, num_features = state.shape
    both = torch.cat([state, next_state])
    mean, std = both.mean(dim=0), both.std(dim=0).nan_to_num(1.0).clamp(min=1e-6)
    horizon = 1.0 / max(1.0 - gamma, 1e-3)
    scale = float(reward.abs().max().clamp(min=1e-6)) * horizon
    low, high = min(float(reward.min()), 0.0) * horizon, max(float(reward.max()), 0.0) * horizon
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = FittedQ(num_features, next_probs.shape[1], config.hidden, mean, std, scale)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    probe = state[torch.randperm(n, generator=generator)[: config.probe_rows]]
    everything = torch.arange(n)
    with torch.no_grad():
        history = [model(probe)]  # Q on the probe rows, the last ``window`` + 1 iterations
    contraction = 1.0 / max(1.0 - gamma ** config.window, 1e-6)
    bound, best, since_best, calm, iterations = float("inf"), float("inf"), 0, 0, 0
    target = reward
    while iterations < config.iterations:
        iterations += 1
        frozen = copy.deepcopy(model).eval()
        with torch.no_grad():
            target = reward + gamma * not_terminal * (next_probs * frozen(next_state)).sum(dim=1)
            target = target.clamp(low, high)
        for _ in range(config.steps_per_iteration):
            batch = everything if n <= config.batch_size else torch.randint(n, (config.batch_size,),
                                                                      generator=generator)
            predicted = model(state[batch]).gather(1, action[batch].reshape(-1, 1)).squeeze(1)
            loss = torch.mean(((predicted - target[batch]) / scale) ** 2)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]  # torch.Tensor.backward is unannotated
            optimizer.step()
        with torch.no_grad():
            current = model(probe)
        history = [*history[-config.window:], current]
        change = float((current - history[0]).abs().mean())
        bound = contraction * change / max(float(current.abs().mean()), 1e-12)
        if len(history) <= config.window:  # not a full window yet
            continue
        calm = calm + 1 if bound <= config.tolerance else 0
        if calm >= config.patience:
            break
        if bound < best:
            best, since_best = bound, 0
        else:
            since_best += 1
        if since_best >= config.plateau:
            for group in optimizer.param_groups:
                group["lr"] = max(group["lr"] / 2.0, 1e-6)
            since_best, best = 0, bound
    with torch.no_grad():
        predicted = model(state).gather(1, action.reshape(-1, 1)).squeeze(1)
        variance = float(target.var()) if n > 1 else 0.0
        fit_loss = float(((predicted - target) ** 2).mean()) / variance if variance > 0 else 0.0
    diagnostics = FQEDiagnostics(iterations, calm >= config.patience, bound, fit_loss,
                                 float(optimizer.param_groups[0]["lr"]))
    return model.eval(), diagnostics


def fqe_terms(model: FittedQ, start_state: Tensor, start_target_probs: Tensor) -> Terms:
    """FQE: V = (1/n) sum_i sum_a pi(a|s_0^i) Q(s_0^i, a) over the logged start states."""
    with torch.no_grad():
        q = model(start_state.to(torch.float32)).to(torch.float64)
    return Terms.mean_of((start_target_probs.to(torch.float64) * q).sum(dim=1))
