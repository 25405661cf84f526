"""Components mirror their stages' options; the helpers they share behave."""

from __future__ import annotations

import copy
import importlib
import json
import math

import pytest
import yaml
from pydantic_core import PydanticUndefined

from batchrl.errors import BatchRLError
from batchrl.kfp import runtime
from batchrl.kfp.components import STEPS, build_component

#: component -> (module, options class, option fields that are locations, i.e. artifacts here)
MIRRORS = {
    "generate": ("batchrl.data.gym_logging", "GenerateOptions", set()),
    "timeline": ("batchrl.data.timeline", "TimelineOptions", {"input_table_name", "output_table_name"}),
    "normalize": ("batchrl.data.normalize", "NormalizeOptions", set()),
    "prepare": ("batchrl.data.prepare", "PrepareOptions", set()),
    "evaluate": ("batchrl.evaluation.evaluate", "EvaluateOptions", set()),
}


@pytest.mark.parametrize("name", sorted(MIRRORS))
def test_component_parameters_mirror_the_stage_options(name):
    module, cls, locations = MIRRORS[name]
    options = getattr(pytest.importorskip(module) if name == "evaluate" else importlib.import_module(module), cls)
    inputs = build_component(name).component_spec.inputs
    missing = set(options.model_fields) - locations - set(inputs)
    assert not missing, f"the {name} component lacks the option(s) {sorted(missing)}"
    for field, info in options.model_fields.items():
        if field in locations or info.default in (None, PydanticUndefined):
            continue
        default = inputs[field].default
        if default is None:
            continue
        assert default == info.default, f"{name}.{field}: component default {default!r} != stage default {info.default!r}"


def test_every_component_runs_in_a_project_image_without_installs():
    for name, (_, image) in STEPS.items():
        spec = build_component(name).component_spec
        container = spec.implementation.container
        assert container.image.startswith("ghcr.io/batchrl/batchrl-"), name
        assert "pip install" not in " ".join(container.command), name
        assert image in ("runtime", "trainer")


def test_options_errors_name_the_parameter():
    from batchrl.data.gym_logging import GenerateOptions

    options = runtime.options(GenerateOptions, "generate", transitions=10, episodes=None, seed=3)
    assert options.transitions == 10 and options.seed == 3
    with pytest.raises(BatchRLError, match="epsilon") as err:
        runtime.options(GenerateOptions, "generate", transitions=10, epsilon=2.0)
    assert "generate component" in str(err.value)


def test_workflow_config_knobs_override_the_config():
    from batchrl.kfp.pipeline import default_workflow_config

    base = default_workflow_config()
    config = runtime.workflow_config(base, "test", num_epochs=3, algorithm="DiscreteCQL", seed=7,
                                     actions=["left", "right"])
    assert config.num_epochs == 3 and config.seed == 7
    assert config.model.name == "DiscreteCQL"
    assert config.model.value.trainer_param.actions == ["left", "right"]
    assert config.model.value.trainer_param.rl.gamma == 0.99  # the rest of the config is kept
    assert base["num_epochs"] == 40 and "DiscreteDQN" in base["model"]  # the input is not modified
    unchanged = runtime.workflow_config(base, "test")
    assert unchanged.num_epochs == 40 and unchanged.model.name == "DiscreteDQN"
    with pytest.raises(BatchRLError, match="SomethingElse"):
        runtime.workflow_config(base, "test", algorithm="SomethingElse")
    # DQN's own option (its imitation head) does not travel to CQL; the options both have do
    assert base["model"]["DiscreteDQN"]["trainer_param"]["imitation_weight"] == 1.0
    assert "imitation_weight" not in config.model.value.trainer_param.model_fields_set
    assert config.model.value.trainer_param.optimizer.Adam.weight_decay == 0.01  # type: ignore[union-attr]
    # a misspelt option is still reported, under the new algorithm's name
    typo = copy.deepcopy(base)
    typo["model"]["DiscreteDQN"]["trainer_param"]["imitation_wieght"] = 1.0
    with pytest.raises(BatchRLError, match="imitation_wieght"):
        runtime.workflow_config(typo, "test", algorithm="DiscreteCQL")
    # the pipeline's discrete `actions` default does not reach a continuous-action model
    sac = runtime.workflow_config({"model": {"SAC": {}}}, "test", actions=["0", "1"])
    assert sac.model.name == "SAC" and "actions" not in sac.model.value.trainer_param.model_fields_set
    # `algorithm: IQL` renames a continuous block: IQL for continuous actions, the pipeline's actions not applied
    iql = runtime.workflow_config({"model": {"TD3": {"trainer_param": {"rl": {"gamma": 0.9}}}}}, "test",
                                  algorithm="IQL", actions=["0", "1"])
    assert iql.model.name == "IQL" and iql.model.continuous and iql.model.value.trainer_param.rl.gamma == 0.9
    # nor a parametric one (its actions are candidate items): the recommendation config runs with the defaults
    with open("configs/recommendation_parametric_dqn_offline.yaml") as fh:
        parametric = runtime.workflow_config(yaml.safe_load(fh), "test", actions=["0", "1"])
    assert parametric.model.name == "ParametricDQN" and parametric.model.parametric


def test_scalar_metrics_flatten_finite_numbers_only():
    flat = runtime.scalar_metrics({"cpe": {"DR": {"normalized": 1.2, "ci": None}}, "loss": {"td": 0.5},
                                   "nan": math.nan, "flag": True, "name": "x", "n": 3})
    assert flat == {"cpe_DR_normalized": 1.2, "loss_td": 0.5, "n": 3.0}


def test_record_keeps_json_metadata():
    from batchrl.data.normalize import NormalizeResult

    class FakeArtifact:
        metadata: dict = {}

    artifact = FakeArtifact()
    artifact.metadata = {}
    result = NormalizeResult(output="n.json", column="state_features", features=2, feature_ids=[1, 3],
                             types={"CONTINUOUS": 2}, not_identified={7: "few values"}, num_samples=10, seed=None)
    runtime.record(artifact, result)
    # METADATA's fields with a value (seed None is left out), as plain JSON (int keys become strings)
    assert artifact.metadata == {"column": "state_features", "features": 2, "feature_ids": [1, 3],
                                 "types": {"CONTINUOUS": 2}, "not_identified": {"7": "few values"},
                                 "num_samples": 10}
    json.dumps(artifact.metadata)


def _evaluation(**fields):
    """An evaluate stage result with ``fields`` (the rest empty)."""
    from batchrl.evaluation.evaluate import EvaluateResult

    empty = {"output": "e", "metrics": "e/metrics.json", "report_md": "e/report.md", "report_html": "e/report.html",
             "gym_score": None, "gym": None, "cpe": {}, "cpe_recommended": None, "passing_score_bar": None,
             "passed": None, "notes": [], "seconds": 0.0}
    return EvaluateResult(**{**empty, **fields})


@pytest.mark.parametrize(("gate", "summary", "bar", "expected"), [
    ("score", {"gym": {"mean_return": 150.0}}, 120.0, (150.0, True)),
    ("score", {"gym": {"mean_return": 100.0}}, 120.0, (100.0, False)),
    ("score", {"gym": {"mean_return": 150.0}}, None, (150.0, False)),
    ("cpe", {"cpe": {"WDR": {"normalized_ci_low": 1.1, "diagnostics": {"flags": []}}},
             "cpe_recommended": {"estimator": "WDR"}}, 1.0, (1.1, True)),
    ("cpe", {"cpe": {"WDR": {"normalized_ci_low": 0.9, "diagnostics": {"flags": []}}},
             "cpe_recommended": {"estimator": "WDR"}, "gym": {"mean_return": 500.0}}, 1.0, (0.9, False)),
    # the old gate's number (one-step DR) is there, but no estimator is trusted: nothing passes
    ("cpe", {"cpe": {"DR": {"normalized_ci_low": 1.1}},
             "cpe_recommended": {"estimator": None, "reason": "none trusted"}}, 1.0, (math.nan, False)),
    # a flagged estimate never passes, whatever its number
    ("cpe", {"cpe": {"WDR": {"normalized_ci_low": 1.5, "diagnostics": {"flags": ["few_effective_samples"]},
                             "warnings": ["about 3 effective episodes"]}},
             "cpe_recommended": {"estimator": "WDR"}}, 1.0, (math.nan, False)),
])
def test_publish_gate(gate, summary, bar, expected):
    verdict = runtime.gate(_evaluation(**summary), gate, bar)
    assert verdict.gate == gate and verdict.passed is expected[1]
    assert verdict.score == expected[0] or (math.isnan(verdict.score) and math.isnan(expected[0]))


def test_gate_none_never_publishes():
    verdict = runtime.gate(_evaluation(gym={"mean_return": 500.0}), "none", 0.0)
    assert math.isnan(verdict.score) and verdict.passed is False


def test_publish_gate_without_its_number_does_not_pass():
    verdict = runtime.gate(_evaluation(), "score", 0.0)
    assert math.isnan(verdict.score) and not verdict.passed
    with pytest.raises(BatchRLError, match="unknown publish gate"):
        runtime.gate(_evaluation(), "best", 0.0)


def test_publish_copies_serving_files_and_commits(tmp_path):
    from batchrl import storage
    from batchrl.kfp.publish import RECORD_FILE, publish

    model, evaluation = tmp_path / "model", tmp_path / "evaluation"
    (model / "checkpoints").mkdir(parents=True)
    evaluation.mkdir()
    (model / "model.torchscript").write_bytes(b"scripted")
    (model / "training_summary.json").write_text("{}")
    (model / "checkpoints" / "epoch-0001.pt").write_bytes(b"state")
    (evaluation / "metrics.json").write_text('{"score": 1}')
    summary = publish(str(model), str(evaluation), str(tmp_path / "published"), score=130.0, passed=True)
    assert summary.files == ["model.torchscript", "training_summary.json", "metrics.json"]
    assert storage.is_committed(str(tmp_path / "published"))
    assert (tmp_path / "published" / "model.torchscript").read_bytes() == b"scripted"
    assert not (tmp_path / "published" / "checkpoints").exists()
    assert json.loads((tmp_path / "published" / RECORD_FILE).read_text())["score"] == 130.0


def test_publish_refuses_a_folder_without_a_model(tmp_path):
    from batchrl.kfp.publish import publish

    with pytest.raises(BatchRLError, match="no model.torchscript"):
        publish(str(tmp_path), str(tmp_path), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_spark_mode_and_object_uris():
    class FakeArtifact:
        def __init__(self, uri: str):
            self.uri = uri

    assert runtime.object_uri(FakeArtifact("minio://mlpipeline/v2/artifacts/x/y")) == "s3://mlpipeline/v2/artifacts/x/y"
    assert runtime.object_uri(FakeArtifact("s3://bucket/k")) == "s3://bucket/k"
    assert runtime.check_spark_mode("kubernetes", "timeline") is True
    assert runtime.check_spark_mode("local", "timeline") is False
    with pytest.raises(BatchRLError, match="unknown spark_mode 'yarn'"):
        runtime.check_spark_mode("yarn", "timeline")


def test_normalization_result_of_a_file(tmp_path):
    from batchrl.data.normalize import NormalizeResult
    from batchrl.preprocessing.normalization import FeatureType, NormalizationParameters, write_normalization

    uri = str(tmp_path / "norm.json")
    write_normalization(uri, {0: NormalizationParameters(feature_type=FeatureType.BINARY),
                              3: NormalizationParameters(feature_type=FeatureType.CONTINUOUS, mean=0.0, stddev=1.0)})
    result = runtime.normalization_result(uri, NormalizeResult, column="state_features", num_samples=5, seed=1)
    assert (result.features, result.feature_ids, result.types) == (2, [0, 3], {"BINARY": 1, "CONTINUOUS": 1})
    # what a SparkApplication run cannot report back is left out of the printed summary, not written as null
    assert result.to_dict() == {"output": uri, "column": "state_features", "features": 2, "feature_ids": [0, 3],
                                "types": {"BINARY": 1, "CONTINUOUS": 1}, "num_samples": 5, "seed": 1}
