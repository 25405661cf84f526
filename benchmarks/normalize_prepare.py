"""Throughput of normalize, prepare and the Preprocessor on CartPole data (issue 4).

Generates random CartPole-v0 transitions, builds the timeline (not timed), then times
``normalize`` (at two sample sizes) and ``prepare`` end to end (the engine's work, Parquet write, commit)
on the chosen data engine, and the Preprocessor (eager and TorchScript) on the prepared states.

    .venv/bin/python benchmarks/normalize_prepare.py [--transitions 100000] [--engine duckdb|spark] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=100_000)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--engine", choices=["duckdb", "spark"], default="duckdb")
    args = parser.parse_args()
    engine, master = args.engine, args.master

    import torch

    from batchrl import storage
    from batchrl.data.gym_logging import GenerateOptions, generate
    from batchrl.data.normalize import NormalizeOptions, normalize
    from batchrl.data.prepare import PrepareOptions, prepare
    from batchrl.data.timeline import make_options, timeline
    from batchrl.engine import get_engine
    from batchrl.preprocessing.normalization import read_normalization
    from batchrl.preprocessing.preprocessor import Preprocessor

    d = (args.workdir or tempfile.mkdtemp(prefix="batchrl-bench-")).rstrip("/")
    generate(f"{d}/logged", GenerateOptions(env="CartPole-v0", transitions=args.transitions, seed=42))
    runner = get_engine(engine, master)
    timeline(f"{d}/logged", f"{d}/timeline", make_options(
        {"startDs": "2019-01-01", "endDs": "2019-01-01", "addTerminalStateRow": True}, where="benchmark"),
        master, engine)
    # warm-up (JVM code paths, imports), not reported
    normalize(f"{d}/timeline", f"{d}/warm.json", NormalizeOptions(num_samples=100), master, engine)
    rows = args.transitions
    print(f"CartPole-v0, {rows} transitions, {runner.describe()}")
    for samples in (1000, 100_000):
        _, seconds = _timed(lambda s=samples: normalize(f"{d}/timeline", f"{d}/norm-{s}.json",
                                                        NormalizeOptions(num_samples=s), master, engine))
        print(f"normalize num_samples={samples}: {seconds:.1f} s ({rows * 4 / seconds:,.0f} feature values/s)")
    summary, seconds = _timed(lambda: prepare(f"{d}/timeline", f"{d}/norm-1000.json", f"{d}/train", f"{d}/eval",
                                              PrepareOptions(actions=["0", "1"]), master, engine=engine))
    print(f"prepare: {seconds:.1f} s ({rows / seconds:,.0f} rows/s; train {summary.train.num_rows}, "
          f"eval {summary.eval.num_rows})")

    table = storage.read_table(f"{d}/train", columns=["state_features", "state_features_presence"])
    n = table.num_rows
    values = torch.tensor(table.column("state_features").to_pylist(), dtype=torch.float32)
    presence = torch.tensor(table.column("state_features_presence").to_pylist(), dtype=torch.float32)
    eager = Preprocessor(read_normalization(f"{d}/norm-1000.json"), [0, 1, 2, 3])
    scripted = torch.jit.script(eager)
    torch.set_num_threads(2)
    for name, module in (("eager", eager), ("scripted", scripted)):
        for batch in (512, n):
            with torch.no_grad():
                for _ in range(3):
                    module(values[:batch], presence[:batch])
                reps = max(1, 200_000 // batch)
                start = time.perf_counter()
                for _ in range(reps):
                    module(values[:batch], presence[:batch])
                seconds = (time.perf_counter() - start) / reps
            print(f"Preprocessor {name}, batch {batch}: {seconds * 1e6:,.0f} us/batch "
                  f"({batch / seconds:,.0f} rows/s)")


if __name__ == "__main__":
    main()
