"""IQL for continuous actions (``model: {IQL: ...}``): the expectile loss and the AWR weights on hand-computed
values, the clipped-Gaussian log-density, the config's paper defaults, and learning a contextual bandit from
uniformly random logged actions far better than a random policy."""

import math

import pytest
import torch

from batchrl.config import ContinuousIQLTrainerParameters, ModelConfig
from batchrl.data.loader import Batch
from batchrl.models.continuous import Critic, GaussianActor
from batchrl.models.networks import FullyConnected
from batchrl.training.algorithms.continuous_iql import ACTOR_LOG_STD_MIN, ContinuousIQLTrainer, awr_weight
from batchrl.training.td import expectile_loss


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks: one torch thread (more only contend on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_expectile_loss_weights_positive_errors_by_tau_and_negative_by_one_minus_tau():
    # u = q - v: 3 -> 0.7 * 9 = 6.3; -3 -> 0.3 * 9 = 2.7; 0.5 -> 0.7 * 0.25 = 0.175; -1 -> 0.3
    loss = expectile_loss(torch.tensor([3.0, -3.0, 0.5, -1.0]), 0.7)
    assert loss.tolist() == pytest.approx([6.3, 2.7, 0.175, 0.3])
    # the minimizer over a constant v of mean L_tau(q_i - v) for q = {0, 10}: tau (10 - v) = (1 - tau) v, v = 10 tau
    v = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        expectile_loss(torch.tensor([0.0, 10.0]) - v, 0.7).mean().backward()
        opt.step()
    assert float(v.detach()) == pytest.approx(7.0, abs=1e-3)


def test_awr_weight_is_exp_of_beta_times_advantage_clipped_at_max_weight():
    advantage = torch.tensor([0.0, 1.0, -2.0, 2.0, 10.0], requires_grad=True)
    weight = awr_weight(advantage, beta=3.0, max_weight=100.0)
    # exp(0) = 1, exp(3) = 20.0855, exp(-6) = 0.0024788, exp(6) = 403 -> 100, exp(30) -> 100
    assert weight.tolist() == pytest.approx([1.0, math.exp(3.0), math.exp(-6.0), 100.0, 100.0], rel=1e-5)
    assert not weight.requires_grad


def test_clipped_log_prob_is_a_gaussian_around_the_serving_action():
    torch.manual_seed(0)
    actor = GaussianActor(3, 2, [8], ["relu"])
    x = torch.randn(5, 3)
    action = torch.tensor([[1.0, -1.0], [0.0, 0.5], [-0.3, 0.9], [1.0, 1.0], [-1.0, 0.0]])  # bounds included
    h = actor.trunk(x)
    std = actor.log_std(h).clamp(ACTOR_LOG_STD_MIN, 2.0).exp()
    expected = torch.distributions.Normal(actor(x), std).log_prob(action).sum(1)
    log_prob = actor.clipped_log_prob(x, action, ACTOR_LOG_STD_MIN)
    assert torch.allclose(log_prob, expected, atol=1e-5) and torch.isfinite(log_prob).all()
    draws = actor.clipped_sample(x, ACTOR_LOG_STD_MIN, torch.Generator().manual_seed(0))
    assert draws.shape == (5, 2) and draws.abs().max() <= 1.0


def test_config_defaults_are_the_papers_and_bad_values_are_rejected():
    block = ModelConfig.model_validate({"IQL": {}}).value
    params = block.trainer_param
    assert (params.expectile, params.beta, params.max_weight) == (0.7, 3.0, 100.0)
    assert params.rl.gamma == 0.99 and params.rl.target_update_rate == 0.005
    for optimizer in (params.q_network_optimizer, params.value_network_optimizer, params.actor_network_optimizer):
        assert optimizer.Adam.lr == pytest.approx(3e-4)
    assert block.actor_net_builder.name == "GaussianFullyConnected" and ModelConfig.model_validate({"IQL": {}}).continuous
    for bad in ({"expectile": 1.0}, {"expectile": 0.0}, {"beta": 0.0}, {"max_weight": -1.0}, {"alpha": 1.0}):
        with pytest.raises(ValueError):
            ContinuousIQLTrainerParameters.model_validate(bad)
    with pytest.raises(ValueError, match="GaussianFullyConnected"):
        ModelConfig.model_validate({"IQL": {"actor_net_builder": {"FullyConnected": {"sizes": [4], "activations": ["relu"]}}}})


def _bandit(n: int, gen: torch.Generator) -> Batch:
    """One-step episodes: the best action is the first state value, logged actions uniform in [-1, 1]."""
    state = torch.rand(n, 2, generator=gen) * 2 - 1
    action = torch.rand(n, 1, generator=gen) * 2 - 1
    reward = -(action[:, 0] - state[:, 0]).pow(2)
    ones = torch.ones(n, dtype=torch.long)
    return Batch(state, None, state, None, action, ones, reward, torch.zeros(n, 0, dtype=torch.bool),
                 torch.zeros(n, 0, dtype=torch.bool), torch.zeros(n, dtype=torch.bool), torch.full((n,), 0.5), ones,
                 ones)


def test_iql_learns_the_best_logged_actions_far_better_than_a_random_policy():
    def run() -> ContinuousIQLTrainer:
        torch.manual_seed(0)
        params = ContinuousIQLTrainerParameters.model_validate({
            "rl": {"gamma": 0.0, "target_update_rate": 0.05}, "expectile": 0.9, "beta": 10.0,
            **{key: {"Adam": {"lr": 0.01}} for key in (
                "q_network_optimizer", "value_network_optimizer", "actor_network_optimizer")}})
        trainer = ContinuousIQLTrainer(GaussianActor(2, 1, [32], ["relu"]), Critic(2, 1, [32], ["relu"]),
                                       Critic(2, 1, [32], ["relu"]), FullyConnected(2, 1, [32], ["relu"]), params,
                                       seed=3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(300):
            terms = trainer.update(_bandit(64, gen))
        assert all(math.isfinite(float(v)) for v in terms.values())
        return trainer

    trainer = run()
    test = _bandit(2000, torch.Generator().manual_seed(99))
    greedy_reward = -(trainer.act(test.state, explore=False)[:, 0] - test.state[:, 0]).pow(2).mean()
    random_reward = test.reward.mean()  # the uniformly random logging policy: about -2/3
    assert float(random_reward) == pytest.approx(-2 / 3, abs=0.05)
    assert float(greedy_reward) > -0.05  # within about 0.2 of the best action on average
    assert torch.equal(run().act(test.state, explore=False), trainer.act(test.state, explore=False))
