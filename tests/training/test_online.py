"""Online training pieces: replay buffer, exploration, state normalization, the gym config schema."""

import numpy as np
import pytest
import torch

from batchrl.errors import BatchRLError
from batchrl.preprocessing.normalization import FeatureType
from batchrl.training.gym_config import load_gym_config, parse_gym_config
from batchrl.training.online import ReplayBuffer, explore_discrete, identify_states, linear_epsilon


def _minimal(**extra):
    return {"env": "CartPole-v0", "num_train_episodes": 1,
            "model": {"DiscreteDQN": {"trainer_param": {"actions": [0, 1]}}}, **extra}


def test_replay_buffer_links_next_actions_within_episodes_and_wraps():
    buf = ReplayBuffer(capacity=4, obs_dim=2, action_dim=None, num_actions=2)
    for t, (action, terminated) in enumerate([(1, False), (0, False), (1, True)]):
        buf.add(np.full(2, t), action, float(t), np.full(2, t + 1), terminated, episode_start=t == 0)
    buf.end_episode()
    assert buf.next_action[:3].tolist() == [0, 1, 2]  # 2 = no next action (terminal)
    assert buf.not_terminal[:3].tolist() == [True, True, False]
    buf.add(np.full(2, 9), 0, 9.0, np.full(2, 10), False, episode_start=True)
    buf.add(np.full(2, 10), 1, 10.0, np.full(2, 11), False, episode_start=False)  # overwrites slot 0
    assert len(buf) == 4 and buf.state[0, 0] == 10 and buf.next_action[3] == 1
    batch = buf.sample(64, np.random.default_rng(0), torch.device("cpu"))
    assert batch.state.shape == (64, 2) and batch.action.dtype == torch.long
    assert set(batch.reward.tolist()) <= {1.0, 2.0, 9.0, 10.0}
    assert batch.possible_actions_mask.shape == (64, 2) and batch.possible_actions_mask.all()


def test_continuous_buffer_keeps_action_vectors():
    buf = ReplayBuffer(capacity=8, obs_dim=3, action_dim=2)
    buf.add(np.zeros(3), np.array([0.5, -0.5]), 1.0, np.ones(3), False, episode_start=True)
    batch = buf.sample(4, np.random.default_rng(0), torch.device("cpu"))
    assert batch.action.shape == (4, 2) and batch.action[0].tolist() == [0.5, -0.5]


def test_epsilon_schedule_and_exploration():
    assert linear_epsilon(0, 1.0, 0.1, 100) == 1.0
    assert linear_epsilon(50, 1.0, 0.1, 100) == pytest.approx(0.55)
    assert linear_epsilon(500, 1.0, 0.1, 100) == pytest.approx(0.1)
    rng = np.random.default_rng(0)
    q = np.array([0.0, 5.0, 1.0])
    assert {explore_discrete(q, rng, epsilon=0.0) for _ in range(50)} == {1}
    assert {explore_discrete(q, rng, epsilon=1.0) for _ in range(200)} == {0, 1, 2}
    counts = np.bincount([explore_discrete(q, rng, temperature=2.0) for _ in range(4000)], minlength=3)
    p = np.exp(q / 2.0) / np.exp(q / 2.0).sum()
    assert counts / 4000 == pytest.approx(p, abs=0.03)


def test_state_normalization_is_identified_per_observation_index():
    rng = np.random.default_rng(0)
    states = np.column_stack([rng.normal(3.0, 2.0, 500), rng.integers(0, 2, 500)]).astype(np.float32)
    config = parse_gym_config(_minimal())
    norm = identify_states(states, config)
    assert norm[0].feature_type == FeatureType.CONTINUOUS and norm[0].mean == pytest.approx(3.0, abs=0.3)
    assert norm[1].feature_type == FeatureType.BINARY


def test_reagent_shaped_config_and_shipped_configs_load():
    config = parse_gym_config(_minimal(env={"Gym": {"env_name": "CartPole-v1"}}, use_gpu=False, minibatch_size=64))
    assert config.env == "CartPole-v1" and config.resolved_device == "cpu" and config.batch_size == 64
    for name in ("cartpole_v0_dqn", "cartpole_v1_dqn", "cartpole_v0_qrdqn", "cartpole_v0_c51", "pendulum_sac",
                 "pendulum_td3"):
        loaded = load_gym_config(f"configs/gym/{name}.yaml")
        assert loaded.passing_score_bar is not None


@pytest.mark.parametrize("bad, message", [
    (_minimal(replay_size=5), "unknown key 'replay_size'"),
    (_minimal(use_gpu=True, device="cpu"), "contradicts"),
    (_minimal(train_after_ts=5), "train_after_ts"),
    ({**_minimal(), "model": {"SAC": {"actor_net_builder": {"FullyConnected": {}}}}}, "GaussianFullyConnected"),
    ({**_minimal(), "model": {"TD3": {"value_net_builder": {"FullyConnected": {}}}}}, "unknown key 'value_net_builder'"),
    ({**_minimal(), "model": {"TD3": {"trainer_param": {"rl": {"maxq_learning": False}}}}}, "maxq_learning"),
])
def test_bad_configs_name_the_problem(bad, message):
    with pytest.raises(BatchRLError, match=message):
        parse_gym_config(bad)
