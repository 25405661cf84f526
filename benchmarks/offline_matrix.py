"""Issue 16's matrix: task x data quality x algorithm x seed, batchrl's shipped configs against d3rlpy 2.8.1
on exactly the same logged data and evaluation.

Datasets come from ``benchmarks/datasets.py`` (``--datasets-workdir``, its ``<env>/<dataset>/logged``;
``benchmarks/datasets.json`` holds their behavior returns). Per cell and seed:

* **batchrl**: ``batchrl run CONFIG --input LOGGED`` with the algorithm's shipped config
  (``ALGORITHMS`` below: the CartPole configs for discrete actions, the Pendulum ones for continuous), of
  which only ``env_name``, the actions, the seed and the evaluation change (``max_steps`` and the bar are
  dropped: the environment's own limit applies), trained by ``batchrl run --no-evaluate``; the greedy return
  of its exported TorchScript policy over ``--episodes`` episodes seeded 10,000 + seed, 10,000 + seed + 1,
  ... (the data seeds are < 10);
* **d3rlpy**: its matching algorithms (``D3RLPY``) in its own venv (``benchmarks/.d3rlpy-venv``, created
  here with d3rlpy 2.8.1 and the CPU torch the project pins; d3rlpy pins gymnasium 1.0, so it never
  enters the project's dependencies), run by ``benchmarks/d3rlpy_worker.py`` with the batchrl run's hidden
  sizes, batch size, learning rates (the critic's and the actor's), discount and number of gradient steps (discrete: a hard target copy
  every 1 / target_update_rate steps where batchrl updates softly at that rate), on the episodes batchrl
  trains on (the config's train split, :func:`training_episodes`; the eval split, which batchrl holds out
  for CPE, is not d3rlpy's either; records with ``train_episodes: batchrl_train_split``, older ones trained
  d3rlpy on every logged episode), evaluated greedily over the same episode seeds; d3rlpy's defaults
  otherwise (no observation scaler). ``--libraries d3rlpy`` reuses the recorded batchrl run's step count.

Writes ``benchmarks/offline_matrix.json`` (merged: a run replaces its own records): ``records``, one per
(env, dataset, library, algorithm, seed) with ``mean_return``, ``episodes``, ``gradient_steps``,
``train_seconds``; ``behavior_return`` per (env, dataset). One torch thread per run.

    .venv/bin/python benchmarks/offline_matrix.py --envs CartPole-v1 --datasets random --algorithms DiscreteDQN --seeds 0
    .venv/bin/python benchmarks/offline_matrix.py                     # the whole matrix (days on 2 cores)
    .venv/bin/python benchmarks/offline_matrix.py --table             # the summary table of the results
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # offline_cartpole's greedy rollouts
RESULTS = ROOT / "benchmarks" / "offline_matrix.json"
D3RLPY_VENV = ROOT / "benchmarks" / ".d3rlpy-venv"
D3RLPY_PINS = ["d3rlpy==2.8.1", "pyarrow", "box2d==2.3.10", "pygame==2.6.1"]  # Box2D: LunarLander

#: The matrix's tasks: env -> (continuous actions, datasets). MountainCar has no random dataset (random
#: data never reaches the flag).
ENVS = {
    "CartPole-v1": (False, ("random", "expert", "medium", "mixed")),
    "LunarLander-v3": (False, ("random", "expert", "medium", "mixed")),
    "MountainCar-v0": (False, ("expert", "medium", "mixed")),
    "Pendulum-v1": (True, ("random", "expert", "medium", "mixed")),
    "LunarLanderContinuous-v3": (True, ("random", "expert", "medium", "mixed")),
}
#: batchrl's algorithm (the config's model key, and a label) -> its shipped config.
ALGORITHMS = {
    "DiscreteDQN": "configs/cartpole_dqn_offline.yaml",
    "DiscreteCQL": "configs/cartpole_cql_offline.yaml",
    "DiscreteBCQ": "configs/cartpole_bcq_offline.yaml",
    "DiscreteCRR": "configs/cartpole_crr_offline.yaml",
    "DiscreteIQL": "configs/cartpole_iql_offline.yaml",
    "DiscreteQRDQN": "configs/cartpole_qrdqn_offline.yaml",
    "SAC": "configs/pendulum_sac_offline.yaml",
    "TD3": "configs/pendulum_td3_offline.yaml",
    "TD3+BC": "configs/pendulum_td3bc_offline.yaml",
    "IQL": "configs/pendulum_iql_offline.yaml",
}
DISCRETE = ("DiscreteDQN", "DiscreteCQL", "DiscreteBCQ", "DiscreteCRR", "DiscreteIQL", "DiscreteQRDQN")
#: batchrl's algorithm -> d3rlpy's that train with its config and step count (none for CRR, discrete IQL and
#: QR-DQN: d3rlpy has no discrete CRR or IQL; its QR-DQN is a DQN option left out here). d3rlpy's continuous
#: CQL, SAC with a conservative penalty, has no batchrl counterpart and trains with SAC's settings.
D3RLPY = {"DiscreteDQN": ("DoubleDQN",), "DiscreteCQL": ("DiscreteCQL",), "DiscreteBCQ": ("DiscreteBCQ",),
          "SAC": ("SAC", "CQL"), "TD3": ("TD3",), "TD3+BC": ("TD3PlusBC",), "IQL": ("IQL",)}


def d3rlpy_python() -> str:
    """The d3rlpy venv's python, creating the venv when missing."""
    python = D3RLPY_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(D3RLPY_VENV)], check=True)
        torch_pin = next(line for line in (ROOT / "requirements.lock").read_text().splitlines()
                         if line.startswith("torch=="))
        subprocess.run([str(python), "-m", "pip", "install", "-q", torch_pin, *D3RLPY_PINS], check=True)
    return str(python)


def cell_config(algorithm: str, env: str, action_names: list[str] | None, action_dims: int, seed: int,
                episodes: int) -> dict:
    """The shipped config of ``algorithm`` with only the env, actions, seed and evaluation changed."""
    config = yaml.safe_load((ROOT / ALGORITHMS[algorithm]).read_text())
    config.update(env_name=env, seed=seed, num_eval_episodes=episodes)
    for key in ("max_steps", "passing_score_bar"):
        config.pop(key, None)
    (name, model), = config["model"].items()
    if action_names is not None:
        model["trainer_param"]["actions"] = action_names
    else:
        model["action_float_features"] = [[i, str(i)] for i in range(action_dims)]
    return config


def _network(config: dict) -> dict:
    """Hidden sizes, learning rates (the critic's; the actor's where the config has one), discount, batch size
    and target rate of a batchrl config (for d3rlpy)."""
    (_, model), = config["model"].items()
    builder = model.get("net_builder") or model.get("critic_net_builder") or model.get("q_network_builder") or {}
    sizes = next(iter(builder.values()))["sizes"] if builder else [256, 256]
    trainer = model["trainer_param"]
    optimizer = trainer.get("optimizer") or trainer.get("q_network_optimizer") or {"Adam": {"lr": 1e-3}}
    lr = next(iter(optimizer.values())).get("lr", 1e-3)
    actor_optimizer = trainer.get("actor_network_optimizer")
    actor_lr = next(iter(actor_optimizer.values())).get("lr", 1e-3) if actor_optimizer else lr
    rl = trainer.get("rl", {})
    batch = trainer.get("minibatch_size") or config.get("reader_options", {}).get("minibatch_size") or 256
    return {"hidden": sizes, "lr": lr, "actor_lr": actor_lr, "gamma": rl.get("gamma", 0.99), "batch_size": batch,
            "tau": rl.get("target_update_rate", 0.005)}


#: ``--selection``: the CPE criterion (deliverable 5: the lower end of weighted DR's 95% interval on the eval
#: table, every epoch), and the epochs among which the simulator picks (each checked on CHECK_EPISODES
#: episodes seeded 20,000 + 100 * seed onwards, disjoint from the evaluation seeds).
SELECTION = {"estimator": "WDR", "statistic": "ci_low"}
GYM_CHECK_EVERY = 5
CHECK_EPISODES = 10


def run_batchrl(workdir: pathlib.Path, logged: str, config: dict, episodes: int, selection: bool = False) -> dict:
    """``batchrl run --no-evaluate`` of one cell, then the exported policy's greedy returns over the
    episode seeds 10,000 + seed, ...; mean return, episodes, gradient steps, training seconds.

    With ``selection`` (discrete algorithms) the run also selects a checkpoint by CPE (``SELECTION``);
    ``mean_return`` stays the last epoch's (what the shipped config exports) and ``selection`` holds the
    CPE-selected and the simulator-selected checkpoints' epochs and returns on the same evaluation seeds."""
    from offline_cartpole import greedy_returns

    if selection:
        config = {**config, "checkpoint_selection": SELECTION}
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "batchrl.cli", "run", str(path), "--input", logged, "--workdir",
                           str(workdir / "run"), "--device", "cpu", "--no-evaluate"], capture_output=True, text=True,
                          check=False, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"batchrl run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    training = json.loads((workdir / "run" / "model" / "training_summary.json").read_text())
    model = workdir / "run" / "model"
    evaluation_seed = 10_000 + config["seed"]
    if not selection:
        returns = greedy_returns(str(model / "model.torchscript"), config["env_name"], episodes, seed=evaluation_seed)
        return {"mean_return": float(returns.mean()), "episodes": len(returns),
                "gradient_steps": training["global_step"], "train_seconds": training["seconds"]}
    last, chosen = training["epochs"], training["selected_epoch"]

    def policy_of(epoch: int) -> str:
        """The TorchScript policy of ``epoch`` (the run's own export for the CPE-selected one)."""
        if epoch == chosen:
            return str(model / "model.torchscript")
        from batchrl.config import parse_config
        from batchrl.training.train import export_checkpoint

        out = workdir / "epochs" / f"epoch-{epoch:04d}"
        if not (out / "model.torchscript").exists():
            export_checkpoint(parse_config(config), training["inputs"]["train"], training["inputs"]["normalization"],
                              str(model), epoch, str(out), device="cpu")
        return str(out / "model.torchscript")

    def evaluate(epoch: int) -> float:
        return float(greedy_returns(policy_of(epoch), config["env_name"], episodes, seed=evaluation_seed).mean())

    checked = {epoch: float(greedy_returns(policy_of(epoch), config["env_name"], CHECK_EPISODES,
                                           seed=20_000 + 100 * config["seed"]).mean())
               for epoch in sorted({*range(GYM_CHECK_EVERY, last + 1, GYM_CHECK_EVERY), last})}
    best = max(checked, key=lambda epoch: (checked[epoch], epoch))
    results = {epoch: evaluate(epoch) for epoch in {last, chosen, best}}
    return {"mean_return": results[last], "episodes": episodes, "gradient_steps": training["global_step"],
            "train_seconds": training["seconds"],
            "selection": {"last_epoch": last,
                          "cpe": {"criterion": f"{SELECTION['estimator']} {SELECTION['statistic']}", "epoch": chosen,
                                  "mean_return": results[chosen]},
                          "gym": {"epoch": best, "check_returns": checked, "mean_return": results[best]}}}


def training_episodes(logged: str, config: dict) -> list[str]:
    """The logged episodes ``batchrl run`` trains on: the config's train split (``input_table_spec``'s
    ``table_sample``; the rest, up to ``eval_table_sample``, is the eval table), by prepare's own rule."""
    import pyarrow.parquet as pq

    from batchrl.data.prepare import PrepareOptions, episode_split

    spec = config.get("input_table_spec") or {}
    options = PrepareOptions(**{k: spec[k] for k in ("table_sample", "eval_table_sample") if spec.get(k) is not None})
    files = sorted(pathlib.Path(logged).glob("*.parquet"))
    mdp_ids = {m for f in files for m in pq.read_table(f, columns=["mdp_id"]).column("mdp_id").to_pylist()}
    return sorted(m for m in mdp_ids if episode_split(m, options) == "train")


def run_d3rlpy(logged: str, env: str, algorithm: str, seed: int, network: dict, steps: int, episodes: int,
               standardize: bool = False, critic_layer_norm: bool = False,
               episodes_file: pathlib.Path | None = None) -> dict:
    """d3rlpy's ``algorithm`` on ``logged`` (only the episodes listed in ``episodes_file`` when given)."""
    args = [d3rlpy_python(), str(ROOT / "benchmarks" / "d3rlpy_worker.py"), "--logged", logged, "--env", env,
            "--algorithm", algorithm, "--seed", str(seed), "--hidden", *map(str, network["hidden"]),
            "--batch-size", str(network["batch_size"]), "--lr", str(network["lr"]),
            "--actor-lr", str(network.get("actor_lr", network["lr"])), "--gamma", str(network["gamma"]),
            "--tau", str(network["tau"]), "--target-update-interval", str(max(1, round(1 / network["tau"]))),
            "--steps", str(steps), "--episodes", str(episodes),
            "--eval-seed", str(10_000 + seed), *(["--standardize-observations"] if standardize else []),
            *(["--critic-layer-norm"] if critic_layer_norm else []),
            *(["--episodes-file", str(episodes_file)] if episodes_file else [])]
    proc = subprocess.run(args, capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise RuntimeError(f"d3rlpy {algorithm} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"mean_return": result["mean_return"], "episodes": len(result["returns"]),
            "gradient_steps": result["gradient_steps"], "train_seconds": result["train_seconds"]}


def raw_states(config: dict, env: str) -> dict:
    """``config`` with every state feature passed through unscaled (DO_NOT_PREPROCESS): the observation
    scaling control of ``--observation-scaling swapped``."""
    import gymnasium as gym

    with gym.make(env) as e:
        dims = int(e.observation_space.shape[0])
    (_, model), = config["model"].items()
    options = model.get("state_preprocessing_options") or model.setdefault("preprocessing_options", {})
    options["feature_overrides"] = {i: "DO_NOT_PREPROCESS" for i in range(dims)}
    return config


def _action_space(env: str) -> tuple[list[str] | None, int]:
    import gymnasium as gym

    with gym.make(env) as e:
        space = e.action_space
    if isinstance(space, gym.spaces.Discrete):
        return [str(int(space.start) + i) for i in range(int(space.n))], 0
    return None, int(space.shape[0])


def summary_table(results: dict) -> str:
    """Markdown: per (env, dataset), the logging policy's return and each library's best algorithm (the
    highest mean over its seeds), mean +- std over seeds, with the seeds run."""
    import numpy as np

    by_cell: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = {}
    for r in results["records"]:
        cell = by_cell.setdefault((r["env"], r["dataset"]), {})
        cell.setdefault(r["library"], {}).setdefault(r["algorithm"], []).append(r["mean_return"])
    lines = ["| env | dataset | logging policy | batchrl best (mean +- std, seeds) | d3rlpy best (mean +- std, seeds) |",
             "|---|---|---|---|---|"]
    for (env, dataset), libraries in sorted(by_cell.items()):
        cells = []
        for library in ("batchrl", "d3rlpy"):
            algorithms = libraries.get(library, {})
            if not algorithms:
                cells.append("-")
                continue
            name, returns = max(algorithms.items(), key=lambda item: np.mean(item[1]))
            cells.append(f"{name} {np.mean(returns):.1f} +- {np.std(returns):.1f} ({len(returns)})")
        behavior = results["behavior"].get(f"{env}/{dataset}")
        lines.append(f"| {env} | {dataset} | {'-' if behavior is None else f'{behavior:.1f}'} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def algorithm_table(results: dict, continuous: bool) -> str:
    """Markdown: per (env, dataset) of one action kind, every algorithm's mean over seeds (and the count)."""
    import numpy as np

    names = [a for a in ALGORITHMS if (a not in DISCRETE) == continuous]
    columns = [("batchrl", a) for a in names] + [("d3rlpy", d) for a in names for d in D3RLPY.get(a, ())]
    by_cell: dict[tuple[str, str], dict[tuple[str, str], list[float]]] = {}
    for r in results["records"]:
        if ENVS[r["env"]][0] == continuous:
            by_cell.setdefault((r["env"], r["dataset"]), {}).setdefault((r["library"], r["algorithm"]), []).append(
                r["mean_return"])
    lines = ["| env | dataset | logging | " + " | ".join(f"{lib} {alg}" for lib, alg in columns) + " |",
             "|" + "---|" * (3 + len(columns))]
    for (env, dataset), runs in sorted(by_cell.items()):
        behavior = results["behavior"].get(f"{env}/{dataset}")
        cells = [f"{np.mean(runs[c]):.1f} ({len(runs[c])})" if c in runs else "-" for c in columns]
        lines.append(f"| {env} | {dataset} | {'-' if behavior is None else f'{behavior:.1f}'} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)


def selection_table(results: dict) -> str:
    """Markdown: per (env, dataset, algorithm) with ``--selection`` records, the mean over seeds of the
    greedy return of the last epoch, of the CPE-selected and of the simulator-selected checkpoint."""
    import numpy as np

    rows: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {}
    for r in results["records"]:
        if r["library"] == "batchrl" and "selection" in r:
            chosen = r["selection"]
            rows.setdefault((r["env"], r["dataset"], r["algorithm"]), []).append(
                (r["mean_return"], chosen["cpe"]["mean_return"], chosen["gym"]["mean_return"]))
    lines = ["| env | dataset | algorithm | seeds | last epoch | CPE-selected (WDR ci_low) | simulator-selected |",
             "|---|---|---|---|---|---|---|"]
    for (env, dataset, algorithm), values in sorted(rows.items()):
        last, cpe, gym = np.mean(values, axis=0)
        lines.append(f"| {env} | {dataset} | {algorithm} | {len(values)} | {last:.1f} | {cpe:.1f} | {gym:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--datasets", nargs="+", default=["random", "expert", "medium", "mixed"])
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--libraries", nargs="+", default=["batchrl", "d3rlpy"], choices=["batchrl", "d3rlpy"])
    parser.add_argument("--episodes", type=int, default=30, help="greedy evaluation episodes per run")
    parser.add_argument("--datasets-workdir", default=str(ROOT / "runs" / "datasets"))
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "offline_matrix"))
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--selection", action="store_true",
                        help="discrete algorithms: also report the CPE-selected and the simulator-selected checkpoint")
    parser.add_argument("--observation-scaling", choices=["default", "swapped"], default="default",
                        help="swapped: batchrl on raw states, d3rlpy with its StandardObservationScaler (each library "
                             "with the other's default; records get observation_scaling; use another --results)")
    parser.add_argument("--d3rlpy-critic-layer-norm", action="store_true",
                        help="continuous: d3rlpy's critics with layer norm, like batchrl's IQL config (not "
                             "d3rlpy's default: records get critic_layer_norm; use another --results)")
    parser.add_argument("--d3rlpy-algorithms", nargs="+", choices=sorted({d for ds in D3RLPY.values() for d in ds}),
                        help="run only these of d3rlpy's algorithms (default: every one matching --algorithms)")
    parser.add_argument("--table", action="store_true", help="print the summary table of --results and stop")
    args = parser.parse_args(argv)
    results_file = pathlib.Path(args.results)
    results = json.loads(results_file.read_text()) if results_file.exists() else {"records": [], "behavior": {}}
    if args.table:
        print(summary_table(results))
        for continuous in (False, True):
            print("\n" + algorithm_table(results, continuous))
        if any("selection" in r for r in results["records"]):
            print("\n" + selection_table(results))
        return 0
    behavior = json.loads((ROOT / "benchmarks" / "datasets.json").read_text())
    for env in args.envs:
        continuous, datasets = ENVS[env]
        action_names, action_dims = _action_space(env)
        for dataset in (d for d in args.datasets if d in datasets):
            logged = str(pathlib.Path(args.datasets_workdir) / env / dataset / "logged")
            if env in behavior:  # datasets.py records an env once all its datasets are built
                results["behavior"][f"{env}/{dataset}"] = behavior[env]["datasets"][dataset]["behavior_return"]
            for algorithm in (a for a in args.algorithms if (a not in DISCRETE) == continuous):
                for seed in args.seeds:
                    config = cell_config(algorithm, env, action_names, action_dims, seed, args.episodes)
                    swapped = args.observation_scaling == "swapped"
                    if swapped:
                        config = raw_states(config, env)
                    cell = pathlib.Path(args.workdir) / env / dataset / algorithm / f"seed{seed}"
                    key = {"env": env, "dataset": dataset, "algorithm": algorithm, "seed": seed}
                    rows = []
                    recorded = [r for r in results["records"] if r.get("library") == "batchrl" and
                                {k: r[k] for k in key} == key and "observation_scaling" not in r]
                    if "batchrl" not in args.libraries and recorded:  # d3rlpy only: the recorded run's step count
                        ours = recorded[0]
                    else:
                        ours = run_batchrl(cell, logged, config, args.episodes,
                                           selection=args.selection and algorithm in DISCRETE)
                    scaling = {"observation_scaling": "raw"} if swapped else {}
                    if "batchrl" in args.libraries:
                        rows.append({**key, "library": "batchrl", **ours, **scaling})
                    theirs = [d for d in D3RLPY.get(algorithm, ()) if "d3rlpy" in args.libraries and
                              (args.d3rlpy_algorithms is None or d in args.d3rlpy_algorithms)]
                    if theirs:
                        cell.mkdir(parents=True, exist_ok=True)
                        episodes_file = cell / "d3rlpy_train_episodes.json"
                        episodes_file.write_text(json.dumps(training_episodes(logged, config)))
                    for d3rlpy_algorithm in theirs:
                        rows.append({**key, "library": "d3rlpy", "algorithm": d3rlpy_algorithm,
                                     **run_d3rlpy(logged, env, d3rlpy_algorithm, seed, _network(config),
                                                  ours["gradient_steps"], args.episodes, standardize=swapped,
                                                  critic_layer_norm=args.d3rlpy_critic_layer_norm,
                                                  episodes_file=episodes_file),
                                     "train_episodes": "batchrl_train_split",
                                     **({"observation_scaling": "standardized"} if swapped else {}),
                                     **({"critic_layer_norm": True} if args.d3rlpy_critic_layer_norm else {})})
                    for row in rows:
                        print(json.dumps(row), flush=True)
                        results["records"] = [r for r in results["records"] if
                                              {k: r[k] for k in ("env", "dataset", "library", "algorithm", "seed")}
                                              != {k: row[k] for k in ("env", "dataset", "library", "algorithm", "seed")}]
                        results["records"].append(row)
                    with tempfile.NamedTemporaryFile("w", dir=results_file.parent, delete=False) as fh:
                        json.dump(results, fh, indent=2, sort_keys=True)
                    os.replace(fh.name, results_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
