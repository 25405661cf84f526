"""Counterfactual policy evaluation over candidate sets (parametric actions).

The estimators of :mod:`batchrl.evaluation.cpe` take per-row arrays over "actions"; over candidate sets the
actions of row i are its K padded candidate positions (padding gets probability 0):

    pi(k|s_i)    = softmax_{k real} (Q(s_i, a_ik) / temperature)      the exported model's scores
    a_i          = action_index (the logged item's position),  mu(a_i|s_i) = the logged propensity
    r_hat(s, a)  = a reward model over (state, item): MLP([x_s, x_a]) fitted by squared error on the logged
                   rewards of the eval table
    Q_hat(s, a)  = fitted Q evaluation of pi: Q_hat(s, a) <- r + gamma * not_terminal * sum_k pi(k|s') Q_hat_T(s', a'_k)
                   (the next state's candidates), semi-gradient with a target copy refreshed every
                   ``steps_per_iteration`` steps

with x = the exported model's own state and item preprocessors. DM, IPS, SNIPS, DR (one step) and SDR,
WDR, MAGIC (sequential) then run unchanged; Switch needs the logging policy's probability of every
candidate and is skipped. The models are fitted on the eval table itself (in-sample, like FQE).

Given the simulator the data came from (``env_id``), the result also holds ``simulated_one_step_value``: the
target policy's expected immediate reward on the eval rows' states from the simulator's expected rewards,
(1/N) sum_i sum_k pi(k|s_i) r(s_i, a_ik), the quantity one-step DR estimates
(:func:`batchrl.evaluation.candidate_rollouts.simulated_one_step_value`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from batchrl.data.loader import Batch, dataset_info, read_eval_batch
from batchrl.errors import BatchRLError
from batchrl.evaluation.cpe import (
    CPEInputs,
    counterfactual_estimates,
    kind_of,
    recommend,
    target_policy_probs,
)
from batchrl.evaluation.estimators.core import single_thread
from batchrl.models.parametric import ParametricQNetwork
from batchrl.serving.export import LoadedModel


@dataclass(frozen=True)
class CandidateModelConfig:
    """The reward and value models' network and schedule."""

    hidden: int = 64
    learning_rate: float = 3e-3
    reward_steps: int = 200
    iterations: int = 20
    steps_per_iteration: int = 20
    seed: int = 0


def _network(inputs: int, hidden: int) -> ParametricQNetwork:
    return ParametricQNetwork(nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                            nn.ReLU(), nn.Linear(hidden, 1)))


@dataclass(frozen=True)
class _Inputs:
    state: Tensor  # [N, S] network input
    items: Tensor  # [N, K, A]
    mask: Tensor  # [N, K]
    next_state: Tensor
    next_items: Tensor
    next_probs: Tensor  # [N, K] pi over the next candidates


def _network_inputs(policy: LoadedModel, batch: Batch, temperature: float) -> tuple[_Inputs, Tensor]:
    """The preprocessed inputs and pi(.|s) over each row's candidates."""
    assert batch.candidates is not None and batch.candidates_presence is not None  # parametric eval tables
    assert batch.next_candidates is not None and batch.next_candidates_presence is not None
    assert batch.state_presence is not None and batch.next_state_presence is not None
    module = policy.module
    n, k, a = batch.candidates.shape

    def items(values: Tensor, presence: Tensor) -> Tensor:
        out: Tensor = module.item_preprocessor(values.reshape(n * k, a), presence.reshape(n * k, a))
        return out.reshape(n, k, -1)

    with torch.no_grad():
        q = module(batch.state, batch.state_presence, batch.candidates, batch.candidates_presence,
                   batch.possible_actions_mask)
        next_q = module(batch.next_state, batch.next_state_presence, batch.next_candidates,
                        batch.next_candidates_presence, batch.possible_next_actions_mask)
        inputs = _Inputs(module.state_preprocessor(batch.state, batch.state_presence),
                         items(batch.candidates, batch.candidates_presence), batch.possible_actions_mask,
                         module.state_preprocessor(batch.next_state, batch.next_state_presence),
                         items(batch.next_candidates, batch.next_candidates_presence),
                         target_policy_probs(next_q, batch.possible_next_actions_mask, temperature).float())
    return inputs, target_policy_probs(q, batch.possible_actions_mask, temperature)


def fit_models(x: _Inputs, action_index: Tensor, reward: Tensor, not_terminal: Tensor, gamma: float,
               config: CandidateModelConfig) -> tuple[Tensor, Tensor]:
    """(r_hat [N, K], Q_hat [N, K]) over every row's candidates (module docstring)."""
    with torch.random.fork_rng(), single_thread():  # small networks: one thread (core.single_thread)
        torch.manual_seed(config.seed)
        width = x.state.shape[1] + x.items.shape[2]
        reward_net, value_net = _network(width, config.hidden), _network(width, config.hidden)
        logged = x.items[torch.arange(len(action_index)), action_index]
        optimizer = torch.optim.Adam(reward_net.parameters(), lr=config.learning_rate)
        for _ in range(config.reward_steps):
            loss = ((reward_net.single(x.state, logged) - reward) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]  # torch.Tensor.backward is unannotated
            optimizer.step()
        optimizer = torch.optim.Adam(value_net.parameters(), lr=config.learning_rate)
        for _ in range(config.iterations):
            frozen = copy.deepcopy(value_net).requires_grad_(False)
            with torch.no_grad():
                next_value = (x.next_probs * frozen(x.next_state, x.next_items)).sum(1)
                target = reward + gamma * not_terminal.float() * next_value
            for _ in range(config.steps_per_iteration):
                loss = ((value_net.single(x.state, logged) - target) ** 2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            return reward_net(x.state, x.items).double(), value_net(x.state, x.items).double()


def candidate_cpe(policy: LoadedModel, eval_uri: str, gamma: float, temperature: float, seed: int, bootstrap: int,
                  switch_threshold: float, config: CandidateModelConfig | None = None, env_id: str | None = None
                  ) -> dict[str, Any]:
    """CPE of pi = softmax(Q/temperature) over the candidates of the eval table's rows (module docstring), in
    the shape of :func:`batchrl.evaluation.evaluate.counterfactual_evaluation`'s result; with ``env_id`` (the
    simulator that logged the table) also ``simulated_one_step_value``."""
    info = dataset_info(eval_uri)
    item_ids = policy.metadata.get("action_feature_ids")
    if not info.parametric or (info.feature_ids, [int(i) for i in info.action_names]) != (policy.feature_ids, item_ids):
        raise BatchRLError(f"the eval table (feature ids {info.feature_ids}, item ids {info.action_names}, "
                           f"{'parametric' if info.parametric else 'not parametric'}) does not match the parametric "
                           f"model (feature ids {policy.feature_ids}, item ids {item_ids})", where=eval_uri,
                           fix="evaluate on the eval table prepared with the model's training table")
    batch = read_eval_batch(eval_uri, info)
    if len(batch) == 0:
        raise BatchRLError("the eval table has no rows with a logged item", where=eval_uri,
                           fix="prepare a non-empty eval table (eval_table_sample > 0)")
    # parametric eval batches carry them
    assert batch.action_index is not None and batch.episode is not None and batch.candidates is not None
    x, probs = _network_inputs(policy, batch, temperature)
    reward_hat, q_hat = fit_models(x, batch.action_index, batch.reward, batch.not_terminal, gamma,
                                   config or CandidateModelConfig(seed=seed))
    inputs = CPEInputs(reward=batch.reward.double(), action=batch.action_index,
                       logged_propensity=batch.action_probability.double(), target_probs=probs,
                       reward_hat=reward_hat, q_hat=q_hat, episode=batch.episode, not_terminal=batch.not_terminal)
    result = counterfactual_estimates(inputs, gamma, seed, bootstrap, switch_threshold=switch_threshold)
    estimates = result["estimates"]
    truth: dict[str, Any] = {}
    if env_id is not None:
        from batchrl.evaluation.candidate_rollouts import simulated_one_step_value

        truth["simulated_one_step_value"] = simulated_one_step_value(
            env_id, policy, batch.state.double().numpy(), batch.candidates.double().numpy(), probs.numpy())
    return {
        "estimates": estimates, "kinds": {name: kind_of(name) for name in estimates},
        "skipped": {**result["skipped"], "Switch": "needs the logging policy's probability of every candidate"},
        "recommended": recommend(estimates, result["logging_policy"]["longest_episode"]),
        "logging_policy": result["logging_policy"],
        "reward_model": "fitted on the eval table: MLP over (state, item)",
        "value_model": "fitted Q evaluation of the target policy over (state, item), on the eval table",
        "target_policy": f"softmax(Q/{temperature:g}) over each row's candidates" if temperature > 0
        else "greedy over each row's candidates",
        **truth,
        "inputs": inputs,
    }
