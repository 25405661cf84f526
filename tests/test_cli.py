"""The CLI surface: help lists every subcommand, version, errors exit 2 without a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from batchrl import __version__
from batchrl.cli import COMMANDS, build_parser


def test_help_lists_every_subcommand_with_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert len(sub._choices_actions) == len(COMMANDS)  # every module registered one subcommand
    text = parser.format_help()
    for action in sub._choices_actions:
        assert action.dest in text
        assert action.help, f"{action.dest} has no one-line help"


def test_version():
    out = subprocess.run([sys.executable, "-m", "batchrl.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


def test_missing_input_is_a_clear_error(cli, tmp_path):
    code, _, err = cli("validate", "--input", tmp_path / "nothing")
    assert code == 2
    assert "dataset not found" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [[], ["generate"]])
def test_usage_errors_exit_2(argv):
    out = subprocess.run([sys.executable, "-m", "batchrl.cli", *argv], capture_output=True, text=True)
    assert out.returncode == 2


@pytest.mark.parametrize(("argv", "module"), [
    (["timeline", "--input", "x"], "timeline"), (["-v", "gym-train"], "gym_train"), (["-vv", "run"], "run"),
    (["--verbose", "prepare"], "prepare"), (["--help", "timeline"], None), (["--version"], None), ([], None),
    (["bogus"], None), (["-x", "timeline"], None),
])
def test_a_stage_process_registers_only_its_own_subcommand(argv, module):
    from batchrl.cli import invoked_command

    assert invoked_command(argv) == module
    if module:
        sub = next(a for a in build_parser(module)._actions if a.dest == "command")
        assert [a.dest for a in sub._choices_actions] == [module.replace("_", "-")]


def test_a_stage_process_does_not_import_other_commands_modules():
    probe = ("import sys, contextlib, io\nfrom batchrl.cli import main\n"
             "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
             "    main(['timeline', '--help'])\n"
             "print(sorted(m for m in ('yaml', 'kfp', 'torch', 'kubernetes', 'batchrl.kube.sparkapp') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_entry_point_collects_garbage_less_often_and_freezes_before_exit():
    probe = ("import contextlib, gc, io, sys\nfrom batchrl import cli\nsys.argv = ['batchrl', 'timeline', '--help']\n"
             "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n    cli.main()\n"
             "print(gc.get_threshold()[0], gc.get_freeze_count() > 0)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    from batchrl.cli import GC_FIRST_THRESHOLD

    assert out.stdout.split() == [str(GC_FIRST_THRESHOLD), "True"]


def test_a_call_with_arguments_leaves_the_collector_alone(cli, tmp_path):
    import gc

    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    code, _, _ = cli("validate", "--input", tmp_path / "nothing")
    assert code == 2
    assert gc.get_threshold() == threshold and gc.get_freeze_count() == frozen


def test_a_data_stage_process_exits_without_teardown_and_keeps_its_output(tmp_path):
    """A data stage's process ends with os._exit once its output is committed: the exit handlers still
    run (a registered one prints), the summary is on stdout, the exit code is the stage's, and the output
    is committed; a failing stage still exits 2 with its one error."""
    from batchrl.data.gym_logging import GenerateOptions, generate

    logged = str(tmp_path / "logged")
    generate(logged, GenerateOptions(transitions=300, seed=0))
    probe = ("import atexit, sys\nfrom batchrl import cli\n"
             "atexit.register(lambda: print('exit handler ran', file=sys.stderr))\n"
             "sys.argv = ['batchrl', *sys.argv[1:]]\nsys.exit(cli.main())\n")
    out = subprocess.run([sys.executable, "-c", probe, "validate", "--input", logged], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert '"rows"' in out.stdout and "exit handler ran" in out.stderr
    out = subprocess.run([sys.executable, "-c", probe, "timeline", "--input", logged, "--output",
                          str(tmp_path / "tl"), "--start-ds", "2000-01-01", "--end-ds", "2100-12-31",
                          "--add-terminal-state-row"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "tl" / "_SUCCESS").exists() and '"output_rows"' in out.stdout
    out = subprocess.run([sys.executable, "-c", probe, "validate", "--input", str(tmp_path / "nothing")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "dataset not found" in out.stderr and "exit handler ran" in out.stderr
