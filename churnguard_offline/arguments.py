"""How the command line explains itself: every flag's default in its help, and a misspelled flag named as such."""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Sequence

# What argparse itself takes for a negative number, which is a value (`--seed -1`), never a flag.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: …)" after each optional flag's help, unless the help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required or action.default in (None, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action) or text


def unknown_option(parser: argparse.ArgumentParser, args: Sequence[str]) -> str | None:
    """Return the error for the first flag in `args` that `parser` does not know, or None when all are known.

    A parser with subcommands is checked up to its command's name; the command's own parser checks the rest.
    """
    commands = _command_names(parser)
    for token in args:
        if token == "--" or (commands and not token.startswith("-")):
            return None  # the command's name (or a mistyped one, which argparse names): its parser checks the rest
        if not token.startswith("-") or token == "-" or _NEGATIVE_NUMBER.match(token):
            continue
        flag = token.split("=", 1)[0]
        if flag not in parser._option_string_actions:
            return _unknown(flag, parser)
    return None


def _unknown(flag: str, parser: argparse.ArgumentParser) -> str:
    """Return "unknown argument FLAG", with the closest flag the parser knows when one is close."""
    known = [option for option in parser._option_string_actions if option.startswith("--")]
    close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
    return f"unknown argument {flag}" + (f" (did you mean {close[0]}?)" if close else "")


def _command_names(parser: argparse.ArgumentParser) -> frozenset[str]:
    """Return the names of the parser's subcommands (none for a command's own parser)."""
    names: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            names.update(action.choices)
    return frozenset(names)
