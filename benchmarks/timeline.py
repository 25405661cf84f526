"""`batchrl timeline` on each engine beside raw DuckDB SQL, polars and pandas; and `make run`'s data stages.

    .venv/bin/pip install -c requirements.lock -e '.[bench]'       # polars, for its anchor
    .venv/bin/python benchmarks/timeline.py [--rows 1000000 5000000] [--master local[2]] [--repeat 3] [--json PATH]

Logged tables are CartPole-like and synthetic (numpy/pyarrow, no gym): episodes of 8..200 steps
(geometric, mean about 22 like a random CartPole policy), 4 state features, actions "0"/"1", reward 1,
metrics {"reward": 1}, end_reason on each last row; addTerminalStateRow false. For each size, in the
same run, each in a fresh process (Python start-up included; the wall time is the parent's); the embedded
engine and the raw DuckDB and polars anchors run ``--repeat`` times, interleaved, and their medians are
compared (single runs on this machine vary by 10% or more); Spark and pandas run once:

* ``batchrl timeline --engine duckdb`` and ``--engine spark`` as a user runs them: start-up, validation of
  the input, the transform, the Parquet write and the commit;
* anchors that only transform (no validation, no commit): raw DuckDB SQL (LEAD/ROW_NUMBER over
  mdp_id, maps and lists kept, Parquet zstd out), polars lazy (sort + shift over mdp_id, sink_parquet),
  and the pandas reference (``tests/support/timeline_reference.py``).

Every run must produce the same number of output rows. Then ``batchrl run configs/cartpole_dqn_offline.yaml
--stop-after prepare`` (what ``make run`` runs, without training) on each engine, with its stage times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # the repository root: tests.support

from batchrl import storage  # noqa: E402
from batchrl.data.schema import logged_schema  # noqa: E402

DS = "2019-01-01"
CONFIG = {"startDs": DS, "endDs": DS, "addTerminalStateRow": False}
DATA_STAGES = ("validate", "timeline", "normalize", "normalize_actions", "prepare")


def cartpole_like(rows: int, seed: int = 0) -> pa.Table:
    """A synthetic logged table of ``rows`` rows shaped like random-policy CartPole data."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(8 + rng.geometric(1 / 14, size=rows // 8 + 1), 200)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), rows) + 1]
    lengths[-1] -= lengths.sum() - rows
    lengths = lengths[lengths > 0]
    ends = np.cumsum(lengths) - 1
    seq = np.arange(rows) - np.repeat(ends - lengths + 1, lengths)
    obs = rng.normal(0.0, 0.1, size=(rows, 4))
    offsets = pa.array(np.arange(0, 4 * rows + 1, 4, dtype=np.int32))
    states = pa.MapArray.from_arrays(offsets, pa.array(np.tile(np.arange(4, dtype=np.int64), rows)),
                                     pa.array(obs.reshape(-1)))
    one = pa.array(np.arange(rows + 1, dtype=np.int32))
    metrics = pa.MapArray.from_arrays(one, pa.repeat("reward", rows), pa.array(np.ones(rows)))
    possible = pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * rows + 1, 2, dtype=np.int32)),
                                        pa.array(np.tile(np.arange(2), rows)).cast(pa.string()))
    end_reason = np.full(rows, None, dtype=object)
    end_reason[ends] = np.where(lengths == 200, "truncated", "terminated")
    columns = {
        "mdp_id": pa.array(np.repeat(np.arange(len(lengths)), lengths)).cast(pa.string()),
        "sequence_number": pa.array(seq.astype(np.int64)),
        "state_features": states,
        "action": pa.array(rng.integers(0, 2, size=rows)).cast(pa.string()),
        "reward": pa.array(np.ones(rows)),
        "possible_actions": possible,
        "action_probability": pa.array(np.full(rows, 0.5)),
        "ds": pa.repeat(DS, rows),
        "metrics": metrics,
        "end_reason": pa.array(end_reason, type=pa.string()),
    }
    schema = logged_schema()
    return pa.table([columns[f.name] for f in schema], schema=schema)


# ---------------------------------------------------------------- anchors (each runs in a fresh process)

ANCHOR_SQL = """
COPY (
  SELECT mdp_id, state_features, action, LEAD(action) OVER w AS next_action, action_probability, reward, metrics,
         LEAD(state_features) OVER w AS next_state_features, sequence_number,
         ROW_NUMBER() OVER w AS sequence_number_ordinal,
         LEAD(sequence_number) OVER w - sequence_number AS time_diff,
         sequence_number - MIN(sequence_number) OVER (PARTITION BY mdp_id) AS time_since_first,
         possible_actions, LEAD(possible_actions) OVER w AS possible_next_actions, '{ds}' AS ds, end_reason
  FROM read_parquet({files})
  WHERE ds BETWEEN '{ds}' AND '{ds}'
  WINDOW w AS (PARTITION BY mdp_id ORDER BY sequence_number)
  QUALIFY LEAD(sequence_number) OVER w IS NOT NULL
) TO '{out}' (FORMAT parquet, COMPRESSION zstd)
"""


def anchor_duckdb(files: list[str], out: str) -> None:
    import duckdb

    con = duckdb.connect(config={"preserve_insertion_order": False})
    con.execute(ANCHOR_SQL.format(ds=DS, files=json.dumps(files).replace('"', "'"),
                                  out=os.path.join(out, "part-0.parquet")))


def anchor_polars(files: list[str], out: str) -> None:
    import polars as pl

    w = "mdp_id"
    lf = (pl.scan_parquet(files).filter((pl.col("ds") >= DS) & (pl.col("ds") <= DS))
          .sort(["mdp_id", "sequence_number"]))
    next_seq = pl.col("sequence_number").shift(-1).over(w)
    lf = lf.select(
        "mdp_id", "state_features", "action", pl.col("action").shift(-1).over(w).alias("next_action"),
        "action_probability", "reward", "metrics",
        pl.col("state_features").shift(-1).over(w).alias("next_state_features"), "sequence_number",
        (pl.int_range(pl.len()).over(w) + 1).alias("sequence_number_ordinal"),
        (next_seq - pl.col("sequence_number")).alias("time_diff"),
        (pl.col("sequence_number") - pl.col("sequence_number").min().over(w)).alias("time_since_first"),
        "possible_actions", pl.col("possible_actions").shift(-1).over(w).alias("possible_next_actions"),
        pl.lit(DS).alias("ds"), "end_reason", next_seq.alias("_next"),
    ).filter(pl.col("_next").is_not_null()).drop("_next")
    lf.sink_parquet(os.path.join(out, "part-0.parquet"), compression="zstd")


def anchor_pandas(files: list[str], out: str) -> None:
    from tests.support.timeline_reference import reference_timeline

    table = pa.concat_tables([pq.read_table(f) for f in files])
    pq.write_table(reference_timeline(table, CONFIG), os.path.join(out, "part-0.parquet"), compression="zstd")


ANCHORS = {"duckdb_sql": anchor_duckdb, "polars": anchor_polars, "pandas": anchor_pandas}


def run_anchor(name: str, src: str, out: str) -> tuple[float, int]:
    """Wall time (fresh process) and output rows of one anchor."""
    os.makedirs(out, exist_ok=True)
    files = storage.data_files(storage.resolve(src))
    start = time.perf_counter()
    subprocess.run([sys.executable, os.path.abspath(__file__), "--anchor", name, "--files", *files, "--out", out],
                   check=True)
    wall = time.perf_counter() - start
    return wall, pq.read_metadata(os.path.join(out, "part-0.parquet")).num_rows


def run_cli(src: str, out: str, engine: str, master: str) -> tuple[float, dict]:
    """Wall time and summary of `batchrl timeline` in a fresh process."""
    cli = os.path.join(os.path.dirname(sys.executable), "batchrl")
    start = time.perf_counter()
    proc = subprocess.run([cli, "timeline", "--input", src, "--output", out, "--start-ds", DS, "--end-ds", DS,
                           "--no-add-terminal-state-row", "--engine", engine, "--spark-master", master],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return wall, json.loads(proc.stdout)


def run_workflow_data_stages(workdir: str, engine: str, master: str) -> dict[str, float]:
    """`batchrl run` (the `make run` config) up to prepare: stage name -> seconds, from its stage lines."""
    cli = os.path.join(os.path.dirname(sys.executable), "batchrl")
    proc = subprocess.run([cli, "run", os.path.join(ROOT, "configs", "cartpole_dqn_offline.yaml"), "--workdir",
                           workdir, "--stop-after", "prepare", "--engine", engine, "--spark-master", master],
                          capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return {m.group(2): float(m.group(1)) for m in re.finditer(r"^\[\s*([\d.]+)s\] (\w+)", proc.stdout, re.M)}


def _cell(row: dict, key: str, fmt: str = "{:.1f}") -> str:
    return fmt.format(row[key]) if key in row else "-"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--engines", nargs="+", default=["duckdb", "spark"])
    parser.add_argument("--repeat", type=int, default=3, help="runs of the embedded engine and each fast anchor")
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--anchor", choices=sorted(ANCHORS), help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.anchor:
        ANCHORS[args.anchor](args.files, args.out)
        return
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                     "master": args.master, "load_average_start": os.getloadavg(), "timeline": [],
                     "make_run_data_stages": {}}
    print(f"machine: {results['machine']}, load average {os.getloadavg()[0]:.1f}")
    print("| input rows | batchrl timeline duckdb (s) | batchrl timeline spark (s) | raw DuckDB SQL (s) | polars (s) "
          "| pandas reference (s) | duckdb / raw DuckDB | duckdb / polars |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            src = f"{tmp}/logged_{rows}"
            storage.write_table(cartpole_like(rows), src)
            row: dict = {"rows": rows, "load_average": os.getloadavg()[0]}
            counts = {}
            runs: dict[str, list[float]] = {}
            # the close ones (embedded engine and the two anchors) run interleaved, --repeat times each: the
            # median is the figure; the slow references (Spark, pandas) run once
            for rep in range(args.repeat):
                for name in [e for e in args.engines if e != "spark"] + ["duckdb_sql", "polars"]:
                    out = f"{tmp}/{name}_{rows}_{rep}"
                    if name in ANCHORS:
                        wall, counts[name] = run_anchor(name, src, out)
                    else:
                        wall, summary = run_cli(src, out, name, args.master)
                        counts[name] = summary["output_rows"]
                    runs.setdefault(name, []).append(wall)
            if "spark" in args.engines:
                wall, summary = run_cli(src, f"{tmp}/spark_{rows}", "spark", args.master)
                runs["spark"], counts["spark"] = [wall], summary["output_rows"]
            wall, counts["pandas"] = run_anchor("pandas", src, f"{tmp}/pandas_{rows}")
            runs["pandas"] = [wall]
            for name, walls in runs.items():
                row[name] = statistics.median(walls)
                row[f"{name}_runs"] = walls
            assert len(set(counts.values())) == 1, counts
            row["output_rows"] = counts["duckdb_sql"]
            if "duckdb" in row:
                row["duckdb_over_raw_duckdb"] = row["duckdb"] / row["duckdb_sql"]
                row["duckdb_over_polars"] = row["duckdb"] / row["polars"]
            results["timeline"].append(row)

            print(f"| {rows:,} | {_cell(row, 'duckdb')} | {_cell(row, 'spark')} | {_cell(row, 'duckdb_sql')} | "
                  f"{_cell(row, 'polars')} | {_cell(row, 'pandas')} | "
                  f"{_cell(row, 'duckdb_over_raw_duckdb', '{:.2f}x')} | "
                  f"{_cell(row, 'duckdb_over_polars', '{:.2f}x')} |", flush=True)
        print("\n`batchrl run configs/cartpole_dqn_offline.yaml --stop-after prepare` (30,000 transitions):")
        print("| engine | " + " | ".join(DATA_STAGES) + " | validate+timeline+normalize+prepare |")
        print("|---|" + "---|" * (len(DATA_STAGES) + 1))
        for engine in args.engines:
            times = run_workflow_data_stages(f"{tmp}/run_{engine}", engine, args.master)
            total = sum(times.get(stage, 0.0) for stage in DATA_STAGES)
            results["make_run_data_stages"][engine] = {**times, "data_stages_total": total}
            print(f"| {engine} | " + " | ".join(f"{times.get(s, 0.0):.1f}" for s in DATA_STAGES)
                  + f" | {total:.1f} |", flush=True)
    results["load_average_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
            fh.write("\n")


if __name__ == "__main__":
    main()
