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
