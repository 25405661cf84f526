"""The timeline stage end to end: CLI, config file, bad input, dedup, CartPole counts, spark_job; each test
taking ``engine`` runs on DuckDB and Spark, and the engines' outputs are compared row for row; s3:// and a
memory limit far below the input on the default engine."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from batchrl import storage
from batchrl.data.gym_logging import GenerateOptions, generate
from batchrl.spark_job import main as spark_job_main
from tests.support.timeline import DS, ex1_table


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory) -> tuple[str, int, int]:
    """30000 random CartPole-v0 transitions: (uri, rows, episodes)."""
    uri = str(tmp_path_factory.mktemp("cartpole") / "logged")
    summary = generate(uri, GenerateOptions(transitions=30000, seed=42))
    return uri, summary.rows, summary.episodes


@pytest.mark.parametrize("terminal", [False, True])
def test_cartpole_row_counts(tmp_path, cli, cartpole, terminal, engine):
    uri, rows, episodes = cartpole
    out = str(tmp_path / "timeline")
    flag = "--add-terminal-state-row" if terminal else "--no-add-terminal-state-row"
    code, stdout, err = cli("timeline", "--input", uri, "--output", out, "--start-ds", "2019-01-01",
                            "--end-ds", "2019-01-01", flag, "--spark-master", "local[2]", "--engine", engine.name)
    assert code == 0, err
    summary = json.loads(stdout)
    assert rows == 30000 and summary["input_rows"] == rows and summary["input_episodes"] == episodes
    expected = rows if terminal else rows - episodes
    assert summary["output_rows"] == expected
    table = storage.read_table(out)
    assert table.num_rows == expected
    assert table.column_names[-2:] == ["ds", "end_reason"]
    meta = storage.read_metadata(out)
    assert meta["action_kind"] == "discrete" and meta["options"]["addTerminalStateRow"] is terminal
    if terminal:  # each episode's last row is kept with its end_reason and empty next values
        last = table.filter(pa.compute.is_valid(table.column("end_reason")))
        assert last.num_rows == episodes
        assert set(last.column("next_action").to_pylist()) == {""}


def test_config_file_and_flag_precedence(tmp_path, cli, engine):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    storage.write_table(ex1_table(), src)
    config = tmp_path / "timeline.json"
    config.write_text(json.dumps({"startDs": DS, "endDs": DS, "addTerminalStateRow": False,
                                  "inputTableName": src, "outputTableName": out, "rewardColumns": ["reward"]}))
    code, stdout, err = cli("timeline", "--config", config, "--add-terminal-state-row", "--steps", "2",
                            "--spark-master", "local[2]", "--engine", engine.name)
    assert code == 0, err
    table = storage.read_table(out)
    assert table.num_rows == 2  # the flag replaced the config's addTerminalStateRow
    assert table.schema.field("reward").type == pa.list_(pa.float64())
    assert "metrics" not in table.column_names
    config.write_text(json.dumps({"startDs": DS, "endDs": DS, "addTerminalStateRow": False, "steps": 2,
                                  "timeWindow": 3}))
    code, _, err = cli("timeline", "--config", config, "--input", src, "--output", str(tmp_path / "o2"))
    assert code == 2 and "'timeWindow'" in err and "Traceback" not in err


def _with_duplicate(table: pa.Table) -> pa.Table:
    return pa.concat_tables([table, table.slice(0, 1)])


def test_bad_input_rejected_before_work_and_dedup_opt_in(tmp_path, cli, engine):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    storage.write_table(_with_duplicate(ex1_table()), src)
    args = ["timeline", "--input", src, "--output", out, "--start-ds", DS, "--end-ds", DS,
            "--no-add-terminal-state-row", "--spark-master", "local[2]", "--engine", engine.name]
    code, _, err = cli(*args)
    assert code == 2
    assert "duplicate (mdp_id, sequence_number)" in err and "e.g. mdp_id=mdp1, sequence_number=1" in err
    assert not storage.exists(out) and sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    code, stdout, err = cli(*args, "--dedup")
    assert code == 0, err
    summary = json.loads(stdout)
    assert (summary["duplicates_dropped"], summary["output_rows"]) == (1, 1)


def test_bad_rows_fail_the_write_with_the_full_report(tmp_path, cli, engine):
    """The row checks run inside the timeline's own pass; a failing row (here the episode's last, which
    the timeline drops without a terminal row) gets validate's full report and nothing is written; the
    same bad row outside the ds range is not the stage's business."""
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    table = ex1_table()
    bad = table.set_column(table.schema.get_field_index("reward"), "reward", pa.array([1.0, float("nan")]))
    bad = bad.set_column(bad.schema.get_field_index("action_probability"), "action_probability",
                         pa.array([0.8, 1.5]))
    storage.write_table(bad, src)
    args = ["timeline", "--input", src, "--output", out, "--start-ds", DS, "--end-ds", DS,
            "--no-add-terminal-state-row", "--spark-master", "local[2]", "--engine", engine.name]
    code, _, err = cli(*args)
    assert code == 2, err
    assert "logged table fails 2 check(s)" in err and "non-finite reward: column 'reward', 1 rows" in err
    assert "action_probability outside (0, 1]" in err and "e.g. mdp_id=mdp1, sequence_number=11" in err
    assert "Traceback" not in err and not storage.exists(out)
    late = bad.set_column(bad.schema.get_field_index("ds"), "ds", pa.array([DS, "2019-01-02"]))
    storage.write_table(late, str(tmp_path / "late"))
    code, stdout, err = cli(*args[:2], str(tmp_path / "late"), *args[3:])
    assert code == 0, err
    assert json.loads(stdout)["input_rows"] == 1


def test_missing_column_and_empty_ds_range(tmp_path, cli, engine):
    src = str(tmp_path / "in")
    storage.write_table(ex1_table().drop_columns(["action_probability"]), src)
    code, _, err = cli("timeline", "--input", src, "--output", str(tmp_path / "out"), "--start-ds", DS,
                       "--end-ds", DS, "--add-terminal-state-row", "--spark-master", "local[2]", "--engine", engine.name)
    assert code == 2 and "missing column 'action_probability'" in err
    storage.write_table(ex1_table(), src)
    code, _, err = cli("timeline", "--input", src, "--output", str(tmp_path / "out"), "--start-ds", "2030-01-01",
                       "--end-ds", "2030-01-02", "--add-terminal-state-row", "--spark-master", "local[2]",
                       "--engine", engine.name)
    assert code == 2 and "logged table is empty" in err and "ds 2030-01-01 .. 2030-01-02" in err
    assert not storage.exists(str(tmp_path / "out"))


def test_spark_job_in_process(tmp_path, capsys, spark):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    storage.write_table(ex1_table(), src)
    payload = {"stage": "timeline", "input": src, "output": out, "spark_master": "local[2]",
               "options": {"startDs": DS, "endDs": DS, "addTerminalStateRow": True}}
    assert spark_job_main([json.dumps(payload)]) == 0
    assert json.loads(capsys.readouterr().out)["output_rows"] == 2
    for bad, message in [("{not json", "not valid JSON"), (json.dumps({**payload, "stage": "nope"}), "unknown stage"),
                         (json.dumps({**payload, "options": {"startDs": DS}}), "addTerminalStateRow")]:
        assert spark_job_main([bad]) == 2
        assert message in capsys.readouterr().err


def test_input_and_output_must_differ(tmp_path, cli):
    src = str(tmp_path / "in")
    code, _, err = cli("timeline", "--input", src, "--output", src + "/", "--start-ds", DS, "--end-ds", DS,
                       "--add-terminal-state-row")
    assert code == 2 and "same location" in err


def test_every_option_has_a_flag(tmp_path):
    from batchrl.cli import build_parser
    from batchrl.commands.timeline import options_from_args
    from batchrl.data.timeline import TimelineOptions

    args = build_parser().parse_args([
        "timeline", "--input", "in", "--output", "out", "--start-ds", "2019-01-01", "--end-ds", "2019-01-02",
        "--add-terminal-state-row", "--no-include-possible-actions", "--outlier-episode-length-percentile", "0.9",
        "--percentile-function", "percentile", "--reward-columns", "reward", "--extra-feature-columns", "a,b",
        "--time-window-limit", "5", "--validation-sql", "select TRUE", "--steps", "3", "--dedup"])
    input, output, opts = options_from_args(args)
    assert (input, output) == ("in", "out")
    assert opts == TimelineOptions(start_ds="2019-01-01", end_ds="2019-01-02", add_terminal_state_row=True,
                                   include_possible_actions=False, outlier_episode_length_percentile=0.9,
                                   percentile_function="percentile", reward_columns=["reward"],
                                   extra_feature_columns=["a", "b"], time_window_limit=5,
                                   validation_sql="select TRUE", steps=3, dedup=True)
    flagged = {name for name in TimelineOptions.model_fields if name not in ("input_table_name", "output_table_name")}
    assert flagged == opts.model_fields_set  # every option was set by a flag


def _rows(uri: str) -> list[dict]:
    return sorted(storage.read_table(uri).to_pylist(), key=lambda r: (r["mdp_id"], r["sequence_number"]))


def test_engines_write_the_same_tables(tmp_path, cartpole):
    """timeline -> normalize -> prepare on DuckDB and on Spark: the same rows, the same normalization file."""
    from batchrl.data.normalize import NormalizeOptions, normalize
    from batchrl.data.prepare import PrepareOptions, prepare
    from batchrl.data.timeline import make_options, timeline

    uri = cartpole[0]
    options = make_options({"startDs": "2019-01-01", "endDs": "2019-01-01", "addTerminalStateRow": True,
                            "outlierEpisodeLengthPercentile": 0.95}, where="test")
    out = {}
    for name in ("duckdb", "spark"):
        base = tmp_path / name
        summary = timeline(uri, str(base / "timeline"), options, "local[2]", engine=name)
        assert summary.engine.startswith(name)
        normalize(str(base / "timeline"), str(base / "norm.json"), NormalizeOptions(num_samples=500, seed=3),
                  "local[2]", name)
        prepare(str(base / "timeline"), str(base / "norm.json"), str(base / "train"), str(base / "eval"),
                PrepareOptions(actions=["0", "1"]), "local[2]", engine=name)
        out[name] = {"timeline": _rows(str(base / "timeline")), "norm": (base / "norm.json").read_text(),
                     "train": _rows(str(base / "train")), "eval": _rows(str(base / "eval"))}
    for key in ("timeline", "norm", "train", "eval"):
        assert out["duckdb"][key] == out["spark"][key], key
    assert len(out["duckdb"]["timeline"]) > 20000 and len(out["duckdb"]["eval"]) > 1000


def test_s3_in_and_out_on_the_default_engine(s3_env, cli):
    """Logged data on s3:// (moto) -> timeline on s3://, through pyarrow's S3 filesystem (no Hadoop, no
    DuckDB extension): committed with _SUCCESS, readable, and normalize/prepare read it from there too."""
    src, out = f"{s3_env}/logged", f"{s3_env}/timeline"
    storage.write_table(ex1_table(), src)
    code, stdout, err = cli("timeline", "--input", src, "--output", out, "--start-ds", DS, "--end-ds", DS,
                            "--add-terminal-state-row")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["engine"].startswith("duckdb") and summary["output_rows"] == 2
    assert storage.is_committed(out)
    rows = _rows(out)
    assert [r["next_action"] for r in rows] == ["action2", ""]
    code, _, err = cli("validate", "--input", src)
    assert code == 0, err
    code, _, err = cli("timeline", "--input", f"{s3_env}/nothing", "--output", f"{s3_env}/t2", "--start-ds", DS,
                       "--end-ds", DS, "--add-terminal-state-row")
    assert code == 2 and "dataset not found" in err and not storage.exists(f"{s3_env}/t2")


@pytest.mark.slow
def test_timeline_under_a_memory_limit_far_below_the_input(tmp_path):
    """DuckDB spills to its temp directory: a 48 MB memory limit (about the least that one thread needs for
    this table's Parquet pages and window state), an input of 1M rows that takes 160 MB in memory as Arrow,
    and the output is still complete (every row but each episode's last)."""
    import os
    import sys

    from batchrl import engine as engines
    from batchrl.data.timeline import make_options, timeline

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
    from timeline import cartpole_like

    table = cartpole_like(1_000_000, seed=1)
    assert table.nbytes > 3 * 48 * 2**20
    src = str(tmp_path / "logged")
    storage.write_table(table, src, rows_per_file=250_000)
    episodes = len(set(table.column("mdp_id").to_pylist()))
    spill = tmp_path / "spill"
    engines.reset_duckdb(memory_limit="48MB", temp_dir=str(spill), threads=1)
    try:
        summary = timeline(src, str(tmp_path / "timeline"),
                           make_options({"startDs": "2019-01-01", "endDs": "2019-01-01",
                                         "addTerminalStateRow": False}, where="test"), engine="duckdb")
    finally:
        engines.reset_duckdb()
    assert summary.engine == f"duckdb (memory_limit 48MB, spill to {spill})"
    assert summary.output_rows == table.num_rows - episodes
    assert storage.read_table(str(tmp_path / "timeline"), columns=["mdp_id"]).num_rows == summary.output_rows
