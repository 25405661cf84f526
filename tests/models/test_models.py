"""Networks (FullyConnected, Dueling) and masked policies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from batchrl.config import FullyConnectedParameters, NetBuilderConfig
from batchrl.config.continuous import ContinuousNetBuilder, GaussianFullyConnectedParameters
from batchrl.models import Dueling, FullyConnected, build_network, builders, masked_argmax, masked_softmax


def test_fully_connected_layers_from_config():
    config = NetBuilderConfig(FullyConnected=FullyConnectedParameters(
        sizes=[8, 6], activations=["relu", "tanh"], dropout_ratio=0.2, use_layer_norm=True))
    net = build_network(config, 5, 3)
    kinds = [type(m) for m in net.layers]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Dropout, nn.Linear, nn.LayerNorm, nn.Tanh, nn.Dropout,
                     nn.Linear]
    assert [m.out_features for m in net.layers if isinstance(m, nn.Linear)] == [8, 6, 3]
    assert net(torch.randn(4, 5)).shape == (4, 3)


@pytest.mark.parametrize("build", [
    lambda block: builders.critic(block, 5, 2).layers,
    lambda block: builders.deterministic_actor(block, 5, 2).layers,
    lambda block: builders.gaussian_actor(ContinuousNetBuilder(GaussianFullyConnected=GaussianFullyConnectedParameters(
        **block.params.model_dump())), 5, 2).trunk,
    lambda block: builders.continuous_mlp(block, 5, 1).layers,
], ids=["critic", "deterministic_actor", "gaussian_actor", "value"])
def test_continuous_networks_take_dropout_and_layer_norm_from_config(build):
    params = FullyConnectedParameters(sizes=[8, 6], activations=["relu", "relu"], dropout_ratio=0.1,
                                      use_layer_norm=True)
    kinds = [type(m) for m in build(ContinuousNetBuilder(FullyConnected=params))]
    assert kinds[:8] == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Dropout, nn.Linear, nn.LayerNorm, nn.ReLU, nn.Dropout]
    plain = [type(m) for m in build(ContinuousNetBuilder(FullyConnected=FullyConnectedParameters(
        sizes=[8, 6], activations=["relu", "relu"])))]
    assert nn.LayerNorm not in plain and nn.Dropout not in plain


@pytest.mark.parametrize("state_dependent", [True, False])
def test_gaussian_actor_log_std_per_state_or_one_parameter(state_dependent):
    params = GaussianFullyConnectedParameters(sizes=[8], activations=["relu"], state_dependent_std=state_dependent)
    actor = builders.gaussian_actor(ContinuousNetBuilder(GaussianFullyConnected=params), 3, 2)
    torch.manual_seed(0)
    x, action = torch.randn(5, 3), torch.rand(5, 2) * 2 - 1
    with torch.no_grad():
        for p in actor.parameters():
            p.add_(torch.randn_like(p))  # away from the zero initialization
        log_std = actor.log_std(actor.trunk(x))
        # -log_prob(a) - log_prob(mean) is the squared z-score over 2: sum_i (a_i - mean_i)^2 / (2 std_i^2)
        gap = actor.clipped_log_prob(x, actor(x), -5.0) - actor.clipped_log_prob(x, action, -5.0)
        expected = ((action - actor(x)).pow(2) / (2 * log_std.clamp(-5.0, 2.0).exp().pow(2))).sum(dim=1)
    assert log_std.shape == (5, 2)
    assert torch.allclose(gap, expected, atol=1e-5)
    same_in_every_state = bool(torch.allclose(log_std, log_std[:1].expand(5, -1)))
    assert same_in_every_state is not state_dependent
    assert sum(p.numel() for p in actor.log_std.parameters()) == (8 * 2 + 2 if state_dependent else 2)
    scripted = torch.jit.script(actor)
    assert torch.allclose(scripted(x), actor(x))


def test_dueling_is_value_plus_centred_advantage():
    torch.manual_seed(0)
    net = build_network(NetBuilderConfig(Dueling=FullyConnectedParameters(sizes=[16], activations=["relu"])), 4, 3)
    assert isinstance(net, Dueling)
    x = torch.randn(5, 4)
    with torch.no_grad():
        q = net(x)
        h = net.trunk(x)
        v, a = net.value(h), net.advantage(h)
    assert torch.allclose(q, v + a - a.mean(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(q.mean(dim=1, keepdim=True), v, atol=1e-6)  # the mean over actions is V(s)


@pytest.mark.parametrize("cls", [FullyConnected, Dueling])
def test_networks_script(cls):
    net = cls(4, 2, [8], ["relu"]).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(3, 4)
    assert torch.allclose(scripted(x), net(x))


def test_masked_policies():
    q = torch.tensor([[1.0, 5.0, 3.0], [1.0, 5.0, 3.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 0]], dtype=torch.bool)  # last row: not recorded = all
    assert masked_argmax(q, mask).tolist() == [1, 2, 0]
    pi = masked_softmax(q, mask, temperature=2.0)
    assert pi[1, 1] == 0
    assert pi[1, 2] / pi[1, 0] == pytest.approx(torch.exp(torch.tensor(1.0)).item())
    assert pi.sum(dim=1).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert pi[2].tolist() == pytest.approx([1 / 3] * 3)
