"""SAC: the soft (entropy) target, the temperature loss, the squashed-Gaussian log-density, learning."""

import math

import pytest
import torch

from batchrl.config import SACTrainerParameters
from batchrl.data.loader import Batch
from batchrl.models.continuous import Critic, GaussianActor
from batchrl.training.algorithms.sac import SACTrainer, alpha_loss, soft_q_target


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks: one torch thread (more only contend on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_soft_target_subtracts_alpha_log_prob_from_the_smaller_q():
    reward = torch.tensor([1.0, 0.0, 2.0])
    not_terminal = torch.tensor([True, True, False])
    q1 = torch.tensor([5.0, -1.0, 9.0])
    q2 = torch.tensor([4.0, 3.0, 7.0])
    log_prob = torch.tensor([-1.0, 0.5, 0.0])
    y = soft_q_target(reward, 0.9, not_terminal, q1, q2, log_prob, alpha=0.2)
    expected = [1.0 + 0.9 * (4.0 + 0.2), 0.0 + 0.9 * (-1.0 - 0.1), 2.0]
    assert y.tolist() == pytest.approx(expected)


def test_alpha_loss_raises_alpha_when_entropy_is_below_target():
    log_alpha = torch.zeros((), requires_grad=True)
    # entropy -log_prob = -2 below target 0 -> gradient descent must increase log alpha
    alpha_loss(log_alpha, torch.full((8,), 2.0), target_entropy=0.0).backward()
    assert log_alpha.grad < 0
    log_alpha.grad = None
    alpha_loss(log_alpha, torch.full((8,), -3.0), target_entropy=-1.0).backward()  # entropy 3 > -1
    assert log_alpha.grad > 0


def test_squashed_gaussian_log_density_matches_change_of_variables():
    torch.manual_seed(0)
    actor = GaussianActor(3, 1, [8], ["relu"])
    x = torch.randn(5, 3)
    gen = torch.Generator().manual_seed(1)
    action, log_prob = actor.sample(x, gen)
    h = actor.trunk(x)
    mean, std = actor.mean(h), actor.log_std(h).clamp(-20, 2).exp()
    u = torch.atanh(action.clamp(-1 + 1e-6, 1 - 1e-6))
    normal = torch.distributions.Normal(mean, std).log_prob(u).sum(1)
    expected = normal - torch.log(1 - action.pow(2) + 1e-12).sum(1)
    assert torch.allclose(log_prob, expected, atol=1e-3)
    assert action.abs().max() <= 1.0


def _batch(n: int, gen: torch.Generator) -> Batch:
    state = torch.rand(n, 2, generator=gen) * 2 - 1
    action = torch.rand(n, 1, generator=gen) * 2 - 1
    reward = -(action[:, 0] - state[:, 0]).pow(2)  # best action = first state value
    ones = torch.ones(n, dtype=torch.long)
    return Batch(state, None, state, None, action, ones, reward, torch.ones(n, 1, dtype=torch.bool),
                 torch.ones(n, 1, dtype=torch.bool), torch.zeros(n, dtype=torch.bool), torch.ones(n), ones, ones)


def test_sac_learns_a_contextual_bandit_and_is_deterministic():
    def run():
        torch.manual_seed(0)
        params = SACTrainerParameters.model_validate({"rl": {"gamma": 0.0}, "entropy_temperature": 0.01,
                                                      "q_network_optimizer": {"Adam": {"lr": 0.01}},
                                                      "actor_network_optimizer": {"Adam": {"lr": 0.01}}})
        trainer = SACTrainer(GaussianActor(2, 1, [32], ["relu"]), Critic(2, 1, [32], ["relu"]),
                             Critic(2, 1, [32], ["relu"]), params, action_dim=1, seed=3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(250):
            terms = trainer.update(_batch(64, gen))
        return trainer, terms

    trainer, terms = run()
    assert set(terms) >= {"loss", "q_loss", "actor_loss", "entropy", "alpha"}
    state = torch.tensor([[-0.5, 0.0], [0.0, 0.3], [0.6, -0.2]])
    greedy = trainer.act(state, explore=False)[:, 0]
    assert greedy.tolist() == pytest.approx([-0.5, 0.0, 0.6], abs=0.2)
    again, _ = run()
    assert torch.equal(again.act(state, explore=False), trainer.act(state, explore=False))
    assert math.isfinite(float(terms["loss"]))


def test_learned_alpha_moves_toward_the_target_entropy():
    torch.manual_seed(0)
    params = SACTrainerParameters.model_validate({"entropy_temperature": 1.0, "target_entropy": -5.0,
                                                  "alpha_optimizer": {"Adam": {"lr": 0.05}}})
    trainer = SACTrainer(GaussianActor(2, 1, [16], ["relu"]), Critic(2, 1, [16], ["relu"]),
                         Critic(2, 1, [16], ["relu"]), params, action_dim=1, seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        trainer.update(_batch(32, gen))
    # a fresh Gaussian's entropy is far above -5 nats, so alpha must shrink
    assert float(trainer.alpha) < 1.0


def test_reagent_offline_sac_model_block_is_accepted_and_trains_with_a_value_network():
    import yaml

    from batchrl.config import SACModel
    from batchrl.models.networks import FullyConnected

    block = yaml.safe_load(open("configs/reagent/sac_pendulum_offline.yaml"))["model"]["SAC"]
    model = SACModel.model_validate(block)
    assert model.value_net_builder is not None and model.action_float_features == [(0, "0")]
    assert model.state_options.num_samples == 20000
    torch.manual_seed(0)
    params = model.trainer_param.model_copy(update={"rl": model.trainer_param.rl.model_copy(update={"gamma": 0.0})})
    trainer = SACTrainer(GaussianActor(2, 1, [32], ["relu"]), Critic(2, 1, [32], ["relu"]),
                         Critic(2, 1, [32], ["relu"]), params, action_dim=1,
                         value=FullyConnected(2, 1, [32], ["relu"]), seed=0)
    gen = torch.Generator().manual_seed(0)
    q_target_before = [p.clone() for p in trainer.q1_target.parameters()]
    first = trainer.update(_batch(64, gen))
    for _ in range(150):
        terms = trainer.update(_batch(64, gen))
    assert "value_loss" in terms and float(terms["value_loss"]) < float(first["value_loss"])
    # with V, the target comes from V_T; the Q target copies are not used nor moved
    assert all(torch.equal(a, b) for a, b in zip(q_target_before, trainer.q1_target.parameters(), strict=True))


def test_an_optimizer_step_ignores_gradients_another_loss_left():
    """SAC's actor loss backpropagates into the critics; the next critic step must not use that gradient."""
    from batchrl.config import OptimizerConfig, SGDParameters
    from batchrl.training.steps import every_update

    weight = torch.nn.Parameter(torch.zeros(1))
    steps = every_update(OptimizerConfig(SGD=SGDParameters(lr=1.0)), [weight])
    (5.0 * weight).sum().backward()  # another loss reached the parameter
    assert steps((2.0 * weight).sum())
    assert weight.item() == -2.0 and weight.grad is None
