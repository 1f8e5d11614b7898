"""Progress of train and score: one line per step with its time, an ETA on a terminal, nothing with --quiet."""

from __future__ import annotations

import csv
import io
import re
import time

import pytest

from churnguard_offline import cli
from churnguard_offline.cli import main
from churnguard_offline.generate import generate_events, write_event_log
from churnguard_offline.progress import Steps, clock_text, each
from tests.unit.runs.test_runs_on_fakes import AS_OF


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_each_step_is_one_line_with_the_time_since_the_start_and_its_own_when_not_a_terminal():
    # GIVEN steps written to a log (not a terminal), each taking a known time
    out, clock = io.StringIO(), Clock()
    with Steps(out, clock=clock) as steps:
        steps("reading events.csv")
        clock.now += 2.5
        steps("fitting hgb on 1,000 rows")
        assert list(steps.each(range(3), 3, "origin")) == [0, 1, 2]
        clock.now += 70
    # THEN each step is one line, written when it ends: the time since the start, then the step's own
    assert out.getvalue().splitlines() == [
        "[0:00:02] reading events.csv: 2.5s",
        "[0:01:12] fitting hgb on 1,000 rows: 70.0s",
    ]
    assert steps.elapsed == 72.5


def test_quiet_steps_say_nothing_and_a_failing_step_leaves_its_line_to_the_error():
    out = io.StringIO()
    with Steps(out, quiet=True) as steps:
        steps("reading")
    assert out.getvalue() == ""
    with pytest.raises(ValueError), Steps(out) as steps:
        steps("reading")
        raise ValueError("bad file")
    assert out.getvalue() == ""


def test_on_a_terminal_a_counted_step_shows_a_bar_with_the_time_left():
    # GIVEN a terminal
    out = Terminal()
    with Steps(out) as steps:
        steps("scoring 120,000 users")
        # WHEN a step counts its work
        counted = steps.each(range(0, 120_000, 50_000), 120_000, "user", size=lambda s: min(50_000, 120_000 - s))
        chunks = [time.sleep(0.15) or start for start in counted]  # tqdm redraws at most every 0.1 s
    # THEN the step is shown while it runs, a tqdm bar counts the users with the time left, and the line ends it
    text = out.getvalue()
    assert chunks == [0, 50_000, 100_000]
    assert "scoring 120,000 users …" in text and "50.0k/120k" in text and "user/s" in text and "<00:0" in text
    assert re.search(r"\x1b\[K\[0:00:00\] scoring 120,000 users: 0\.\ds\n$", text)


def test_each_counts_only_for_steps_and_passes_other_callbacks_through():
    said: list[str] = []
    assert list(each(said.append, [1, 2], 2, "origin")) == [1, 2] and said == []


def test_clock_text_is_hours_minutes_seconds():
    assert [clock_text(s) for s in (0, 59.9, 61, 3725)] == ["0:00:00", "0:00:59", "0:01:01", "1:02:05"]


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "events.csv"
    write_event_log(generate_events(130, 200, 5, AS_OF), path)
    return path


def test_score_in_chunks_writes_the_same_rows_as_in_one_and_says_its_steps(log, tmp_path, monkeypatch, capsys):
    # GIVEN the same file scored in one chunk and in chunks of 40 users
    assert main(["score", "--input", str(log), "--out", str(tmp_path / "one.csv")]) == 0
    whole = capsys.readouterr().err
    monkeypatch.setattr(cli, "SCORE_CHUNK_USERS", 40)
    assert main(["score", "--input", str(log), "--out", str(tmp_path / "chunks.csv")]) == 0
    chunked = capsys.readouterr().err
    # THEN the CSVs are identical, one header, every user once
    one, chunks = (list(csv.reader((tmp_path / n).open())) for n in ("one.csv", "chunks.csv"))
    users = len(one) - 1
    assert one == chunks and one[0][0] == "user_id" and users == len({row[0] for row in one[1:]}) > 80
    # AND the summary line is the same, after one line per step
    assert whole.splitlines()[-1].split(": ", 1)[1] == chunked.splitlines()[-1].split(": ", 1)[1]
    steps = [line for line in chunked.splitlines() if line.startswith("[")]
    assert [s.split("] ", 1)[1].rsplit(":", 1)[0] for s in steps] == [
        f"reading {log} and loading the model",
        f"building the state of {users} users",
        f"scoring {users} users",
    ]


def test_score_quiet_prints_only_the_result_lines(log, tmp_path, capsys):
    assert main(["score", "--quiet", "--input", str(log), "--out", str(tmp_path / "s.csv")]) == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("[")]


def test_an_empty_file_scored_as_of_a_date_still_writes_the_header(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("user_id,event_time,event_type,value\n")
    out = tmp_path / "s.csv"
    args = ["score", "--allow-missing-signals", "--input", str(empty), "--as-of", "2026-06-01", "--out", str(out)]
    assert main(args) == 0
    assert out.read_text().splitlines() == [
        "user_id,as_of,churn_probability,risk_tier,value_tier,reasons,action,model_version"
    ]
    assert "0 users scored as of 2026-06-01" in capsys.readouterr().err


@pytest.mark.slow  # trains a (small) model
def test_train_says_each_step_with_its_time_and_counts_the_origins_on_a_terminal(tmp_path, monkeypatch, capsys):
    # GIVEN a small history, and stderr a terminal
    events = tmp_path / "events.csv"
    write_event_log(generate_events(800, 240, 3, AS_OF), events)
    terminal = Terminal()
    monkeypatch.setattr(cli, "Steps", lambda quiet: Steps(terminal, quiet=quiet))
    # WHEN a model is trained
    assert main(f"train --events {events} --cutoff 2026-05-02 --horizon-days 30 --out {tmp_path / 'm'}".split()) == 0
    # THEN every step ends in one line with its time: the read, the features, each candidate, calibration, plots
    lines = [line.rsplit("\x1b[K", 1)[-1] for line in terminal.getvalue().splitlines() if "] " in line]
    steps = [re.fullmatch(r"\[\d:\d\d:\d\d\] (.*): \d+\.\ds", line).group(1) for line in lines]
    assert steps[0] == f"reading {events}" and steps[1].startswith("building features and labels at ")
    assert any(s.startswith("fitting ") for s in steps) and steps[-1] == "writing the model card and plots"
    # AND the origins were counted on a bar
    assert "origin/s" in terminal.getvalue()
    # AND the result line says the whole time
    assert re.search(r"m: \S+ \(.*\) in \d+\.\ds; ", capsys.readouterr().err)


def test_on_a_terminal_a_read_counts_the_bytes_of_the_file(log):
    out = Terminal()
    with Steps(out) as steps, open(log, "rb") as raw:
        steps("reading events.csv")
        with steps.reading(raw) as stream:
            while stream.read(1 << 10):
                time.sleep(0.002)
    assert "reading events.csv:" in out.getvalue() and "B/s" in out.getvalue()


def test_train_of_an_unreadable_path_is_one_line_naming_it(tmp_path, capsys):
    # A directory where the log should be: named on one line, exit 2, as read_event_file does
    (tmp_path / "events.csv").mkdir()
    args = ["train", "--events", str(tmp_path / "events.csv"), "--cutoff", "2026-05-02", "--horizon-days", "30"]
    assert main([*args, "--out", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.endswith(f"{tmp_path / 'events.csv'}: no such file\n")
