"""TorchScript export of trained models and loading them back (spec section 8).

An exported module embeds the Preprocessor and takes ``(values: float32[B, F], presence: float32[B, F])``
with features in ascending feature-id order; it returns ``(action_names: List[str], out: float32[B, A])``
(Q-values for ``model.torchscript``; r_hat or Q_hat for the CPE models). Feature ids, action names,
the normalization JSON and training facts are stored with it twice: as TorchScript attributes
(``feature_ids``, ``action_names``, ``normalization_json``, ``metadata_json``) and as the extra file
``metadata.json``, readable without loading the module.
"""

# (no `from __future__ import annotations`: TorchScript reads the annotations of ExportedModel)
import copy
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from batchrl import storage
from batchrl.errors import BatchRLError
from batchrl.models.policy import masked_argmax

METADATA_FILE = "metadata.json"


class ExportedModel(nn.Module):
    """preprocessor -> network, returning the action names with the network's [B, A] output."""

    action_names: list[str]
    feature_ids: list[int]
    normalization_json: str
    metadata_json: str

    def __init__(self, preprocessor: nn.Module, network: nn.Module, action_names: list[str],
                 feature_ids: list[int], normalization_json: str, metadata_json: str):
        super().__init__()
        self.preprocessor = preprocessor
        self.network = network
        self.action_names = list(action_names)
        self.feature_ids = [int(i) for i in feature_ids]
        self.normalization_json = normalization_json
        self.metadata_json = metadata_json

    def forward(self, values: torch.Tensor, presence: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        x = self.preprocessor(values.float(), presence.float())
        return self.action_names, self.network(x).float()


def script_model(preprocessor: nn.Module, network: nn.Module, action_names: list[str], feature_ids: list[int],
                 normalization: dict[str, Any], metadata: dict[str, Any]) -> torch.jit.ScriptModule:
    """A CPU, eval-mode TorchScript copy of ``preprocessor`` + ``network``."""
    module = ExportedModel(copy.deepcopy(preprocessor).cpu(), copy.deepcopy(network).cpu().float().requires_grad_(False), action_names,
                           feature_ids, json.dumps(normalization, sort_keys=True), json.dumps(metadata, sort_keys=True))
    return torch.jit.script(module.eval())


def export_model(uri: str, preprocessor: nn.Module, network: nn.Module, action_names: list[str],
                 feature_ids: list[int], normalization: dict[str, Any], metadata: dict[str, Any]) -> torch.jit.ScriptModule:
    """Script and write the model to ``uri`` (one whole-file write; local or s3://)."""
    scripted = script_model(preprocessor, network, action_names, feature_ids, normalization, metadata)
    extra = {"feature_ids": [int(i) for i in feature_ids], "action_names": list(action_names),
             "normalization": normalization, **metadata}
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer, _extra_files={METADATA_FILE: json.dumps(extra, sort_keys=True)})
    storage.write_bytes(uri, buffer.getvalue())
    return scripted


@dataclass
class LoadedModel:
    """An exported model and its metadata, with numpy helpers for rollouts."""

    module: torch.jit.ScriptModule
    metadata: dict[str, Any]

    @property
    def action_names(self) -> list[str]:
        return list(self.metadata["action_names"])

    @property
    def feature_ids(self) -> list[int]:
        return [int(i) for i in self.metadata["feature_ids"]]

    @property
    def continuous(self) -> bool:
        """Whether the model outputs continuous actions (in the environment's units) instead of scores."""
        return self.metadata.get("action_space") == "continuous"

    @property
    def parametric(self) -> bool:
        """Whether the model scores candidate items (:mod:`batchrl.serving.parametric`)."""
        return self.metadata.get("action_space") == "parametric"

    def candidate_scores(self, values: np.ndarray, candidates: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        """A parametric model's scores [B, K] for states ``values`` [B, S] and candidate sets ``candidates``
        [B, K, A] with ``mask`` [B, K] (every given value present)."""
        v = torch.as_tensor(np.asarray(values, dtype=np.float32))
        c = torch.as_tensor(np.asarray(candidates, dtype=np.float32))
        with torch.no_grad():
            out: torch.Tensor = self.module(v, torch.ones_like(v), c, torch.ones_like(c),
                                            torch.as_tensor(np.asarray(mask, dtype=bool)))
        return out

    def outputs(self, values: np.ndarray | torch.Tensor, presence: np.ndarray | torch.Tensor | None = None
                ) -> torch.Tensor:
        """The module's [B, A] output for dense ``values`` [B, F] (presence: all present by default)."""
        v = torch.as_tensor(np.asarray(values, dtype=np.float32) if not torch.is_tensor(values) else values,
                            dtype=torch.float32)
        p = torch.ones_like(v) if presence is None else torch.as_tensor(presence, dtype=torch.float32)
        with torch.no_grad():
            result: tuple[torch.Tensor, torch.Tensor] = self.module(v, p)
        _, out = result
        return out

    def greedy_actions(self, values: np.ndarray | torch.Tensor, possible: np.ndarray | torch.Tensor | None = None
                       ) -> np.ndarray:
        """argmax over possible actions (index into ``action_names``) per row."""
        q = self.outputs(values)
        mask = torch.ones_like(q, dtype=torch.bool) if possible is None else torch.as_tensor(possible).bool()
        return masked_argmax(q, mask).numpy()


def load_policy(uri: str) -> LoadedModel:
    """Load an exported model (``model.torchscript`` or a CPE model) from a path or URI."""
    data = storage.read_bytes(uri)
    extra = {METADATA_FILE: ""}
    try:
        module = torch.jit.load(  # type: ignore[no-untyped-call]  # torch.jit.load is unannotated
            io.BytesIO(data), map_location="cpu", _extra_files=extra)
    except RuntimeError as exc:
        raise BatchRLError(f"not a TorchScript model: {str(exc).splitlines()[0]}", where=uri,
                           fix="pass a model.torchscript written by `batchrl train`") from None
    try:
        metadata = json.loads(extra[METADATA_FILE]) if extra[METADATA_FILE] else {}
    except json.JSONDecodeError:
        metadata = {}
    if "action_names" not in metadata:
        metadata.update(action_names=list(module.action_names), feature_ids=list(module.feature_ids))
    return LoadedModel(module.eval(), metadata)
