"""Typed stage results (issue 18): every stage function returns one; the KFP metadata and ``batchrl run``'s line
name fields that exist; the CLI prints a result's fields as the JSON it printed before the types; and the
callers take nothing else."""

from __future__ import annotations

import dataclasses
import json
import typing
from types import SimpleNamespace

import pytest

from batchrl.data.gym_logging import GenerateOptions, GenerateResult, generate
from batchrl.data.normalize import NormalizeActionsResult, NormalizeResult, normalize, normalize_actions
from batchrl.data.prepare import PreparedTable, PrepareResult, SplitStats, prepare
from batchrl.data.timeline import TimelineResult, timeline
from batchrl.data.validation import ValidateResult, validate_input
from batchrl.evaluation.evaluate import EvaluateResult, evaluate
from batchrl.kfp import runtime
from batchrl.kfp.publish import PublishResult, publish
from batchrl.results import StageResult, not_printed, when_set
from batchrl.training.train import TrainResult, train

#: Each stage function and the result type it is declared to return.
STAGE_FUNCTIONS = {
    generate: GenerateResult, validate_input: ValidateResult, timeline: TimelineResult, normalize: NormalizeResult,
    normalize_actions: NormalizeActionsResult, prepare: PrepareResult, train: TrainResult,
    evaluate: EvaluateResult, publish: PublishResult,
}


def _all_results() -> list[type[StageResult]]:
    found, todo = [], [StageResult]
    while todo:
        cls = todo.pop()
        found += [sub for sub in cls.__subclasses__() if sub.__module__.startswith("batchrl.")]
        todo += cls.__subclasses__()
    return sorted(found, key=lambda cls: cls.__name__)


def test_every_result_type_is_found():
    assert {*STAGE_FUNCTIONS.values(), PreparedTable, runtime.GateResult} <= set(_all_results())


@pytest.mark.parametrize("function", list(STAGE_FUNCTIONS), ids=lambda fn: fn.__name__)
def test_every_stage_function_returns_its_typed_result(function):
    assert typing.get_type_hints(function)["return"] is STAGE_FUNCTIONS[function]


@pytest.mark.parametrize("result_type", _all_results(), ids=lambda cls: cls.__name__)
def test_metadata_and_headline_name_fields(result_type):
    assert dataclasses.is_dataclass(result_type) and result_type.__dataclass_params__.frozen
    assert result_type.METADATA or result_type.HEADLINE, "a result that neither KFP nor batchrl run shows"
    assert result_type.unknown_names() == []


def test_a_renamed_field_is_caught():
    @dataclasses.dataclass(frozen=True)
    class Renamed(StageResult):
        row_count: int
        METADATA = ("rows",)

    assert Renamed.unknown_names() == ["rows"]
    with pytest.raises(AttributeError):
        Renamed(row_count=1).metadata()


def test_to_dict_leaves_out_unset_and_unprinted_fields():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Sample(StageResult):
        rows: int
        note: str | None  # a plain None is printed as null
        engine: str | None = when_set()
        seed: int = not_printed()
        METADATA = ("rows", "seed")

    assert Sample(rows=1, note=None, seed=3).to_dict() == {"rows": 1, "note": None}
    assert Sample(rows=1, note="n", engine="duckdb", seed=3).to_dict() == {"rows": 1, "note": "n", "engine": "duckdb"}
    assert Sample(rows=1, note=None, seed=3).metadata() == {"rows": 1, "seed": 3}


def test_nested_stats_serialize_as_the_old_dicts():
    stats = SplitStats(num_rows=9, episodes=2, reward_mean=0.5, reward_std=None, terminal_rows=1)
    result = PrepareResult(
        output_train="t", output_eval="e", input_rows=10, dropped_truncated=1, null_action_probability=0,
        unknown_actions=0, rows_without_features=0, train=stats, eval=dataclasses.replace(stats, num_rows=0),
        feature_ids=[0], action_kind="discrete", action_names=["0", "1"], metric_names=[], gamma=None,
        multi_steps=None, table_sample=90.0, eval_table_sample=10.0, engine="duckdb (x)", elapsed_s=0.1)
    data = result.to_dict()
    assert data["train"] == {"num_rows": 9, "episodes": 2, "reward_mean": 0.5, "reward_std": None, "terminal_rows": 1}
    assert data["eval"]["num_rows"] == 0 and "train_rows" not in data  # properties are not serialized
    assert result.headline() == {"train_rows": 9, "eval_rows": 0, "dropped_truncated": 1, "engine": "duckdb (x)"}
    assert result.table("train").metadata() == {"num_rows": 9, "episodes": 2, "reward_mean": 0.5, "terminal_rows": 1,
                                                "feature_ids": [0], "action_kind": "discrete",
                                                "action_names": ["0", "1"], "metric_names": []}
    # what the KFP step reads back after a SparkApplication run: the committed metadata of a table
    committed = {"stage": "prepare", "table": "train", **result.table("train").to_dict(), "split_range": [0, 90]}
    assert PreparedTable.from_dict(committed) == result.table("train")


def test_a_summary_missing_a_field_is_a_clear_error():
    """A committed output whose metadata lacks a result field (written by another version) names the fields."""
    from batchrl.errors import BatchRLError

    with pytest.raises(BatchRLError, match="lacks input, output, input_rows") as caught:
        TimelineResult.from_dict({"output_rows": 1, "stage": "timeline"}, where="s3://b/timeline")
    assert caught.value.where == "s3://b/timeline"


@pytest.mark.parametrize("summary", [{"rows": 1}, None, "rows=1"])
def test_record_summary_and_the_run_line_take_typed_results_only(summary, capsys):
    from batchrl.commands._common import print_summary
    from batchrl.commands.run import _artifact_line

    artifact = SimpleNamespace(metadata={})
    with pytest.raises(TypeError, match="typed stage result"):
        runtime.record(artifact, summary)
    with pytest.raises(TypeError, match="typed stage result"):
        print_summary(summary)
    with pytest.raises(TypeError, match="typed stage result"):
        _artifact_line("generate", summary, 1.0)
    assert artifact.metadata == {} and capsys.readouterr().out == ""


def test_generate_result_feeds_metadata_cli_json_and_the_run_line(tmp_path, cli, capsys):
    result = generate(str(tmp_path / "logged"), GenerateOptions(transitions=40, seed=0, num_envs=2))
    assert isinstance(result, GenerateResult) and result.rows == 40
    artifact = SimpleNamespace(metadata={})
    runtime.record(artifact, result)
    assert artifact.metadata["rows"] == 40 and artifact.metadata["action_names"] == ["0", "1"]
    assert set(artifact.metadata) == set(GenerateResult.METADATA)

    code, out, err = cli("generate", "--env", "CartPole-v0", "--transitions", "40", "--seed", "0",
                         "--output", tmp_path / "cli")
    assert code == 0, err
    printed = json.loads(out)
    assert set(printed) == {f.name for f in dataclasses.fields(GenerateResult)}
    assert printed["rows"] == 40 and printed["output"] == str(tmp_path / "cli")

    from batchrl.commands.run import _artifact_line

    _artifact_line("generate", result, 1.0)
    line = capsys.readouterr().out
    assert "rows=40" in line and f"episodes={result.episodes}" in line and "transitions_per_s=" in line


def test_data_stage_results_print_and_commit_the_old_keys(tmp_path, cli, capsys):
    """validate, timeline, normalize and normalize_actions on a small CartPole log: the CLI JSON and the
    committed ``_SUCCESS`` metadata keep the dict results' keys; the run line shows the headline."""
    from batchrl import storage
    from batchrl.commands.run import _artifact_line
    from batchrl.data.normalize import NormalizeOptions
    from batchrl.data.timeline import make_options

    logged, out = str(tmp_path / "logged"), str(tmp_path / "timeline")
    generate(logged, GenerateOptions(transitions=300, seed=0, num_envs=2))
    code, printed, err = cli("validate", "--input", logged)
    assert code == 0, err
    assert set(json.loads(printed)) == {"input", "valid", "rows", "episodes", "min_ds", "max_ds", "action_kind",
                                        "engine"}
    checked = validate_input(logged)
    _artifact_line("validate", checked, 0.5)
    assert capsys.readouterr().out.rstrip().endswith(f"rows=300, episodes={checked.episodes}, engine=duckdb")

    result = timeline(logged, out, make_options({"startDs": checked.min_ds, "endDs": checked.max_ds,
                                                 "addTerminalStateRow": True}, where="test"))
    keys = {"input", "output", "input_rows", "input_episodes", "duplicates_dropped", "output_rows", "action_kind",
            "steps", "add_terminal_state_row", "outlier_filter", "outlier_episodes_dropped", "columns", "engine",
            "elapsed_s"}
    assert set(result.to_dict()) == keys
    committed = storage.read_metadata(out)
    assert set(committed) == keys | {"stage", "options", "schema"}
    assert TimelineResult.from_dict(committed) == result  # what the KFP step reads after a SparkApplication run

    norm = normalize(out, str(tmp_path / "norm.json"), NormalizeOptions(num_samples=200))
    assert set(norm.to_dict()) == {"output", "column", "features", "feature_ids", "types", "samples_per_feature",
                                   "not_identified", "num_samples", "seed", "engine"}
    actions = normalize_actions(out, str(tmp_path / "actions.json"), NormalizeOptions())
    assert actions.to_dict() == {"output": str(tmp_path / "actions.json"), "column": "action",
                                 "action_kind": "discrete", "features": 0, "feature_ids": []}
    artifact = SimpleNamespace(metadata={})
    runtime.record(artifact, actions)
    assert artifact.metadata == {"column": "action", "action_kind": "discrete", "features": 0, "feature_ids": []}
    _artifact_line("normalize_actions", actions, 0.0)
    assert capsys.readouterr().out.rstrip().endswith("normalize_actions features=0")
