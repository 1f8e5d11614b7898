"""The command line explains itself: --version, a help text and a shown default for every flag, unknown flags named."""

from __future__ import annotations

import argparse

import pytest

from chalicelib import __version__
from churnguard_offline.arguments import DefaultsFormatter
from churnguard_offline.cli import build_parser, main


def _flags_without_help(parser: argparse.ArgumentParser, path: str = "") -> list[str]:
    """Return "command --flag: what is wrong" for every argument of every command without help or a shown default."""
    found: list[str] = []
    formatter = DefaultsFormatter(prog=parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _flags_without_help(sub, f"{path} {name}".strip())
            continue
        name = f"{path} {'/'.join(action.option_strings) or action.dest}".strip()
        shown = formatter._get_help_string(action) % vars(action) if action.help else ""
        takes_default = action.option_strings and not action.required
        special = isinstance(action, (argparse._HelpAction, argparse._VersionAction))
        if not shown.strip():
            found.append(f"{name}: no help")
        elif takes_default and not special and "default" not in shown:
            found.append(f"{name}: no default shown")
    return found


def test_every_flag_of_every_command_has_help_and_shows_its_default():
    # GIVEN the parser of every command  WHEN each argument's help is rendered as --help shows it
    missing = _flags_without_help(build_parser())
    # THEN none is without help, and every optional flag says its default
    assert missing == []


def test_the_walk_finds_a_flag_without_help_or_default():
    # GIVEN a command with one flag without help and one whose help hides its None default
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    planted = sub.add_parser("planted")
    planted.add_argument("--bare", type=int, default=3)
    planted.add_argument("--hidden", default=None, help="says nothing of what happens unset")
    # WHEN walked  THEN both are named
    assert _flags_without_help(parser) == ["planted --bare: no help", "planted --hidden: no default shown"]


def test_help_shows_the_default_of_a_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "rolling origins, one horizon apart (default: 8)" in out
    assert "(default: median annual spend)" in out and "(default: every user)" in out


def test_version_prints_the_project_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"churnguard {__version__}"


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            "train --events e.csv --cutoff 2026-01-01 --horizon-day 30 --out m",
            "train: error: unknown argument --horizon-day (did you mean --horizon-days?)",
        ),
        ("score --inptu e.csv --out s.csv", "score: error: unknown argument --inptu (did you mean --input?)"),
        ("score --input=e.csv --out s.csv --as_of 2026-01-01", "unknown argument --as_of (did you mean --as-of?)"),
        ("--verison", "python -m chalicelib: error: unknown argument --verison (did you mean --version?)"),
        ("generate --users 3 --days 2 --out g.csv --zzz 1", "generate: error: unknown argument --zzz"),
        ("replay obj-1 --stag dev", "replay: error: unknown argument --stag (did you mean --stage?)"),
        ("scroe --inptu e.csv", "python -m chalicelib: error: argument command: invalid choice: 'scroe'"),
    ],
)
def test_a_misspelled_flag_is_named_in_a_one_line_error_exiting_2(argv, error, capsys):
    # WHEN a command is given a flag it does not know (even with its required flags missing)
    with pytest.raises(SystemExit) as exc:
        main(argv.split())
    # THEN it exits 2 with one line naming that flag and the one meant, not a missing flag
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and error in err and "required" not in err


def test_a_flag_is_never_abbreviated(capsys):
    # An abbreviation accepted today would break the day a flag with the same start is added.
    with pytest.raises(SystemExit) as exc:
        main(["score", "--inp", "e.csv", "--out", "s.csv"])
    assert exc.value.code == 2
    assert "unknown argument --inp (did you mean --input?)" in capsys.readouterr().err


def test_negative_numbers_and_values_after_a_flag_are_not_taken_for_flags():
    # GIVEN values that start with a dash, and a flag joined to its value
    args = build_parser().parse_args(["generate", "--users", "3", "--days", "2", "--seed", "-1", "--out=-.csv"])
    # THEN they are values, as argparse reads them
    assert args.seed == -1 and str(args.out) == "-.csv"


def test_a_hostile_run_id_is_a_usage_error_before_any_aws_call(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["replay", "obj-1/../../runs/x"])
    assert exc.value.code == 2
    assert "not a run id" in capsys.readouterr().err


def test_the_console_script_names_itself_in_its_errors(capsys):
    # GIVEN the name the console script runs under  WHEN a command fails on its input
    assert main(["score", "--input", "/nonexistent/e.csv", "--out", "s.csv"], prog="churnguard") == 2
    # THEN the error line says churnguard
    assert capsys.readouterr().err.startswith("churnguard score: error: /nonexistent/e.csv: no such file")


def test_demo_outside_a_checkout_is_a_usage_error_saying_where_it_runs(tmp_path, monkeypatch, capsys):
    # GIVEN an installed copy: no app.py beside the packages
    from churnguard_offline import demo

    monkeypatch.setattr(demo, "ROOT", tmp_path)
    # WHEN the demo is asked for  THEN it exits 2 saying it runs from a checkout
    assert main(["demo"], prog="churnguard") == 2
    assert capsys.readouterr().err == (
        f"churnguard demo: error: {tmp_path}: no app.py here; the demo runs the app of a checkout "
        "(make demo, in the repository)\n"
    )


def test_evaluate_takes_the_population_and_the_data_end_and_train_the_data_end():
    parser = build_parser()
    base = ["evaluate", "--events", "e.csv", "--cutoff", "2026-10-02", "--horizon-days", "30"]
    assert parser.parse_args(base).population == "all"
    args = parser.parse_args([*base, "--population", "active", "--data-end", "2026-11-01"])
    assert args.population == "active" and args.data_end == 1793491200.0
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--population", "everyone"])
    train = ["train", "--events", "e.csv", "--cutoff", "2026-10-02", "--horizon-days", "30", "--out", "m"]
    assert parser.parse_args([*train, "--data-end", "2026-11-01"]).data_end == 1793491200.0
