"""Logged datasets at several data qualities (issue 16), rebuilt deterministically through the CLI.

Per environment, the same budget per dataset (``--transitions``, default 50,000), every row with the
logging policy's true propensity (``batchrl generate``):

- ``random``: the uniformly random policy;
- ``expert``: around a strong policy trained online with ``batchrl gym-train`` (its config and seed below),
  or, for MountainCar-v0, LunarLander-v3 and LunarLanderContinuous-v3, a scripted controller
  (``benchmarks/scripted_policies.py``: online training of those here would take hours on 2 cores):
  epsilon-greedy 0.05 (discrete actions) or truncated Gaussian noise 0.1 (continuous; normalized [-1, 1]
  units, i.e. 10% of half the action range: ``generate --policy gaussian``);
- ``medium``: around a policy at about half the expert's return (the same gym config stopped early,
  ``--num-train-episodes``, or the scripted controller's weak variant): epsilon-greedy 0.3, or Gaussian
  noise 0.3;
- ``mixed``: half the budget from the random policy, half from the expert one (whole episodes of each, the
  two tables concatenated with their ``mdp_id`` prefixed ``random-`` / ``expert-``).

The trained policies are written to ``<workdir>/policies/<env>/<expert|medium>/`` and reused when there;
the datasets to ``<workdir>/<env>/<dataset>/logged`` (not committed: this script rebuilds them). Writes
``benchmarks/datasets.json``: per (env, dataset) the logging policy's return (``behavior_return``: the mean
return of the logged episodes, the last episode of each generate call left out since the budget may cut
it), the number of rows and episodes, and per policy its greedy return (``gym-train``'s evaluation).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/datasets.py                       # every env below
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/datasets.py --envs Pendulum-v1 --transitions 5000
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # scripted_policies
RESULTS = ROOT / "benchmarks" / "datasets.json"
DATASETS = ("random", "expert", "medium", "mixed")


@dataclass(frozen=True)
class Teacher:
    """A policy trained online: ``batchrl gym-train CONFIG --seed SEED [--num-train-episodes EPISODES]``."""

    config: str
    seed: int
    episodes: int | None = None  # None: the config's own (the expert)


@dataclass(frozen=True)
class Scripted:
    """A scripted controller (``benchmarks/scripted_policies.py``) where training one online here is
    impractical: LunarLander's landing controller, MountainCar's energy pumping."""

    level: str  # expert or medium: the row of scripted_policies.SCRIPTED


@dataclass(frozen=True)
class EnvSpec:
    expert: Teacher | Scripted
    medium: Teacher | Scripted
    continuous: bool
    expert_noise: float = 0.05  # epsilon (discrete) or Gaussian stddev in [-1, 1] units (continuous)
    medium_noise: float = 0.3


#: The expert and medium policies per environment. CartPole-v1: DQN, seed 1 (500.0 over 100 greedy episodes
#: in the gym suite); medium: the same run stopped at 45 of 120 episodes. Pendulum-v1: TD3, seed 0 (-154.3);
#: medium: stopped at 15 of 40 episodes.
ENVS: dict[str, EnvSpec] = {
    "CartPole-v1": EnvSpec(Teacher("configs/gym/cartpole_v1_dqn.yaml", 1),
                           Teacher("configs/gym/cartpole_v1_dqn.yaml", 1, 45), continuous=False),
    "Pendulum-v1": EnvSpec(Teacher("configs/gym/pendulum_td3.yaml", 0),
                           Teacher("configs/gym/pendulum_td3.yaml", 0, 15), continuous=True,
                           expert_noise=0.1),
}
for _env in ("MountainCar-v0", "LunarLander-v3", "LunarLanderContinuous-v3"):
    ENVS[_env] = EnvSpec(Scripted("expert"), Scripted("medium"), continuous=_env.endswith("Continuous-v3"),
                         expert_noise=0.1 if _env.endswith("Continuous-v3") else 0.05)
#: Data seeds per dataset (mixed: its random half, then its expert half); evaluation seeds elsewhere are >= 10,000.
SEEDS = {"random": 1, "expert": 2, "medium": 3, "mixed": (4, 5)}


def _cli(*args: str) -> dict:
    """Run ``batchrl ARGS`` in a subprocess (one torch thread); its JSON summary on stdout."""
    cmd = [sys.executable, "-m", "batchrl.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    if proc.returncode not in (0, 1):  # gym-train exits 1 below its bar: still a policy
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def teacher_policy(workdir: pathlib.Path, env: str, level: str, teacher: Teacher | Scripted) -> tuple[str, float]:
    """(model.torchscript of the trained or scripted policy, its greedy return), made unless already there."""
    out = workdir / "policies" / env / level
    summary_file = out / "gym_train_summary.json"
    if isinstance(teacher, Scripted):
        from scripted_policies import greedy_return, write_scripted

        if not summary_file.exists():
            write_scripted(env, teacher.level, out / "model.torchscript")
            summary_file.write_text(json.dumps({"eval": {"mean": greedy_return(env, teacher.level)}}, indent=2))
    elif not summary_file.exists():
        args = ["gym-train", teacher.config, "--output", str(out), "--seed", str(teacher.seed), "--device", "cpu"]
        if teacher.episodes is not None:
            args += ["--num-train-episodes", str(teacher.episodes)]
        summary = _cli(*args)
        summary_file.write_text(json.dumps(summary, indent=2))
    return str(out / "model.torchscript"), float(json.loads(summary_file.read_text())["eval"]["mean"])


def _generate(env: str, output: pathlib.Path, transitions: int, seed: int, policy: list[str]) -> None:
    from batchrl import storage

    if not storage.exists(str(output)):
        _cli("generate", "--env", env, "--transitions", str(transitions), "--seed", str(seed), *policy,
             "--output", str(output))


def _around(spec: EnvSpec, model: str, noise: float) -> list[str]:
    if spec.continuous:
        return ["--policy", "gaussian", "--model", model, "--noise", str(noise)]
    return ["--policy", "epsilon-greedy", "--model", model, "--epsilon", str(noise)]


def episode_returns(uri: str) -> list[float]:
    """Returns of the logged episodes in ``mdp_id`` order of appearance, the last one (maybe cut) left out."""
    import pyarrow.compute as pc

    from batchrl import storage

    table = storage.read_table(uri, columns=["mdp_id", "reward"])
    sums = table.group_by("mdp_id", use_threads=False).aggregate([("reward", "sum")])
    order = {mdp: i for i, mdp in enumerate(pc.unique(table.column("mdp_id")).to_pylist())}
    returns = sorted(zip(sums.column("mdp_id").to_pylist(), sums.column("reward_sum").to_pylist(), strict=True),
                     key=lambda row: order[row[0]])
    return [r for _, r in returns[:-1]]


def _prefixed(uri: str, prefix: str):
    import pyarrow as pa
    import pyarrow.compute as pc

    from batchrl import storage

    table = storage.read_table(uri)
    column = pc.binary_join_element_wise(pa.scalar(prefix), table.column("mdp_id"), "")
    return table.set_column(table.schema.get_field_index("mdp_id"), "mdp_id", column)


def build_env(workdir: pathlib.Path, env: str, transitions: int) -> dict:
    """The four datasets of ``env``; their record for ``datasets.json``."""
    import pyarrow as pa

    from batchrl import storage

    spec = ENVS[env]
    expert, expert_return = teacher_policy(workdir, env, "expert", spec.expert)
    medium, medium_return = teacher_policy(workdir, env, "medium", spec.medium)
    d = workdir / env
    _generate(env, d / "random" / "logged", transitions, SEEDS["random"], ["--policy", "random"])
    _generate(env, d / "expert" / "logged", transitions, SEEDS["expert"], _around(spec, expert, spec.expert_noise))
    _generate(env, d / "medium" / "logged", transitions, SEEDS["medium"], _around(spec, medium, spec.medium_noise))
    half = transitions // 2
    _generate(env, d / "mixed" / "random-half", half, SEEDS["mixed"][0], ["--policy", "random"])
    _generate(env, d / "mixed" / "expert-half", transitions - half, SEEDS["mixed"][1],
              _around(spec, expert, spec.expert_noise))
    mixed = str(d / "mixed" / "logged")
    if not storage.exists(mixed):
        storage.write_table(pa.concat_tables([_prefixed(str(d / "mixed" / "random-half"), "random-"),
                                              _prefixed(str(d / "mixed" / "expert-half"), "expert-")]), mixed)
    record: dict = {"policies": {
        "expert": {**spec.expert.__dict__, "greedy_return": expert_return, "noise": spec.expert_noise},
        "medium": {**spec.medium.__dict__, "greedy_return": medium_return, "noise": spec.medium_noise}},
        "datasets": {}}
    for name in DATASETS:
        if name == "mixed":
            returns = episode_returns(str(d / name / "random-half")) + episode_returns(str(d / name / "expert-half"))
        else:
            returns = episode_returns(str(d / name / "logged"))
        rows = storage.read_table(str(d / name / "logged"), columns=["mdp_id"])
        record["datasets"][name] = {"behavior_return": sum(returns) / len(returns), "rows": rows.num_rows,
                                    "episodes": len(set(rows.column("mdp_id").to_pylist())),
                                    "seed": SEEDS[name], "path": f"{env}/{name}/logged"}  # under the workdir
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--transitions", type=int, default=50_000, help="budget per dataset")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "datasets"))
    parser.add_argument("--results", default=str(RESULTS), help="JSON to merge the records into")
    args = parser.parse_args(argv)
    workdir = pathlib.Path(args.workdir)
    results_file = pathlib.Path(args.results)
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for env in args.envs:
        record = build_env(workdir, env, args.transitions)
        results[env] = {"transitions": args.transitions, **record}
        for name, data in record["datasets"].items():
            print(f"{env:12s} {name:7s} behavior_return {data['behavior_return']:9.1f}  "
                  f"rows {data['rows']}  episodes {data['episodes']}", flush=True)
        results_file.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
