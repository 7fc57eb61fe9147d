"""Every command and sub-command answers --help (argparse formats each help string with %:
a bare % in one of them crashed `superserve bench --help`)."""

from __future__ import annotations

import argparse

import pytest

from superserve.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


@pytest.mark.parametrize("path", [p for p, _ in _parsers(build_parser())],
                         ids=lambda p: " ".join(p) or "superserve")
def test_every_command_formats_its_help(path):
    parser = dict(_parsers(build_parser()))[path]
    text = parser.format_help()
    assert "usage:" in text
