"""The parametric workflow end to end on a tiny config (``batchrl run``): candidate-set CPE, the simulator
rollouts of the exported policy with the ``logging``/``myopic``/``random`` baselines over the same episodes,
and the CPE estimators on hand-made candidate-set inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from batchrl.errors import BatchRLError
from batchrl.evaluation.candidate_rollouts import baseline_chooser, play, simulated_one_step_value
from batchrl.evaluation.cpe import CPEInputs, counterfactual_estimates, target_policy_probs
from batchrl.serving.export import LoadedModel

ENV = "batchrl/Recommendation-v0"


@pytest.mark.slow
def test_parametric_workflow_reports_baselines_and_cpe(tmp_path, cli):
    with open("configs/recommendation_parametric_dqn_offline.yaml") as fh:
        config = yaml.safe_load(fh)
    config.update(num_train_transitions=600, num_epochs=1, num_eval_episodes=3, passing_score_bar=None)
    config["model"]["ParametricDQN"]["net_builder"]["FullyConnected"].update(sizes=[8], activations=["relu"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, err = cli("run", path, "--workdir", tmp_path / "work")
    assert code == 0, err
    metrics = json.loads((tmp_path / "work" / "evaluation" / "metrics.json").read_text())
    gym = metrics["gym"]
    assert gym["episodes"] == 3 and set(gym["baselines"]) == {"logging", "myopic", "random"}
    assert gym["baselines"]["logging"]["policy"] == "heuristic-softmax"
    # the policy CPE evaluates: softmax(Q / rl.temperature)
    rl = config["model"]["ParametricDQN"]["trainer_param"]["rl"]
    assert gym["target_policy"]["temperature"] == pytest.approx(rl["temperature"])
    assert {"DR", "SDR", "WDR", "IPS"} <= set(metrics["cpe"]["estimates"])
    assert "Switch" in metrics["cpe"]["skipped"]
    assert 0.0 < metrics["cpe"]["simulated_one_step_value"] < 1.0  # a mean click probability
    summary = json.loads((tmp_path / "work" / "run_summary.json").read_text())
    assert summary["generate"]["action_kind"] == "parametric" and summary["generate"]["policy"] == "heuristic-softmax"
    assert summary["train"]["algorithm"] == "ParametricDQN"


def test_baselines_play_the_same_episodes():
    """Episode i starts from reset(seed + i) for every policy: the myopic policy's first choice is the same
    deterministic function of the same first observation, so two runs agree; random differs from myopic."""
    myopic = [play(ENV, baseline_chooser("myopic", ENV, 0, "random", 1.0), 8, 5, 0.9) for _ in range(2)]
    assert np.array_equal(myopic[0].returns, myopic[1].returns)
    random = play(ENV, baseline_chooser("random", ENV, 0, "random", 1.0), 8, 5, 0.9)
    assert not np.array_equal(random.lengths, myopic[0].lengths)


def test_candidate_positions_as_actions_recover_a_known_policy_value():
    """One-step rows with padded candidate sets: the target policy always picks position 0, the logging policy
    was uniform over the real candidates; the reward is 1 at position 0 only. IPS is unbiased and DR with an
    exact reward model is exact: both give 1."""
    gen = torch.Generator().manual_seed(0)
    n, k = 400, 4
    sizes = torch.randint(2, k + 1, (n,), generator=gen)
    mask = torch.arange(k) < sizes[:, None]
    action = (torch.rand(n, generator=gen) * sizes).long()
    reward = (action == 0).double()
    q = torch.where(torch.arange(k) == 0, 1.0, 0.0).expand(n, k).clone()
    target = target_policy_probs(q, mask, 0.0)
    assert (target[:, 0] == 1).all() and (target[~mask] == 0).all()
    inputs = CPEInputs(reward=reward, action=action, logged_propensity=1.0 / sizes.double(), target_probs=target,
                       reward_hat=q.double(), q_hat=None, episode=torch.arange(n),
                       not_terminal=torch.zeros(n, dtype=torch.bool))
    estimates = counterfactual_estimates(inputs, 0.9, 0, bootstrap=0)["estimates"]
    assert estimates["DR"]["raw"] == pytest.approx(1.0)
    assert estimates["DM"]["raw"] == pytest.approx(1.0)
    assert estimates["IPS"]["raw"] == pytest.approx(1.0, abs=0.2)


def _ids_only(state_ids: list[int], item_ids: list[int]) -> LoadedModel:
    """simulated_one_step_value reads only the model's feature ids."""
    return LoadedModel(module=None, metadata={"feature_ids": state_ids, "action_feature_ids": item_ids})  # type: ignore[arg-type]


def test_one_step_truth_is_the_click_probability_under_pi():
    """pi on the first candidate: the truth is the mean of sigmoid(3 u.e + 3 a + 2 s - 3) of that item (written
    out here); the uniform policy over two real candidates averages them and ignores the padded third."""
    rng = np.random.default_rng(0)
    n = 50
    u = rng.normal(size=(n, 4))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    state = np.column_stack([u, rng.uniform(0, 1, n)])
    items = np.zeros((n, 3, 6))
    items[:, :2] = rng.uniform(-1, 1, (n, 2, 6))
    click = 1 / (1 + np.exp(-(3 * np.einsum("nd,nkd->nk", u, items[:, :, :4]) + 3 * items[:, :, 4]
                              + 2 * state[:, 4:] - 3)))
    model = _ids_only([0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5])
    first = np.zeros((n, 3))
    first[:, 0] = 1.0
    assert simulated_one_step_value(ENV, model, state, items, first) == pytest.approx(click[:, 0].mean())
    uniform = np.zeros((n, 3))
    uniform[:, :2] = 0.5
    assert simulated_one_step_value(ENV, model, state, items, uniform) == pytest.approx(click[:, :2].mean())


def test_one_step_truth_places_features_by_id_and_rejects_foreign_ids():
    """A model reading only the satisfaction (state id 4) and the appeal (item id 4): the other features are 0,
    so the click probability is sigmoid(3 a + 2 s - 3); an item id past the simulator's 6 columns is an error."""
    state, items, pi = np.array([[0.5]]), np.array([[[0.2]]]), np.array([[1.0]])
    value = simulated_one_step_value(ENV, _ids_only([4], [4]), state, items, pi)
    assert value == pytest.approx(1 / (1 + np.exp(-(3 * 0.2 + 2 * 0.5 - 3))))
    with pytest.raises(BatchRLError, match="item ids"):
        simulated_one_step_value(ENV, _ids_only([4], [6]), state, items, pi)
