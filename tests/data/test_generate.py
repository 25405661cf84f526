"""The generate stage: schema, determinism, propensities, terminal marking, budgets."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from batchrl import storage
from batchrl.data.gym_logging import GenerateOptions, generate
from batchrl.data.schema import logged_schema
from batchrl.errors import BatchRLError


def _gen(tmp_path, name="out", **kw):
    uri = str(tmp_path / name)
    summary = generate(uri, GenerateOptions(**kw))
    return storage.read_table(uri), summary


def test_cartpole_30000_rows_schema_and_probabilities(tmp_path, cli):
    code, out, _ = cli("generate", "--env", "CartPole-v0", "--transitions", "30000", "--seed", "42",
                       "--output", tmp_path / "cp")
    assert code == 0
    table = storage.read_table(str(tmp_path / "cp"))
    assert table.num_rows == 30000
    assert table.schema.equals(logged_schema(), check_metadata=False)
    df = table.to_pandas()
    assert (df.action_probability == 0.5).all()
    assert all(list(p) == ["0", "1"] for p in df.possible_actions)
    assert set(df.action) == {"0", "1"}
    assert (df.ds == "2019-01-01").all()
    assert all(dict(m)["reward"] == r for m, r in zip(df.metrics, df.reward, strict=True))
    assert all(len(s) == 4 and [k for k, _ in s] == [0, 1, 2, 3] for s in df.state_features[:100])


def test_every_transition_once_in_order_and_exact_terminal(tmp_path):
    table, summary = _gen(tmp_path, transitions=3000, seed=1)
    df = table.to_pandas()
    assert not df.duplicated(["mdp_id", "sequence_number"]).any()
    for _, ep in df.groupby("mdp_id", sort=False):
        assert list(ep.sequence_number) == list(range(len(ep)))
        ends = ep.end_reason.tolist()
        assert all(e is None for e in ends[:-1])  # only the last row says how the episode ended
        assert ends[-1] in ("terminated", "truncated")
    # mdp ids are 0..E-1 in row order
    assert list(dict.fromkeys(df.mdp_id)) == [str(i) for i in range(summary.episodes)]
    assert summary.terminated_episodes + summary.truncated_episodes == summary.episodes
    # CartPole gives reward 1 on every step, including the terminal one
    assert (df.reward == 1.0).all()


def test_budget_cut_is_truncation(tmp_path):
    # CartPole episodes last at least 8 steps, so a 5-transition budget cuts the first one short
    table, summary = _gen(tmp_path, transitions=5, seed=0)
    assert table.column("end_reason").to_pylist() == [None] * 4 + ["truncated"]
    assert summary.truncated_episodes == 1


def test_time_limit_is_truncation_not_termination(tmp_path):
    # MountainCar never reaches the goal at random within its 200-step limit
    table, summary = _gen(tmp_path, env="MountainCar-v0", episodes=4, seed=0, num_envs=2)
    df = table.to_pandas()
    assert summary.truncated_episodes == 4 and summary.terminated_episodes == 0
    assert df.groupby("mdp_id").size().tolist() == [200] * 4
    assert sorted(df.possible_actions.iloc[0]) == ["0", "1", "2"]


def test_max_steps_truncates(tmp_path):
    table, summary = _gen(tmp_path, episodes=6, seed=0, max_steps=5)
    assert table.num_rows == 30 and summary.truncated_episodes == 6


def test_same_seed_same_rows_other_seed_differs(tmp_path):
    a, _ = _gen(tmp_path, "a", transitions=2000, seed=7)
    b, _ = _gen(tmp_path, "b", transitions=2000, seed=7)
    c, _ = _gen(tmp_path, "c", transitions=2000, seed=8)
    assert a.equals(b)
    assert not a.equals(c)


def test_episode_budget(tmp_path):
    table, summary = _gen(tmp_path, episodes=25, seed=3)
    assert summary.episodes == 25 == len(set(table.column("mdp_id").to_pylist()))


def test_box_actions_are_maps_with_density(tmp_path):
    table, summary = _gen(tmp_path, env="Pendulum-v1", transitions=500, seed=0, num_envs=2)
    assert pa.types.is_map(table.schema.field("action").type)
    assert "possible_actions" not in table.column_names
    df = table.to_pandas()
    assert np.allclose(df.action_probability, 0.25)  # uniform on [-2, 2]
    values = np.array([dict(a)[0] for a in df.action])
    assert values.min() >= -2 and values.max() <= 2


class _TinyPolicy(torch.nn.Module):
    """A spec section 8 policy: prefers action 1 when the pole angle (feature 2) is positive."""

    def forward(self, values: torch.Tensor, presence: torch.Tensor):
        q = torch.stack([-values[:, 2], values[:, 2]], dim=1)
        return ["0", "1"], q


def _save_policy(tmp_path) -> str:
    path = str(tmp_path / "policy.torchscript")
    torch.jit.script(_TinyPolicy()).save(path)
    return path


def test_epsilon_greedy_propensities(tmp_path):
    model = _save_policy(tmp_path)
    table, _ = _gen(tmp_path, transitions=4000, seed=5, policy="epsilon-greedy", model=model, epsilon=0.3)
    df = table.to_pandas()
    angle = np.array([dict(s)[2] for s in df.state_features])
    greedy = np.where(angle > 0, "1", "0")
    is_greedy = df.action.to_numpy() == greedy
    assert np.allclose(df.action_probability[is_greedy], 1 - 0.3 + 0.3 / 2)
    assert np.allclose(df.action_probability[~is_greedy], 0.3 / 2)
    # the share of non-greedy actions matches eps/A within sampling error
    assert abs((~is_greedy).mean() - 0.15) < 0.03


def test_first_actions_are_not_the_environments_random_numbers(tmp_path):
    """The policy must not draw from the stream the environments are seeded with: CartPole's native vector
    env draws env i's initial state (x, x_dot, angle, angle_dot) as the first 4 x num_envs uniforms of
    PCG64(SeedSequence(seed)), so a policy on default_rng(seed) would take, at step 0, the action that
    u_i = (x_i + 0.05) / 0.1 dictates: every time, whatever the logged propensity says."""
    model = _save_policy(tmp_path)
    table, _ = _gen(tmp_path, episodes=512, num_envs=512, seed=3, policy="epsilon-greedy", model=model,
                    epsilon=0.5)
    df = table.to_pandas()
    first = df[df.sequence_number == 0]
    assert len(first) == 512
    x = np.array([dict(s)[0] for s in first.state_features])
    angle = np.array([dict(s)[2] for s in first.state_features])
    p_first = np.where(angle > 0, 0.25, 0.75)  # P(action "0"): epsilon 0.5 over 2 actions
    coupled = np.where((x + 0.05) / 0.1 > p_first, "1", "0")  # the action the environment's stream dictates
    agreement = (first.action.to_numpy() == coupled).mean()
    assert agreement < 0.75  # independent draws: about 0.625; sharing the stream (the old code): 0.92


def test_softmax_propensities(tmp_path):
    model = _save_policy(tmp_path)
    table, _ = _gen(tmp_path, transitions=1000, seed=5, policy="softmax", model=model, temperature=0.05)
    df = table.to_pandas()
    angle = np.array([dict(s)[2] for s in df.state_features])
    q = np.stack([-angle, angle], axis=1) / 0.05
    p = np.exp(q - q.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    idx = df.action.astype(int).to_numpy()
    assert np.allclose(df.action_probability, p[np.arange(len(p)), idx])


@pytest.mark.parametrize("args, message", [
    (["--env", "NoSuchEnv-v9", "--transitions", "10"], "unknown gymnasium environment"),
    (["--transitions", "10", "--policy", "epsilon-greedy"], "needs a model"),
    (["--transitions", "0"], "transitions"),
    (["--transitions", "10", "--epsilon", "1.5"], "epsilon"),
])
def test_bad_options_exit_2(tmp_path, cli, args, message):
    code, _, err = cli("generate", *args, "--output", tmp_path / "x")
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_not_a_model_exit_2(tmp_path, cli):
    bad = tmp_path / "bad.torchscript"
    bad.write_bytes(b"not a model")
    code, _, err = cli("generate", "--transitions", "10", "--policy", "softmax", "--model", bad,
                       "--output", tmp_path / "x")
    assert code == 2 and "not a TorchScript model" in err


class _TinyActor(torch.nn.Module):
    """A continuous spec section 8 policy in Pendulum's units: torque 1.9 * cos(theta) (feature 0), so
    mu(s) ranges over [-1.9, 1.9] and the truncation at +-2 matters."""

    def forward(self, values: torch.Tensor, presence: torch.Tensor):
        return ["0"], 1.9 * values[:, :1]


def test_gaussian_noise_around_an_actor_logs_the_truncated_normal_density(tmp_path):
    from scipy.stats import truncnorm

    path = str(tmp_path / "actor.torchscript")
    torch.jit.script(_TinyActor()).save(path)
    table, summary = _gen(tmp_path, env="Pendulum-v1", transitions=4000, seed=3, num_envs=4, policy="gaussian",
                          model=path, noise=0.5)
    df = table.to_pandas()
    mu = 1.9 * np.array([dict(s)[0] for s in df.state_features])
    action = np.array([dict(a)[0] for a in df.action])
    sigma = 0.5 * (2.0 - -2.0) / 2  # noise in [-1, 1] units -> 1.0 torque
    assert action.min() >= -2.0 and action.max() <= 2.0
    # the logged propensity is the density of N(mu, sigma^2) truncated to [-2, 2] (scipy's, independently)
    expected = truncnorm.pdf(action, (-2.0 - mu) / sigma, (2.0 - mu) / sigma, loc=mu, scale=sigma)
    assert np.allclose(df.action_probability, expected, rtol=1e-6)
    # and the actions follow it: the probability integral transform is uniform on [0, 1]
    pit = truncnorm.cdf(action, (-2.0 - mu) / sigma, (2.0 - mu) / sigma, loc=mu, scale=sigma)
    assert np.histogram(pit, bins=4, range=(0, 1))[0] / len(pit) == pytest.approx([0.25] * 4, abs=0.03)
    assert summary.policy == "gaussian"


def test_gaussian_needs_a_box_action_space_and_a_matching_model(tmp_path):
    path = str(tmp_path / "actor.torchscript")
    torch.jit.script(_TinyActor()).save(path)
    with pytest.raises(BatchRLError, match="needs a Box action space"):
        _gen(tmp_path, transitions=10, policy="gaussian", model=path)
    with pytest.raises(BatchRLError, match="do not match the environment's 1 action dimensions"):
        _gen(tmp_path, env="Pendulum-v1", transitions=10, policy="gaussian", model=_save_policy(tmp_path))
