"""`batchrl train`: train an offline agent (discrete or continuous actions) on prepared tables and export it."""

from __future__ import annotations

import argparse

from batchrl.commands._common import print_summary


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train an offline agent (DQN, CQL, QR-DQN, C51, BCQ, CRR, IQL; SAC, TD3 "
                       "for continuous actions) on prepared tables; write checkpoints, TensorBoard events and "
                       "model.torchscript",
                       description="Train the model a workflow config names (model: {DiscreteDQN | DiscreteCQL | "
                       "DiscreteQRDQN | DiscreteC51DQN | DiscreteBCQ | DiscreteCRR | DiscreteIQL | SAC | TD3: ...}) "
                       "on a prepared training table, evaluate on the eval table every epoch (TD loss, Q-values, "
                       "CPE for discrete actions), and write the model directory: model.torchscript, "
                       "training_summary.json, checkpoints/, tensorboard/.")
    p.add_argument("--config", required=True, help="workflow config (YAML, ReAgent's shape)")
    p.add_argument("--train", required=True, help="prepared training table URI")
    p.add_argument("--eval", required=True, help="prepared eval table URI")
    p.add_argument("--normalization", required=True, help="normalization JSON URI")
    p.add_argument("--output", required=True, help="model directory URI (path, file:// or s3://)")
    p.add_argument("--device", help="auto (default: CUDA when present), cpu, cuda or cuda:N; overrides the config")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in the output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from batchrl.config import load_config
    from batchrl.training.train import train

    config = load_config(args.config)
    print_summary(train(config, args.train, args.eval, args.normalization, args.output, device=args.device,
                        resume=args.resume))
    return 0
