"""TD3: target policy smoothing, clipped double-Q target, delayed actor/target updates, learning."""

import copy

import pytest
import torch

from batchrl.config import TD3TrainerParameters
from batchrl.data.loader import Batch
from batchrl.models.continuous import Critic, DeterministicActor
from batchrl.training.algorithms.td3 import (
    TD3Trainer,
    clipped_double_q_target,
    smoothed_target_action,
    td3_bc_actor_loss,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks: one torch thread (more only contend on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_smoothing_noise_is_clipped_and_actions_stay_in_the_box():
    mu = torch.tensor([[0.0, 0.9], [-0.95, 0.2]])
    noise = torch.tensor([[0.8, 0.3], [-0.1, -0.7]])
    out = smoothed_target_action(mu, noise, noise_clip=0.5)
    assert out.flatten().tolist() == pytest.approx([0.5, 1.0, -1.0, -0.3])


def test_clipped_double_q_target_uses_the_minimum_and_stops_at_terminals():
    y = clipped_double_q_target(torch.tensor([1.0, 1.0]), 0.5, torch.tensor([True, False]),
                                torch.tensor([4.0, 10.0]), torch.tensor([6.0, 2.0]))
    assert y.tolist() == pytest.approx([3.0, 1.0])


def _batch(n: int, gen: torch.Generator) -> Batch:
    state = torch.rand(n, 2, generator=gen) * 2 - 1
    action = torch.rand(n, 1, generator=gen) * 2 - 1
    reward = -(action[:, 0] - state[:, 0]).pow(2)
    ones = torch.ones(n, dtype=torch.long)
    return Batch(state, None, state, None, action, ones, reward, torch.ones(n, 1, dtype=torch.bool),
                 torch.ones(n, 1, dtype=torch.bool), torch.zeros(n, dtype=torch.bool), torch.ones(n), ones, ones)


def _trainer(**overrides) -> TD3Trainer:
    torch.manual_seed(0)
    params = TD3TrainerParameters.model_validate({"rl": {"gamma": 0.0}, "q_network_optimizer": {"Adam": {"lr": 0.01}},
                                                  "actor_network_optimizer": {"Adam": {"lr": 0.01}}, **overrides})
    return TD3Trainer(DeterministicActor(2, 1, [32], ["relu"]), Critic(2, 1, [32], ["relu"]),
                      Critic(2, 1, [32], ["relu"]), params, seed=1)


def test_actor_and_targets_move_only_every_delayed_policy_update_steps():
    trainer = _trainer(delayed_policy_update=3)
    gen = torch.Generator().manual_seed(0)
    actor_before = [p.clone() for p in trainer.actor.parameters()]
    target_before = [p.clone() for p in trainer.q1_target.parameters()]
    critic_before = [p.clone() for p in trainer.q1.parameters()]
    for _ in range(2):
        trainer.update(_batch(16, gen))
    assert all(torch.equal(a, b) for a, b in zip(actor_before, trainer.actor.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(target_before, trainer.q1_target.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(critic_before, trainer.q1.parameters(), strict=True))
    trainer.update(_batch(16, gen))
    assert not all(torch.equal(a, b) for a, b in zip(actor_before, trainer.actor.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(target_before, trainer.q1_target.parameters(), strict=True))


def test_td3_learns_a_contextual_bandit():
    trainer = _trainer()
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        terms = trainer.update(_batch(64, gen))
    assert set(terms) >= {"loss", "q_loss", "actor_loss"}
    state = torch.tensor([[-0.5, 0.0], [0.0, 0.3], [0.6, -0.2]])
    assert trainer.act(state, explore=False)[:, 0].tolist() == pytest.approx([-0.5, 0.0, 0.6], abs=0.2)
    explored = trainer.act(state, explore=True)
    assert explored.abs().max() <= 1.0 and not torch.equal(explored, trainer.act(state, explore=False))


def test_td3_bc_loss_normalizes_q_and_adds_behaviour_cloning():
    q_actor = torch.tensor([4.0, 8.0])
    mu = torch.tensor([[0.5], [0.0]])
    logged = torch.tensor([[0.0], [1.0]])
    q_logged = torch.tensor([-10.0, 10.0])
    loss = td3_bc_actor_loss(q_actor, mu, logged, q_logged, bc_alpha=2.5)
    assert float(loss) == pytest.approx(-(2.5 / 10.0) * 6.0 + (0.25 + 1.0) / 2)


def test_td3_bc_stays_near_the_logged_actions():
    trainer = _trainer(bc_alpha=0.01)  # tiny alpha: mostly behaviour cloning
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        state = torch.rand(64, 2, generator=gen) * 2 - 1
        batch = _batch(64, gen)
        batch.state, batch.next_state = state, state
        batch.action = torch.full((64, 1), -0.6)  # logged behaviour: always -0.6
        batch.reward = -(batch.action[:, 0] - state[:, 0]).pow(2)
        trainer.update(batch)
    greedy = trainer.act(torch.tensor([[0.5, 0.0], [-0.2, 0.1]]), explore=False)[:, 0]
    assert greedy.tolist() == pytest.approx([-0.6, -0.6], abs=0.15)


def test_state_dict_round_trip_continues_identically():
    gen = torch.Generator().manual_seed(0)
    batches = [_batch(16, gen) for _ in range(6)]
    a = _trainer(actor_network_optimizer={"Adam": {"lr": 0.01, "lr_schedulers": [{"StepLR": {"step_size": 1}}]}})
    for b in batches[:3]:
        a.update(b)
    a.end_epoch()
    b_ = _trainer(actor_network_optimizer={"Adam": {"lr": 0.01, "lr_schedulers": [{"StepLR": {"step_size": 1}}]}})
    b_.load_state_dict(copy.deepcopy(a.state_dict()))  # as after torch.save/torch.load
    assert b_.actor_steps.learning_rate == pytest.approx(0.001)
    for b in batches[3:]:
        a.update(b)
        b_.update(b)
    assert all(torch.equal(x, y) for x, y in zip(a.actor.parameters(), b_.actor.parameters(), strict=True))
