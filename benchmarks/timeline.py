"""Throughput of `batchrl timeline` (Spark, local[2]) beside an independent pandas implementation.

    .venv/bin/python benchmarks/timeline.py [--rows 1000000 5000000] [--master local[2]]

Logged tables are CartPole-like and synthetic (numpy/pyarrow, no gym): episodes of 8..200 steps
(geometric, mean about 22 like a random CartPole policy), 4 state features, actions "0"/"1", reward 1,
metrics {"reward": 1}, end_reason on each last row. For each size, in the same run:

* ``batchrl timeline`` as a user runs it (a fresh process: Python, JVM and Spark start-up, validation
  of the input, the transform, the Parquet write and commit), addTerminalStateRow false;
* Spark's fixed cost: the same command on a 10-row table;
* the pandas reference (``tests/support/timeline_reference.py``): read Parquet, transform, write Parquet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from batchrl import storage  # noqa: E402
from batchrl.data.schema import logged_schema  # noqa: E402
from tests.support.timeline_reference import reference_timeline  # noqa: E402

DS = "2019-01-01"
CONFIG = {"startDs": DS, "endDs": DS, "addTerminalStateRow": False}


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


def run_cli(src: str, out: str, master: str) -> tuple[float, dict]:
    """Wall time and summary of `batchrl timeline` in a fresh process."""
    cli = os.path.join(os.path.dirname(sys.executable), "batchrl")
    start = time.perf_counter()
    proc = subprocess.run([cli, "timeline", "--input", src, "--output", out, "--start-ds", DS, "--end-ds", DS,
                           "--no-add-terminal-state-row", "--spark-master", master],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return wall, json.loads(proc.stdout)


def run_pandas(src: str, out: str) -> tuple[float, int]:
    start = time.perf_counter()
    table = storage.read_table(src)
    result = reference_timeline(table, CONFIG)
    os.makedirs(out, exist_ok=True)
    pq.write_table(result, os.path.join(out, "part-00000.parquet"), compression="zstd")
    return time.perf_counter() - start, result.num_rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"master {args.master}")
    with tempfile.TemporaryDirectory() as tmp:
        tiny = f"{tmp}/tiny"
        storage.write_table(cartpole_like(10), tiny)
        fixed, _ = run_cli(tiny, f"{tmp}/tiny_out", args.master)
        print(f"Spark fixed cost (batchrl timeline on 10 rows, fresh process): {fixed:.1f} s")
        print("| input rows | episodes | output rows | batchrl timeline wall (s) | rows/s | rows/s without the "
              "fixed cost | pandas reference wall (s) | pandas rows/s |")
        print("|---|---|---|---|---|---|---|---|")
        for rows in args.rows:
            src = f"{tmp}/logged_{rows}"
            storage.write_table(cartpole_like(rows), src)
            wall, summary = run_cli(src, f"{tmp}/spark_{rows}", args.master)
            pandas_wall, pandas_rows = run_pandas(src, f"{tmp}/pandas_{rows}")
            assert pandas_rows == summary["output_rows"], (pandas_rows, summary["output_rows"])
            print(f"| {rows:,} | {summary['input_episodes']:,} | {summary['output_rows']:,} | {wall:.1f} | "
                  f"{rows / wall:,.0f} | {rows / max(wall - fixed, 1e-9):,.0f} | {pandas_wall:.1f} | "
                  f"{rows / pandas_wall:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
