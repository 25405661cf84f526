"""Online gym suite: ``batchrl gym-train`` on every config of ``configs/gym/`` over several seeds.

Per (config, seed): one ``gym_train`` run in its own process (one torch thread each), its greedy
evaluation of the exported policy (the config's ``num_eval_episodes``), training wall time and
environment steps (prefill included). Writes the table (algorithm, env, mean +- std over seeds of the
final evaluation's mean, per-seed means, bar, seeds passing, wall time, environment steps) to
``benchmarks/gym_suite.json`` (merged: a run replaces only its (config, seed) results) and, with ``--readme``, into the gym-suite section of
``benchmarks/README.md`` (between the ``gym-suite`` markers).

    .venv/bin/python benchmarks/gym_suite.py                              # every config, seeds 0 1 2
    .venv/bin/python benchmarks/gym_suite.py --configs configs/gym/cartpole_v0_dqn.yaml --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/gym_suite.py --jobs 2 --readme
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- gym-suite:begin -->", "<!-- gym-suite:end -->"


def run_one(config: str, seed: int, workdir: str) -> dict:
    """One gym-train run in a subprocess; its summary (exit status 1 = below the bar is a result)."""
    out = pathlib.Path(workdir) / f"{pathlib.Path(config).stem}-seed{seed}"
    cmd = [sys.executable, "-m", "batchrl.cli", "gym-train", config, "--output", str(out), "--seed", str(seed),
           "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    print(f"{pathlib.Path(config).stem} seed {seed}: {summary['eval']['mean']:.1f} "
          f"({summary['seconds']:.0f} s, {summary['env_steps']} steps)", file=sys.stderr, flush=True)
    return summary


def table(results: dict[str, list[dict]]) -> str:
    """Markdown rows per config (algorithm, env and bar read from the config file)."""
    from batchrl.training.gym_config import load_gym_config

    lines = ["| config | algorithm | env | eval mean +- std over seeds | per seed | bar | passing | "
             "wall time per run (s) | env steps per run |", "|---|---|---|---|---|---|---|---|---|"]
    for config, runs in results.items():
        cfg = load_gym_config(config)
        means = np.array([r["eval"]["mean"] for r in runs])
        passing = sum(bool(r["passed"]) for r in runs)
        seconds = np.array([r["seconds"] for r in runs])
        steps = np.array([r["env_steps"] for r in runs])
        lines.append(f"| {pathlib.Path(config).name} | {cfg.model.name} | {cfg.env} | "
                     f"{means.mean():.1f} +- {means.std():.1f} | {', '.join(f'{m:.1f}' for m in means)} | "
                     f">= {cfg.passing_score_bar:g} | {passing}/{len(runs)} | {seconds.mean():.0f} | "
                     f"{steps.mean():.0f} |")
    return "\n".join(lines)


def write_readme(text: str) -> None:
    readme = README.read_text()
    if BEGIN in readme and END in readme:
        head, rest = readme.split(BEGIN, 1)
        readme = head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1]
    else:
        readme += f"\n{BEGIN}\n{text}\n{END}\n"
    README.write_text(readme)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=sorted(str(p) for p in (ROOT / "configs" / "gym").glob("*.yaml")))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each uses one core)")
    parser.add_argument("--readme", action="store_true", help="write the table into benchmarks/README.md")
    parser.add_argument("--fresh", action="store_true", help="drop earlier results in benchmarks/gym_suite.json "
                        "(by default a run replaces only its (config, seed) results)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gym-suite-") as workdir, ThreadPoolExecutor(args.jobs) as pool:
        futures = {(c, s): pool.submit(run_one, c, s, workdir) for c in args.configs for s in args.seeds}
        results = {c: [futures[c, s].result() for s in args.seeds] for c in args.configs}
    store = ROOT / "benchmarks" / "gym_suite.json"
    earlier = json.loads(store.read_text()) if store.exists() and not args.fresh else {}
    merged = {str(pathlib.Path(k).relative_to(ROOT)) if pathlib.Path(k).is_absolute() else k: v
              for k, v in earlier.items()}
    for c, runs in results.items():
        key = str(pathlib.Path(c).resolve().relative_to(ROOT))
        new = [{k: r[k] for k in ("seed", "eval", "seconds", "env_steps", "updates", "passed")} for r in runs]
        kept = [r for r in merged.get(key, []) if r["seed"] not in {n["seed"] for n in new}]
        merged[key] = sorted(kept + new, key=lambda r: r["seed"])
    store.write_text(json.dumps(merged, indent=2) + "\n")
    text = table({str(ROOT / c): runs for c, runs in sorted(merged.items())})
    print(text)
    if args.readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
