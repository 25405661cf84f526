"""Per-epoch evaluation on the eval table: TD loss, Q-values per action, action distributions, CPE.

CPE (spec section 7) uses the target policy pi = masked softmax(Q(s)/temperature), the logged
propensities, the reward model r_hat and the CPE value model Q_hat trained alongside the Q-network, and
a logging-policy model fitted on the eval states (mu of the actions not taken, for Switch).
"""

from __future__ import annotations

from typing import Any

import torch

from batchrl.data.loader import Batch
from batchrl.evaluation.cpe import CPEInputs, estimate_all, target_policy_probs
from batchrl.evaluation.logging_policy import LoggingPolicyConfig, fit_logging_policy
from batchrl.models.policy import masked_argmax
from batchrl.training.cpe_models import CPETrainer
from batchrl.training.trainer import Trainer

EVAL_CHUNK_ROWS = 65536


def _chunks(batch: Batch, rows: int = EVAL_CHUNK_ROWS) -> list[Batch]:
    return [batch.index(slice(i, i + rows)) for i in range(0, len(batch), rows)]


def _weighted_mean(parts: list[tuple[int, dict[str, torch.Tensor]]]) -> dict[str, float]:
    total = sum(n for n, _ in parts)
    names = parts[0][1].keys()
    return {name: sum(float(terms[name]) * n for n, terms in parts) / total for name in names}


@torch.no_grad()
def outputs(network: torch.nn.Module, state: torch.Tensor) -> torch.Tensor:
    """``network(state)`` in eval mode, float32, in chunks, on the CPU."""
    was_training = network.training
    network.eval()
    try:
        return torch.cat([network(state[i:i + EVAL_CHUNK_ROWS]).float().cpu()
                          for i in range(0, state.shape[0], EVAL_CHUNK_ROWS)])
    finally:
        network.train(was_training)


def cpe_inputs(batch: Batch, q: torch.Tensor, reward_hat: torch.Tensor | None, q_hat: torch.Tensor | None,
               temperature: float) -> CPEInputs:
    """CPE inputs of an eval batch (rows ordered by episode and sequence) and model outputs [N, A]."""
    cpu = batch.to("cpu")
    if cpu.episode is None:
        raise ValueError("CPE needs the eval batch's episode ids: read it with read_eval_batch")
    return CPEInputs(
        reward=cpu.reward.double(), action=cpu.action, logged_propensity=cpu.action_probability.double(),
        target_probs=target_policy_probs(q, cpu.possible_actions_mask, temperature),
        reward_hat=None if reward_hat is None else reward_hat.double(),
        q_hat=None if q_hat is None else q_hat.double(),
        episode=cpu.episode, not_terminal=cpu.not_terminal)


def epoch_metrics(trainer: Trainer, cpe: CPETrainer | None, eval_batch: Batch, action_names: list[str],
                  *, gamma: float, temperature: float, seed: int, bootstrap: int) -> dict[str, Any]:
    """Metrics of the current models on the (preprocessed, on-device) eval batch."""
    chunks = _chunks(eval_batch)
    eval_terms = [(len(c), trainer.evaluate(c)) for c in chunks]
    if cpe is not None:
        eval_terms = [(n, {**terms, **cpe.evaluate(c)}) for (n, terms), c in zip(eval_terms, chunks, strict=True)]
    q = outputs(trainer.q_network, eval_batch.state)
    mask = eval_batch.possible_actions_mask.cpu()
    greedy = masked_argmax(q, mask)
    logged = eval_batch.action.cpu()
    n = max(len(eval_batch), 1)
    metrics: dict[str, Any] = {
        "eval": _weighted_mean(eval_terms),
        "q_values": {a: float(q[:, i].mean()) for i, a in enumerate(action_names)},
        "action_distribution": {a: float((greedy == i).sum()) / n for i, a in enumerate(action_names)},
        "logged_action_distribution": {a: float((logged == i).sum()) / n for i, a in enumerate(action_names)},
    }
    if cpe is not None:
        reward_hat = outputs(cpe.reward_network, eval_batch.state)
        q_hat = outputs(cpe.value_network, eval_batch.state)
        inputs = cpe_inputs(eval_batch, q, reward_hat, q_hat, temperature)
        mu_hat = fit_logging_policy(eval_batch.state.cpu(), inputs.action, inputs.logged_propensity,
                                    len(action_names), mask, LoggingPolicyConfig(seed=seed), calibrate=False)
        inputs.logging_probs = mu_hat.probs
        metrics["cpe"] = estimate_all(inputs, gamma=gamma, seed=seed, bootstrap=bootstrap)
    return metrics

