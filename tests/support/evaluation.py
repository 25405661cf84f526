"""Shared helpers of the evaluation tests: a toy exported model with CPE models, a synthetic eval
table, a training summary, and a contextual bandit with a known truth."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from batchrl import storage
from batchrl.data.schema import TRAINING_COLUMNS
from batchrl.evaluation.cpe import CPEInputs
from batchrl.serving.export import export_model

ACTIONS = ["0", "1"]
FEATURES = [0, 1, 2, 3]


class Identity(nn.Module):
    def forward(self, values: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        return values * presence


class LeanPolicy(nn.Module):
    """Q = (-s, s), s = pole angle + angular velocity: pushes the cart under the pole (CartPole 200)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, 2] + x[:, 3]
        return torch.stack([-s, s], dim=1)


class AngleOnly(nn.Module):
    """Q = (-angle, angle): a mediocre policy whose episode lengths vary with the start state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([-x[:, 2], x[:, 2]], dim=1)


class Constant(nn.Module):
    def __init__(self, values: list[float]):
        super().__init__()
        self.register_buffer("values", torch.tensor(values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.values.expand(x.shape[0], -1)


def write_model(path: str, cpe_models: bool = True, summary: dict | None = None,
                network: nn.Module | None = None, actions: list[str] = ACTIONS,
                features: list[int] = FEATURES) -> str:
    export_model(f"{path}/model.torchscript", Identity(), network or LeanPolicy(), actions, features, {}, {})
    if cpe_models:
        export_model(f"{path}/reward_model.torchscript", Identity(), Constant([1.0, 1.0]), actions, features, {}, {})
        export_model(f"{path}/q_value_model.torchscript", Identity(), Constant([20.0, 20.0]), actions, features,
                     {}, {})
    if summary is not None:
        storage.write_json(f"{path}/training_summary.json", summary)
    return path


def write_eval_table(uri: str, episodes: int = 12, seed: int = 0, actions: list[str] = ACTIONS) -> str:
    """Synthetic CartPole-like episodes logged by a uniform random policy (propensity 0.5)."""
    rng = np.random.default_rng(seed)
    rows = []
    for ep in range(episodes):
        length = int(rng.integers(4, 12))
        states = rng.normal(0, 0.1, size=(length + 1, 4)).astype(np.float32)
        for t in range(length):
            last = t == length - 1
            rows.append({
                "reward": 1.0, "state_features": states[t].tolist(), "state_features_presence": [True] * 4,
                "next_state_features": states[t + 1].tolist() if not last else [0.0] * 4,
                "next_state_features_presence": [not last] * 4, "action": int(rng.integers(2)),
                "next_action": int(rng.integers(2)) if not last else len(actions),
                "possible_actions_mask": [True] * len(actions),
                "possible_next_actions_mask": [not last] * len(actions), "not_terminal": not last,
                "action_probability": 0.5, "mdp_id": f"{ep:03d}", "sequence_number": t, "step": 1,
                "time_diff": 1, "metrics": [1.0], "metrics_presence": [True]})
    rng.shuffle(rows)  # the stage must order rows by episode and sequence itself
    schema = pa.schema([pa.field(name, kind) for name, kind in TRAINING_COLUMNS.items()])
    table = pa.Table.from_pylist(rows, schema=schema)
    storage.write_table(table, uri, metadata={"feature_ids": FEATURES, "action_names": actions,
                                              "metric_names": ["reward"]})
    return uri


SUMMARY = {"gamma": 0.9, "temperature": 0.5, "algorithm": "DiscreteDQN", "epochs": 2,
           "per_epoch": [{"epoch": 1, "train": {"loss": 2.0, "steps": 3}, "eval": {"td_loss": 1.5},
                          "cpe": {"WDR": {"normalized": 0.9}}},
                         {"epoch": 2, "train": {"loss": 1.0, "steps": 3}, "eval": {"td_loss": 0.7},
                          "cpe": {"WDR": {"normalized": 1.1}}}]}


def bandit(seed: int, n: int, on_policy: bool, exact_model: bool, noise: float = 0.0,
            episode_length: int = 1) -> tuple[CPEInputs, float]:
    """Contexts with a known expected reward table; returns inputs and the target's true value on them."""
    gen = torch.Generator().manual_seed(seed)
    actions = 3
    expected = torch.rand(n, actions, generator=gen, dtype=torch.float64)
    logging = torch.softmax(torch.randn(n, actions, generator=gen, dtype=torch.float64), dim=1)
    target = logging.clone() if on_policy else \
        torch.softmax(2 * torch.randn(n, actions, generator=gen, dtype=torch.float64), dim=1)
    action = torch.multinomial(logging, 1, generator=gen).squeeze(1)
    reward = expected.gather(1, action.unsqueeze(1)).squeeze(1) + noise * torch.randn(n, generator=gen)
    model = expected if exact_model else torch.rand(n, actions, generator=gen, dtype=torch.float64)
    episode = torch.arange(n) // episode_length
    not_terminal = (torch.arange(n) % episode_length) != episode_length - 1
    inputs = CPEInputs(reward=reward, action=action, logged_propensity=logging.gather(1, action.unsqueeze(1))
                       .squeeze(1), target_probs=target, reward_hat=model, q_hat=model, episode=episode,
                       not_terminal=not_terminal, logging_probs=logging)
    return inputs, float((target * expected).sum(dim=1).mean())
