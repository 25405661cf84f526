"""The normalize stage (spec section 4): sampling on each engine (DuckDB, Spark), types keyed by feature id,
determinism (the same file from both engines), errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest

from batchrl import storage
from batchrl.data.normalize import NormalizeOptions, normalize, sample_features
from batchrl.data.schema import STATE_MAP
from batchrl.errors import BatchRLError
from batchrl.preprocessing.normalization import read_normalization
from batchrl.spark_job import run_job

ROWS = 4000
# interleaved ids: CONTINUOUS, ENUM, BOXCOX, BINARY, PROBABILITY, CONTINUOUS, heavy tail
KINDS = {1: "CONTINUOUS", 2: "ENUM", 3: "BOXCOX", 5: "BINARY", 8: "PROBABILITY", 13: "CONTINUOUS", 21: "CONTINUOUS"}


def _values(rng: np.random.Generator, n: int) -> dict[int, np.ndarray]:
    return {
        1: rng.uniform(0.0, 10.0, n),
        2: rng.integers(0, 4, n) * 1000.0,
        3: rng.exponential(1.0, n),
        5: rng.binomial(1, 0.5, n).astype(float),
        8: rng.uniform(0.0, 1.0, n),
        13: rng.uniform(-3.02, -2.98, n),
        21: np.where(rng.random(n) < 0.5, rng.normal(size=n), rng.standard_cauchy(n)),
    }


def _timeline(path: str, rng: np.random.Generator, n: int = ROWS, extra: dict[int, list] | None = None,
              action_map: bool = False) -> str:
    cols = _values(rng, n)
    maps = [[(k, float(cols[k][i])) for k in sorted(cols)] for i in range(n)]
    for k, vals in (extra or {}).items():
        for i, v in enumerate(vals):
            maps[i].append((k, v))
    table = {
        "mdp_id": pa.array([str(i // 20) for i in range(n)]),
        "sequence_number": pa.array([i % 20 for i in range(n)], pa.int64()),
        "state_features": pa.array(maps, STATE_MAP),
    }
    if action_map:
        table["action"] = pa.array([[(100, float(v)), (101, float(-v))] for v in rng.uniform(-2, 2, n)], STATE_MAP)
    else:
        table["action"] = pa.array([str(i % 2) for i in range(n)])
    storage.write_table(pa.table(table), path)
    return path


@pytest.fixture(scope="module")
def timeline(tmp_path_factory):
    return _timeline(str(tmp_path_factory.mktemp("norm") / "timeline"), np.random.default_rng(7))


def test_types_per_feature_id_and_same_seed_same_file(engine, timeline, tmp_path):
    first, second = str(tmp_path / "a.json"), str(tmp_path / "b.json")
    summary = normalize(timeline, first, NormalizeOptions(num_samples=2000, seed=11), "local[2]", engine.name)
    normalization = read_normalization(first)
    assert {k: v.feature_type.value for k, v in normalization.items()} == KINDS
    assert summary.feature_ids == sorted(KINDS)
    assert all(n == 2000 for n in summary.samples_per_feature.values())
    assert normalization[2].possible_values == (0.0, 1000.0, 2000.0, 3000.0)
    # each interleaved CONTINUOUS feature has its own parameters
    assert normalization[1].mean == pytest.approx(5.0, abs=0.2)
    assert normalization[1].stddev == pytest.approx(10 / 12**0.5, abs=0.1)
    assert normalization[13].mean == pytest.approx(-3.0, abs=0.01) and normalization[13].stddev < 0.02
    # the same seed gives the same file, also through the spark_job entry point (JSON options, Spark): the
    # sample is the same on both engines
    options = NormalizeOptions(num_samples=2000, seed=11)
    run_job({"stage": "normalize", "input": timeline, "output": second, "spark_master": "local[2]",
             "options": json.loads(json.dumps(options.model_dump(mode="json")))})
    assert open(first).read() == open(second).read()


def test_sample_is_seeded_exact_and_independent_of_partitioning(engine, timeline):
    df = engine.read_parquet(timeline)
    def parts(n: int):
        return df.repartition(n) if engine.name == "spark" else df

    one, counts = sample_features(engine, parts(1), "state_features", 300, seed=5)
    many, _ = sample_features(engine, parts(7), "state_features", 300, seed=5)
    assert counts == {k: ROWS for k in KINDS}
    assert set(one) == set(KINDS)
    for k in KINDS:
        assert len(one[k]) == 300
        np.testing.assert_array_equal(one[k], many[k])
    # another seed, another sample
    other, _ = sample_features(engine, df, "state_features", 300, seed=6)
    assert all(not np.array_equal(one[k], other[k]) for k in (1, 3, 8))


def test_cli_overrides_quantiles_and_action_column(engine, tmp_path, cli):
    path = _timeline(str(tmp_path / "tl"), np.random.default_rng(3), n=600, action_map=True,
                     extra={40: [1.0] * 10})
    out = tmp_path / "n.json"
    code, stdout, _ = cli("normalize", "--input", path, "--output", out, "--num-samples", "500",
                          "--use-quantiles", "--quantile-k2-threshold", "50", "--feature-override", "1=DO_NOT_PREPROCESS",
                          "--feature-override", "5=CONTINUOUS", "--spark-master", "local[2]",
                          "--engine", engine.name)
    assert code == 0
    summary = json.loads(stdout)
    normalization = read_normalization(str(out))
    assert normalization[1].feature_type == "DO_NOT_PREPROCESS"
    assert normalization[5].feature_type == "CONTINUOUS"
    assert normalization[21].feature_type == "QUANTILE"
    # a feature with fewer than 20 values is left out, by name
    assert 40 not in normalization and "feature 40 has 10 samples" in summary["not_identified"]["40"]
    # ReAgent's double-encoded form on disk
    assert all(isinstance(v, str) for v in json.loads(out.read_text()).values())
    code, stdout, _ = cli("normalize", "--input", path, "--output", tmp_path / "a.json", "--column", "action",
                          "--feature-type", "CONTINUOUS_ACTION", "--spark-master", "local[2]", "--engine", engine.name)
    assert code == 0
    actions = read_normalization(str(tmp_path / "a.json"))
    assert list(actions) == [100, 101] and all(p.feature_type == "CONTINUOUS_ACTION" for p in actions.values())
    assert -2.0 <= actions[100].min_value < -1.9 and 1.9 < actions[100].max_value <= 2.0


def test_bad_input_is_a_clear_error_and_writes_nothing(engine, timeline, tmp_path, cli):
    bad = _timeline(str(tmp_path / "bad"), np.random.default_rng(5), n=200,
                    extra={6: [1.0] * 150 + [float("nan")] * 2 + [float("inf")] * 3})
    out = tmp_path / "n.json"
    code, _, err = cli("normalize", "--input", bad, "--output", out, "--spark-master", "local[2]",
                       "--engine", engine.name)
    assert code == 2 and "feature 6: 5 of 155" in err and not os.path.exists(out)
    code, _, err = cli("normalize", "--input", timeline, "--output", out, "--column", "action",
                       "--spark-master", "local[2]", "--engine", engine.name)
    assert code == 2 and "column 'action' is string, not a map" in err and not os.path.exists(out)
    code, _, err = cli("normalize", "--input", timeline, "--output", out, "--feature-override", "3=SPLINE")
    assert code == 2 and "bad --feature-override '3=SPLINE'" in err
    with pytest.raises(BatchRLError, match=r"feature ids not in column 'state_features': \[99\]"):
        normalize(timeline, str(out), NormalizeOptions(num_samples=50, feature_overrides={99: "ENUM"}), "local[2]",
                  engine.name)
    with pytest.raises(BatchRLError, match="column 'missing' not found"):
        normalize(timeline, str(out), NormalizeOptions(column="missing"), "local[2]", engine.name)
    assert not os.path.exists(out)


def test_spark_job_payload_errors(timeline):
    with pytest.raises(BatchRLError, match="invalid normalize options: colour"):
        run_job({"stage": "normalize", "input": timeline, "output": "n.json", "options": {"colour": 1}})
    with pytest.raises(BatchRLError, match="invalid prepare options: colour"):
        run_job({"stage": "prepare", "input": {"timeline": timeline, "normalization": "n.json"},
                 "output": {"train": "t", "eval": "e"}, "options": {"colour": 1}})
    with pytest.raises(BatchRLError, match="no output.eval URI"):
        run_job({"stage": "prepare", "input": {"timeline": timeline, "normalization": "n.json"},
                 "output": {"train": "t"}, "options": {}})
