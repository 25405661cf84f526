"""Running a CLI subcommand group in-process, as ``batchrl`` runs it (a BatchRLError exits 2)."""

from __future__ import annotations

import argparse
import sys

from batchrl.commands.pipeline_cluster import register_cluster_actions
from batchrl.errors import BatchRLError


def cluster_cli(capsys, *argv):
    """``batchrl pipeline <action>`` as the CLI runs it (BatchRLError -> exit 2)."""
    parser = argparse.ArgumentParser(prog="batchrl pipeline")
    register_cluster_actions(parser.add_subparsers(dest="action", required=True))
    args = parser.parse_args([str(a) for a in argv])
    try:
        code = args.func(args)
    except BatchRLError as exc:
        print(f"batchrl pipeline: error: {exc.message}", file=sys.stderr)
        code = 2
    out = capsys.readouterr()
    return code, out.out, out.err
