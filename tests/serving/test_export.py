"""TorchScript export (spec section 8): eager and scripted models agree; metadata travels with the module."""

from __future__ import annotations

import io
import json

import pytest
import torch

from batchrl import storage
from batchrl.config import FullyConnectedParameters, NetBuilderConfig
from batchrl.errors import BatchRLError
from batchrl.models import build_network
from batchrl.preprocessing.normalization import NormalizationParameters, to_json_dict
from batchrl.preprocessing.preprocessor import Preprocessor
from batchrl.serving.export import ExportedModel, export_model, load_policy

FEATURES = [3, 7, 11]
NORMALIZATION = {
    3: NormalizationParameters(feature_type="CONTINUOUS", mean=1.0, stddev=2.0),
    7: NormalizationParameters(feature_type="ENUM", possible_values=(0.0, 1.0, 5.0)),
    11: NormalizationParameters(feature_type="PROBABILITY"),
}


@pytest.mark.parametrize("builder", ["FullyConnected", "Dueling"])
def test_eager_and_scripted_give_equal_q_values(tmp_path, builder):
    torch.manual_seed(0)
    pre = Preprocessor(NORMALIZATION, FEATURES)
    params = FullyConnectedParameters(sizes=[16, 8], activations=["relu", "tanh"], dropout_ratio=0.3,
                                      use_layer_norm=True)
    net = build_network(NetBuilderConfig(**{builder: params}), pre.output_dim, 2)
    uri = str(tmp_path / "model.torchscript")
    export_model(uri, pre, net, ["left", "right"], FEATURES, to_json_dict(NORMALIZATION), {"gamma": 0.9})
    values = torch.tensor([[0.5, 5.0, 0.3], [3.0, 1.0, 0.9], [-2.0, 4.0, 0.1]])
    presence = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    net.eval()
    with torch.no_grad():
        eager = ExportedModel(pre, net, ["left", "right"], FEATURES, "{}", "{}")(values, presence)[1]
    loaded = load_policy(uri)
    names, scripted = loaded.module(values, presence)
    assert names == ["left", "right"]
    assert torch.allclose(eager, scripted, atol=1e-6)
    # the exported module is in eval mode: dropout off, repeated calls agree
    assert torch.equal(scripted, loaded.module(values, presence)[1])
    assert loaded.greedy_actions(values.numpy()).shape == (3,)


def test_metadata_stored_with_the_module(tmp_path):
    pre = Preprocessor(NORMALIZATION, FEATURES)
    net = build_network(NetBuilderConfig(FullyConnected=FullyConnectedParameters(sizes=[4], activations=["relu"])),
                        pre.output_dim, 2)
    uri = str(tmp_path / "m.torchscript")
    norm = to_json_dict(NORMALIZATION)
    export_model(uri, pre, net, ["0", "1"], FEATURES, norm, {"gamma": 0.99, "algorithm": "DiscreteDQN"})
    extra = {"metadata.json": ""}
    module = torch.jit.load(io.BytesIO(storage.read_bytes(uri)), _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    assert meta["feature_ids"] == FEATURES and meta["action_names"] == ["0", "1"]
    assert meta["normalization"] == norm and meta["gamma"] == 0.99
    assert module.feature_ids == FEATURES and module.action_names == ["0", "1"]
    assert json.loads(module.normalization_json) == norm
    assert json.loads(module.metadata_json)["algorithm"] == "DiscreteDQN"
    loaded = load_policy(uri)
    assert loaded.feature_ids == FEATURES and loaded.action_names == ["0", "1"]


def test_greedy_respects_possible_actions(tmp_path):
    pre = Preprocessor(NORMALIZATION, FEATURES)
    net = build_network(NetBuilderConfig(FullyConnected=FullyConnectedParameters(sizes=[4], activations=["relu"])),
                        pre.output_dim, 2)
    uri = str(tmp_path / "m.torchscript")
    export_model(uri, pre, net, ["0", "1"], FEATURES, {}, {})
    policy = load_policy(uri)
    values = torch.rand(6, 3)
    assert policy.greedy_actions(values, possible=[[1, 0]] * 6).tolist() == [0] * 6
    assert policy.greedy_actions(values, possible=[[0, 1]] * 6).tolist() == [1] * 6


def test_load_policy_rejects_non_torchscript(tmp_path):
    bad = tmp_path / "x.torchscript"
    bad.write_bytes(b"not a model")
    with pytest.raises(BatchRLError, match="not a TorchScript model"):
        load_policy(str(bad))
