"""One command-line grammar: every command's parser is read (as `--help` shows it) and the flags shared
between commands must mean the same thing: same destination, type, number of values, action and
choices. Spellings that were retired for a shared one must not come back."""

from __future__ import annotations

import argparse
from collections import defaultdict

import pytest

from corl.cli import build_parser, main

# Commands that compute with torch (their --threads bounds the CPU threads they use).
COMPUTE_COMMANDS = {"train", "demo", "pilot", "eval", "generate", "answer", "merge", "reproduce",
                    "shapes make-base"}
# Commands that take key=value overrides (positional, as `corl train` does).
OVERRIDE_COMMANDS = {"train", "demo", "pilot", "plan", "reproduce", "config show"}
RETIRED = {"--set", "--eval-rows", "--max-eval-rows", "--no-resume", "--overwrite", "--n"}


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every leaf command ('train', 'shapes build', ...) -> its parser."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                nested = commands(child, f"{prefix}{name} ")
                found.update(nested or {f"{prefix}{name}": child})
    return found


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    return commands(build_parser())


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings if not isinstance(a, argparse._HelpAction)}


def signature(action: argparse.Action) -> tuple:
    return (action.dest, getattr(action.type, "__name__", action.type), action.nargs, type(action).__name__,
            tuple(action.choices) if action.choices else None)


def test_every_command_has_help_and_the_debug_flags(parsers):
    assert len(parsers) >= 15
    for name, parser in parsers.items():
        assert parser.format_help().strip(), name
        assert {"-v", "--verbose", "--debug"} <= set(options(parser)), name


def test_shared_flags_agree_between_commands(parsers):
    by_flag = defaultdict(dict)
    for name, parser in parsers.items():
        for flag, action in options(parser).items():
            by_flag[flag][name] = signature(action)
    disagreements = {flag: uses for flag, uses in by_flag.items() if len(set(uses.values())) > 1}
    assert not disagreements, disagreements
    used = set(by_flag)
    assert not used & RETIRED, used & RETIRED
    seeds = {name: a for name, p in parsers.items() for f, a in options(p).items() if f == "--seeds"}
    assert seeds and all(a.nargs == "+" for a in seeds.values())  # several seeds: one flag, a list


def test_compute_commands_take_threads_and_overrides_are_positional(parsers):
    for name in COMPUTE_COMMANDS:
        assert "--threads" in options(parsers[name]), name
    for name in OVERRIDE_COMMANDS:
        positional = [a for a in parsers[name]._actions if not a.option_strings and a.dest == "overrides"]
        assert len(positional) == 1 and positional[0].nargs == "*", name


def test_resume_takes_no_value(parsers):
    """`--resume train.max_steps=4` must not read the override as a checkpoint path."""
    assert options(parsers["train"])["--resume"].nargs == 0
    args = build_parser().parse_args(["train", "r", "--out", "o", "--resume", "train.max_steps=4"])
    assert args.resume and args.resume_from is None and args.overrides == ["train.max_steps=4"]


@pytest.mark.parametrize("flag", ["-v", "--debug"])
def test_debug_flags_work_before_and_after_any_command(flag):
    parser = build_parser()
    for argv in (["train", "r", "--out", "o", flag], [flag, "train", "r", "--out", "o"],
                 ["shapes", "show", "--data", "d", flag], ["config", "show", "r", flag]):
        args = parser.parse_args(argv)
        assert args.verbose or args.debug, argv


def test_help_of_every_command_exits_zero(parsers, capsys):
    for name in parsers:
        assert main([*name.split(), "--help"]) == 0, name
        assert "usage: corl" in capsys.readouterr().out
