"""The ways in that users of the ecosystem expect: `python -m istpan`, global options anywhere on the line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from istpan import __version__
from istpan.cli.main import build_parser, main
from istpan.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_python_dash_m_istpan_is_the_istpan_command():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "istpan", "--version"], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == f"istpan {__version__}"
    bad = subprocess.run([sys.executable, "-m", "istpan", "configs", "--show", "no-such-config"], capture_output=True,
                         text=True, env=env, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.startswith("error: no-such-config")


@pytest.mark.parametrize("argv", [
    ["-v", "configs"], ["configs", "-v"], ["configs", "--verbose"], ["data", "check", "--config", "x", "-v"],
    ["-v", "data", "check", "--config", "x"],
])
def test_verbose_is_accepted_before_and_after_the_subcommand(argv):
    assert build_parser().parse_args(argv).verbose is True


def test_verbose_defaults_to_off_wherever_it_could_be_given():
    assert build_parser().parse_args(["configs"]).verbose is False
    assert build_parser().parse_args(["data", "check", "--config", "x"]).verbose is False


def test_verbose_after_the_subcommand_shows_the_traceback(capsys):
    assert main(["configs", "--show", "no-such-config"]) == 2  # one line
    assert capsys.readouterr().err.startswith("error: no-such-config")
    with pytest.raises(UserError, match="no-such-config"):  # -v: the full traceback, as before the subcommand
        main(["configs", "--show", "no-such-config", "-v"])


@pytest.mark.parametrize("argv", [["--version"], ["train", "--version"], ["data", "check", "--version"]])
def test_version_wherever_it_is_given(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"istpan {__version__}"
