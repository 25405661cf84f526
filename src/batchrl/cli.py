"""The ``batchrl`` command line: one subcommand per stage, each a thin caller of the engine.

Each module in :data:`COMMANDS` defines ``register(subparsers)``, which adds its parser and sets
``func(args) -> int``. Errors a user can cause (:class:`BatchRLError`) print one message and exit 2.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import logging
import os
import re
import sys
import threading

from batchrl import __version__
from batchrl.errors import BatchRLError

#: Subcommand modules under ``batchrl.commands``, in the order ``--help`` lists them.
COMMANDS = (
    "generate",
    "validate",
    "timeline",
    "normalize",
    "prepare",
    "train",
    "gym_train",
    "evaluate",
    "cpe",
    "run",
    "pipeline",
    "doctor",
)


def invoked_command(argv: list[str]) -> str | None:
    """The module of the subcommand ``argv`` invokes, when nothing but ``-v`` flags comes before it; else None.

    ``main`` then registers that subcommand alone: a stage's process does not import the other commands'
    modules (Kubernetes, kfp, torch), which would add a fraction of a second to every stage.
    """
    for token in argv:
        if re.fullmatch(r"-v+|--verbose", token):
            continue
        module = token.replace("-", "_")
        return module if module in COMMANDS and not token.startswith("-") else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or with the one in module ``only``."""
    parser = argparse.ArgumentParser(
        prog="batchrl",
        description="Batch (offline) reinforcement learning: logged data -> timeline -> normalization -> "
        "training -> counterfactual evaluation -> TorchScript, locally or as Kubeflow Pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"batchrl {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in (only,) if only else COMMANDS:
        importlib.import_module(f"batchrl.commands.{name}").register(sub)
    return parser


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("batchrl").setLevel(logging.INFO if verbosity == 0 else level)
    for noisy in ("py4j", "urllib3", "botocore", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


#: The cyclic garbage collector's first threshold in a ``batchrl`` process (CPython's default is 700).
GC_FIRST_THRESHOLD = 50_000
#: Subcommands whose process ends without tearing the interpreter down (:func:`exit_without_teardown`).
TEARDOWN_FREE = ("validate", "timeline", "normalize", "prepare")


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand (``argv``: the arguments after ``batchrl``; None: this process's own).

    As the process's entry point (``argv`` None) it collects cyclic garbage less often: importing
    SQLFrame, sqlglot, pydantic and pyarrow allocates millions of long-lived objects, and at CPython's
    default threshold the collector traverses them again and again while they load, then once more at
    exit; with a first threshold of 50,000 and the objects frozen before exit, ``batchrl timeline`` on
    1M rows took 2.69 s instead of 3.0 s (medians of 6 interleaved runs, 2-core machine). Called with
    ``argv`` (tests, other programs) it leaves the collector alone.
    """
    if argv is None:
        gc.set_threshold(GC_FIRST_THRESHOLD, *gc.get_threshold()[1:])
    try:
        code = _run(argv)
    finally:
        if argv is None:
            gc.freeze()  # the process ends: the final collections need not traverse what it loaded
    if argv is None and invoked_command(sys.argv[1:]) in TEARDOWN_FREE:
        exit_without_teardown(code)
    return code


def exit_without_teardown(code: int) -> None:
    """End a data stage's process without the interpreter's teardown, when nothing else is running.

    When a data stage returns, its output is committed (``_SUCCESS`` last) or aborted, and its writers
    are closed. What interpreter shutdown still does after the exit handlers is free the objects of every
    loaded module, one by one: SQLFrame, sqlglot, pydantic and pyarrow are millions of them, 0.1-0.15 s of
    a ``batchrl timeline`` on 1M rows (about 2.5 s). So the exit handlers run (logging's flush, library
    cleanup), the standard streams are flushed and the process exits at once (``os._exit``). Where another
    non-daemon thread is still alive, which a normal exit would wait for, it returns and the usual exit
    follows.
    """
    if any(t is not threading.main_thread() and t.is_alive() and not t.daemon for t in threading.enumerate()):
        return None
    atexit._run_exitfuncs()  # what shutdown runs first (atexit's documented handlers, in order)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: as at a normal exit, nothing more to write
            pass
    os._exit(code)


def _run(argv: list[str] | None) -> int:
    parser = build_parser(invoked_command(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except BatchRLError as exc:
        print(f"batchrl {args.command}: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"batchrl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
