"""Typed stage results (issue 18): the KFP metadata and ``batchrl run``'s line name fields that exist, and
the CLI prints a result's fields as the JSON it printed before the types."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from batchrl.data.gym_logging import GenerateOptions, GenerateResult, generate
from batchrl.kfp import runtime
from batchrl.results import StageResult


def _all_results() -> list[type[StageResult]]:
    found, todo = [], [StageResult]
    while todo:
        cls = todo.pop()
        found += cls.__subclasses__()
        todo += cls.__subclasses__()
    return found


@pytest.mark.parametrize("result_type", _all_results(), ids=lambda cls: cls.__name__)
def test_metadata_and_headline_name_fields(result_type):
    assert result_type.METADATA, "a result that records nothing in KFP"
    assert result_type.unknown_names() == []


def test_a_renamed_field_is_caught():
    @dataclasses.dataclass(frozen=True)
    class Renamed(StageResult):
        row_count: int
        METADATA = ("rows",)

    assert Renamed.unknown_names() == ["rows"]
    with pytest.raises(AttributeError):
        Renamed(row_count=1).metadata()


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
