"""The command line as a user meets it: help for every option, a version."""

from __future__ import annotations

import argparse
import re

import pytest

from pipeline.cli import build_parser, main


def test_when_a_user_asks_for_help_then_every_option_of_every_command_has_some() -> None:
    parser = build_parser()
    missing = [("privacy-pipeline", a.dest) for a in parser._actions if not a.help]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            missing += [(name, a.dest) for name, sub in action.choices.items()
                        for a in sub._actions if not a.help]
    assert missing == []


def test_when_asked_for_the_version_then_it_prints_it_and_exits_zero(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.fullmatch(r"privacy-pipeline \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)
