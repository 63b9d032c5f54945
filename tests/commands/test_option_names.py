"""One name per concept on the command line: each option's name, and the older spellings
that stay accepted as aliases, parse to the same setting."""

from __future__ import annotations

import argparse

import pytest

from streams.commands.cli import build_parser

CASES = [
    # (command line with the name, the same with an older spelling, dest, value)
    (["report", "--alerts", "a.jsonl"], ["report", "--alerts-file", "a.jsonl"],
     "alerts_file", "a.jsonl"),
    (["report", "--alerts-topic", "t"], ["report", "--topic", "t"], "topic", "t"),
    (["report", "--alerts", "-", "--from", "2025-02-24"],
     ["report", "--alerts", "-", "--since", "2025-02-24"], "since", None),
    (["replay", "--deadletter-topic", "d"], ["replay", "--dead-letters-topic", "d"],
     "dead_letters_topic", "d"),
    (["replay", "--log-level", "info"], ["replay", "--loglevel", "info"], "loglevel", "info"),
    (["worker", "--log-level", "info"], ["worker", "-l", "info"], "loglevel", "info"),
    (["scan", "x.jsonl", "--processes", "3"], ["scan", "x.jsonl", "--workers", "3"], "workers", 3),
]


@pytest.mark.parametrize(("new", "old", "dest", "value"), CASES)
def test_a_name_and_its_older_spelling_set_the_same_option(
        new: list[str], old: list[str], dest: str, value: object) -> None:
    parser = build_parser()
    a, b = getattr(parser.parse_args(new), dest), getattr(parser.parse_args(old), dest)
    assert a == b and a is not None
    if value is not None:
        assert a == value


def test_worker_log_level_comes_from_its_environment_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKING_VALIDATOR_LOG_LEVEL", "error")
    assert build_parser().parse_args(["worker"]).loglevel == "error"


def test_worker_stall_seconds_is_an_option() -> None:
    assert build_parser().parse_args(["worker", "--stall-seconds", "12"]).stall_seconds == 12.0


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_flag_has_help_text(command: str) -> None:
    parser = _commands()[command]
    missing = [
        "/".join(action.option_strings) for action in parser._actions
        if action.option_strings and action.help != argparse.SUPPRESS
        and not (action.help or "").strip()
    ]
    assert missing == [], f"{command}: flags without help text: {missing}"
    assert parser.format_help()  # renders (a bad % in a help text raises here)


def test_top_level_flags_have_help_text() -> None:
    parser = build_parser()
    assert all((a.help or "").strip() for a in parser._actions if a.option_strings)
