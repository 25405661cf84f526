"""TorchScript export of parametric-action policies (docs/training.md, "Serving contract").

The exported module embeds the state and the item Preprocessors and takes

    values float32[B, S], presence float32[B, S]                     the state, feature ids ascending
    candidate_values float32[B, K, A], candidate_presence [B, K, A]  each row's candidate items, ids ascending
    mask bool[B, K]                                                  the real candidates (K may be padded)

and returns the scores float32[B, K]: Q(s, a_k) for real candidates, -1e9 for padding (greedy = argmax).
Metadata (``metadata.json``, as for the other models) adds ``action_space: parametric``,
``action_feature_ids`` and ``action_normalization``.
"""

# (no `from __future__ import annotations`: TorchScript reads the annotations of ExportedParametricModel)
import copy
import io
import json
from typing import Any

import torch
from torch import nn

from batchrl import storage
from batchrl.serving.export import METADATA_FILE

#: Score of a padding position (not a real candidate).
PADDING_SCORE = -1e9


class ExportedParametricModel(nn.Module):
    """state and item preprocessors -> Q over the candidates (module docstring)."""

    feature_ids: list[int]
    action_feature_ids: list[int]
    metadata_json: str

    def __init__(self, state_preprocessor: nn.Module, item_preprocessor: nn.Module, network: nn.Module,
                 feature_ids: list[int], action_feature_ids: list[int], metadata_json: str):
        super().__init__()
        self.state_preprocessor = state_preprocessor
        self.item_preprocessor = item_preprocessor
        self.network = network
        self.feature_ids = [int(i) for i in feature_ids]
        self.action_feature_ids = [int(i) for i in action_feature_ids]
        self.metadata_json = metadata_json

    def forward(self, values: torch.Tensor, presence: torch.Tensor, candidate_values: torch.Tensor,
                candidate_presence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        state = self.state_preprocessor(values.float(), presence.float())
        b, k, a = candidate_values.shape[0], candidate_values.shape[1], candidate_values.shape[2]
        items = self.item_preprocessor(candidate_values.reshape(b * k, a).float(),
                                       candidate_presence.reshape(b * k, a).float()).reshape(b, k, -1)
        scores: torch.Tensor = self.network(state, items).float()
        return scores.masked_fill(torch.logical_not(mask.to(torch.bool)), -1e9)  # PADDING_SCORE


def export_parametric_model(uri: str, state_preprocessor: nn.Module, item_preprocessor: nn.Module,
                            network: nn.Module, feature_ids: list[int], action_feature_ids: list[int],
                            normalization: dict[str, Any], action_normalization: dict[str, Any],
                            metadata: dict[str, Any]) -> torch.jit.ScriptModule:
    """Script a CPU, eval-mode copy and write it to ``uri`` with its metadata (one whole-file write)."""
    extra = {"feature_ids": [int(i) for i in feature_ids], "action_names": [str(i) for i in action_feature_ids],
             "action_feature_ids": [int(i) for i in action_feature_ids], "normalization": normalization,
             "action_normalization": action_normalization, **metadata, "action_space": "parametric"}
    module = ExportedParametricModel(copy.deepcopy(state_preprocessor).cpu(), copy.deepcopy(item_preprocessor).cpu(),
                                     copy.deepcopy(network).cpu().float().requires_grad_(False), feature_ids,
                                     action_feature_ids, json.dumps(extra, sort_keys=True))
    scripted = torch.jit.script(module.eval())
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer, _extra_files={METADATA_FILE: json.dumps(extra, sort_keys=True)})
    storage.write_bytes(uri, buffer.getvalue())
    return scripted
