"""`batchrl generate`: logged data from a gymnasium environment."""

from __future__ import annotations

import argparse

from batchrl.commands._common import build_options, print_summary


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("generate", help="log decisions of a policy in a gymnasium env as a Parquet table",
                       description="Run a logging policy in a gymnasium environment and write the logged "
                       "table (mdp_id, sequence_number, state_features, action, reward, possible_actions, "
                       "action_probability, ds, metrics, end_reason).")
    p.add_argument("--env", default="CartPole-v0", help="gymnasium id (default CartPole-v0)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--transitions", type=int, help="number of transitions to log")
    budget.add_argument("--episodes", type=int, help="number of whole episodes to log")
    p.add_argument("--policy", choices=["random", "epsilon-greedy", "softmax", "gaussian", "heuristic-softmax",
                                        "myopic"], default="random",
                   help="gaussian: truncated Gaussian noise around a continuous-action model's action (Box spaces); "
                   "heuristic-softmax (softmax of the environment's item score at --temperature) and myopic: "
                   "candidate-set environments such as batchrl/Recommendation-v0")
    p.add_argument("--model", help="TorchScript policy (model.torchscript) for epsilon-greedy/softmax/gaussian")
    p.add_argument("--epsilon", type=float, help="exploration rate of epsilon-greedy (default 0.1)")
    p.add_argument("--temperature", type=float, help="softmax temperature (default 1.0)")
    p.add_argument("--noise", type=float, help="gaussian: stddev in normalized [-1, 1] action units, i.e. a "
                   "fraction of half the action range (default 0.1)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--ds", default="2019-01-01", help="dataset partition id written to every row")
    p.add_argument("--num-envs", type=int, help="environments stepped together (default 16)")
    p.add_argument("--max-steps", type=int, help="episode time limit (default: the environment's own)")
    p.add_argument("--output", required=True, help="output dataset URI (path, file:// or s3://)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from batchrl.data.gym_logging import GenerateOptions, generate

    options = build_options(GenerateOptions, "batchrl generate", env=args.env, transitions=args.transitions,
                            episodes=args.episodes, policy=args.policy, model=args.model,
                            epsilon=args.epsilon, temperature=args.temperature, noise=args.noise, seed=args.seed, ds=args.ds,
                            num_envs=args.num_envs, max_steps=args.max_steps)
    print_summary(generate(args.output, options))
    return 0
