"""``--help`` of the stream-pipeline commands: every option explained, grouped, with its default stated."""

from __future__ import annotations

import argparse

import pytest

from textsam_eus.cli import build_parser


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _options(p: argparse.ArgumentParser):
    return [a for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("command", ["stream", "demo", "annotate"])
def test_every_option_has_help_and_states_its_default(command):
    p = _subparser(command)
    for action in _options(p):
        name = action.option_strings[-1]
        assert action.help and action.help is not argparse.SUPPRESS, f"{command} {name} has no help text"
        text = p._get_formatter()._expand_help(action)
        takes_value = action.nargs != 0
        if takes_value and action.default not in (None, [], argparse.SUPPRESS) and not action.required:
            assert "default" in text, f"{command} {name}: the default ({action.default!r}) is not stated"


def test_stream_options_are_grouped():
    p = _subparser("stream")
    titles = {g.title: [a.option_strings[-1] for a in g._group_actions] for g in p._action_groups}
    for title, member in (("input", "--source"), ("model and engine", "--checkpoint"), ("outputs", "--out"),
                          ("outputs", "--masks"), ("live view", "--serve"), ("live view", "--linger"),
                          ("input", "--max-frames"), ("model and engine", "--refine-prompts")):
        assert member in titles.get(title, []), f"{member} is not in the {title!r} group"
    ungrouped = [o for o in titles.get("options", []) if o not in ("--help", "-h")]
    assert not ungrouped, f"options outside any group: {ungrouped}"
    text = p.format_help()
    for needle in ("(default: demo)", "(default: auto)", "(default: png)", "(default: box+centroid"):
        assert needle in text.replace("\n", " ").replace("  ", " ") or needle in " ".join(text.split()), needle
