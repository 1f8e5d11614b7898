"""`train --sample-users N`: the same users on every run, every activity stratum at one rate, memory by N."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pytest

from chalicelib.ingest import parse_timestamp, read_event_file
from churnguard_offline.cli import main
from churnguard_offline.generate import generate_events, write_event_log
from churnguard_offline.sampling import (
    choose_sample,
    count_population,
    read_sample,
    sampled_events,
    strata,
    user_hash,
)
from tests.conftest import ROOT

CUTOFF = parse_timestamp("2026-05-02")
AS_OF = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    """A generated log of 1,500 users over 200 days, as CSV."""
    path = tmp_path_factory.mktemp("sampling") / "events.csv"
    write_event_log(generate_events(1500, 200, 5, AS_OF), path)
    return path


def _rows(path) -> tuple[str, list[str]]:
    header, *rows = path.read_text().splitlines()
    return header, rows


def _sampled_users(path, n: int) -> set[str]:
    events, _, _ = sampled_events(path, n, CUTOFF, None)
    return set(events.user_ids)


def test_the_same_users_are_sampled_whatever_the_row_order_format_or_compression(log, tmp_path):
    # GIVEN the same events shuffled, and again as gzip-compressed JSON Lines
    header, rows = _rows(log)
    random.Random(3).shuffle(rows)
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("\n".join([header, *rows]) + "\n")
    as_jsonl = tmp_path / "events.jsonl.gz"
    write_event_log(read_event_file(log).events, as_jsonl)

    # WHEN 300 users are sampled from each
    users = [_sampled_users(path, 300) for path in (log, shuffled, as_jsonl)]

    # THEN the very same 300 users come out of all three
    assert len(users[0]) == 300
    assert users[0] == users[1] == users[2]


def test_the_hash_rule_is_blake2b_of_the_user_id_read_big_endian():
    # A fixed value: the rule must give the same users on every machine, Python and run (no salted hash()).
    assert user_hash("u00001") == int.from_bytes(hashlib.blake2b(b"u00001", digest_size=8).digest())
    assert user_hash("u00001") == 0xA06F47A9D4BAC95B


def test_each_activity_stratum_is_sampled_at_the_same_rate(log):
    # GIVEN the population of the log at the cutoff
    population = count_population(log, CUTOFF, None)

    # WHEN a tenth of it is sampled
    n = len(population) // 10
    sample = choose_sample(population, n, CUTOFF)

    # THEN exactly n users are taken, and each stratum's count is its share of n, to within one user
    assert sample.hashes.shape[0] == n == sample.record["users_used"]
    rate = n / len(population)
    for stratum in sample.record["strata"]:
        assert abs(stratum["sampled"] - stratum["population"] * rate) < 1
    # AND the sampled users' strata, recomputed from the population, are what the record says
    taken = np.isin(population.hashes, sample.hashes)
    counts = np.bincount(strata(population, CUTOFF)[taken])
    assert sorted(c for c in counts.tolist() if c) == sorted(
        s["sampled"] for s in sample.record["strata"] if s["sampled"]
    )
    assert sum(s["population"] for s in sample.record["strata"]) == len(population)


def test_within_a_stratum_the_lowest_hashes_are_taken(log):
    population = count_population(log, CUTOFF, None)
    sample = choose_sample(population, len(population) // 5, CUTOFF)
    stratum = strata(population, CUTOFF)
    taken = np.isin(population.hashes, sample.hashes)
    for s in np.unique(stratum).tolist():
        inside = stratum == s
        if taken[inside].any() and (~taken[inside]).any():
            assert population.hashes[inside & taken].max() < population.hashes[inside & ~taken].min()


def test_the_sample_read_holds_exactly_the_sampled_users_events(log):
    # GIVEN the whole log read as train reads it
    full = read_event_file(log).events

    # WHEN 200 users are sampled
    events, population, sample = sampled_events(log, 200, CUTOFF, None)

    # THEN the sample holds every event of those users and nothing else
    chosen = set(sample.hashes.tolist())
    keep = np.array([user_hash(u) in chosen for u in full.user_ids])[full.user_index]
    expected = full.select(keep)
    assert set(events.user_ids) == set(expected.user_ids)
    as_rows = lambda b: sorted(  # noqa: E731 - a local shorthand
        zip(
            [b.user_ids[i] for i in b.user_index],
            b.time.tolist(),
            b.type_code.tolist(),
            np.nan_to_num(b.value, nan=-1.0).tolist(),
        )
    )
    assert as_rows(events) == as_rows(expected)
    # AND the first pass accounted for every row of the file
    assert population.rows_read == population.rows_accepted == len(full)


def test_users_seen_only_after_the_cutoff_are_not_in_the_population(tmp_path):
    # GIVEN one user with history and one who first appears after the cutoff
    path = tmp_path / "e.csv"
    path.write_text("user_id,event_time,event_type\nold,2026-04-01,login\nold,2026-05-10,login\nnew,2026-05-10,login\n")

    # WHEN the population is counted THEN only the user known at the cutoff is in it, with their activity
    population = count_population(path, CUTOFF, None)
    assert population.hashes.tolist() == [user_hash("old")]
    assert population.events.tolist() == [1]
    assert population.last_seen.tolist() == [parse_timestamp("2026-04-01")]


def test_rejected_rows_are_counted_and_ids_are_sampled_as_the_reader_strips_them(tmp_path):
    # GIVEN a user written once with spaces around the id, and rows the reader rejects
    path = tmp_path / "e.csv"
    path.write_text(
        "user_id,event_time,event_type\n a ,2026-04-01,login\na,2026-04-02,login\nb,garbage,login\n,2026-04-01,login\n"
        '"broken,2026-04-01,login\n'
    )
    population = count_population(path, CUTOFF, None)

    # THEN " a " and "a" are one user, and the bad rows are counted as rejected
    assert population.hashes.tolist() == [user_hash("a")]
    assert population.events.tolist() == [2]
    assert population.rows_accepted == 2 and population.rows_rejected >= 2
    assert population.rows_read == population.rows_accepted + population.rows_rejected


def test_a_sample_larger_than_the_population_is_everyone_with_a_warning(log):
    population = count_population(log, CUTOFF, None)
    sample = choose_sample(population, len(population) + 1, CUTOFF)
    assert sample.hashes.tolist() == population.hashes.tolist()
    assert sample.warning and "training on all of them" in sample.warning
    assert sample.record["users_used"] == len(population) and sample.record["rate"] == 1.0


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (pytest), VmHWM starts anew at exec.
_PEAK_RSS = """
import re, sys
from pathlib import Path
from chalicelib.ingest import parse_timestamp, read_event_file
from churnguard_offline.sampling import sampled_events
path, how = Path(sys.argv[1]), sys.argv[2]
def peak_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
before = peak_kib()
if how == "whole":
    read_event_file(path)
else:
    sampled_events(path, int(how), parse_timestamp("2026-05-02"), None)
print(peak_kib() - before)
"""


def _peak_kib(path, how: str) -> int:
    """Return how far the peak RSS of a fresh process rose while it read the file (KiB)."""
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(path), how], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.slow  # generates and reads logs of 70,000 and 290,000 events in fresh processes
def test_reading_a_sample_holds_memory_by_the_sample_not_by_the_log(tmp_path):
    # GIVEN the same 6,000 users over 100 days, and over 400 days: four times the events
    short, long = tmp_path / "short.csv.gz", tmp_path / "long.csv.gz"
    write_event_log(generate_events(6000, 100, 9, AS_OF), short)
    write_event_log(generate_events(6000, 400, 9, AS_OF), long)

    # WHEN each is read whole, and read as a sample of 40 users (both passes)
    whole = _peak_kib(long, "whole") - _peak_kib(short, "whole")
    sampled = _peak_kib(long, "40") - _peak_kib(short, "40")

    # THEN the whole read's peak grows with the events, and the sample's hardly at all
    assert whole > 6 * 1024, whole
    assert sampled < whole / 4, (sampled, whole)


def test_a_sample_of_no_user_is_a_usage_error(log, capsys):
    with pytest.raises(SystemExit) as exc:
        main(f"train --events {log} --cutoff 2026-05-02 --horizon-days 30 --out m --sample-users 0".split())
    assert exc.value.code == 2
    assert "--sample-users" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_sample_with_too_few_churners_exits_2_with_one_line_naming_the_sample(log, tmp_path, capsys):
    # WHEN training on 60 users, too few to hold 50 churners and 50 stayers
    argv = f"train --events {log} --cutoff 2026-05-02 --horizon-days 30 --out {tmp_path / 'm'} --sample-users 60"
    assert main(argv.split()) == 2

    # THEN the one error line says the sample is what is short, and no model is written
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "too few" in line and "sample of 60 of" in line and "raise --sample-users" in line and str(log) in line
    assert not (tmp_path / "m" / "manifest.json").exists()


def test_a_sample_of_a_missing_file_exits_2_naming_it(tmp_path, capsys):
    argv = f"train --events {tmp_path / 'nope.csv'} --cutoff 2026-05-02 --horizon-days 30 --out m --sample-users 9"
    assert main(argv.split()) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("bad.csv", "user,when\nu1,2026-01-01\n", "event_time"),
        (
            "late.csv",
            "user_id,event_time,event_type\nu1,2026-05-10,login\nu1,2026-06-10,login\n",
            "no events at or before the cutoff",
        ),
    ],
    ids=["without_the_required_columns", "with_no_user_before_the_cutoff"],
)
def test_a_sample_of_an_unusable_file_exits_2_naming_it_and_the_problem(tmp_path, capsys, name, text, said):
    events = tmp_path / name
    events.write_text(text)
    argv = f"train --events {events} --cutoff 2026-05-02 --horizon-days 30 --out {tmp_path / 'm'} --sample-users 9"
    assert main(argv.split()) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert name in line and said in line


@pytest.mark.slow  # trains a model: left to make test
def test_train_on_a_sample_records_it_in_the_manifest_and_the_model_card(log, tmp_path, capsys):
    # WHEN a model is trained on 1,000 of the users
    out = tmp_path / "model"
    argv = f"train --events {log} --cutoff 2026-05-02 --horizon-days 30 --out {out} --sample-users 1000"
    assert main(argv.split()) == 0

    # THEN the manifest records the sample: N requested and used, the population, the strata and the hash rule
    sample = json.loads((out / "manifest.json").read_text())["training_data"]["sample"]
    assert sample["users_requested"] == sample["users_used"] == 1000
    assert sample["population_users"] > 1000 and sample["rate"] == round(1000 / sample["population_users"], 6)
    assert "blake2b" in sample["hash_rule"] and sum(s["sampled"] for s in sample["strata"]) == 1000
    # AND the model card says it
    assert "Trained on a sample** of 1,000 of the" in (out / "model_card.md").read_text()
    # AND the sample's users are the ones the sampler names
    assert "sample: 1,000 of" in capsys.readouterr().err


def test_a_gzip_log_is_sampled_as_its_plain_text_is(log, tmp_path):
    compressed = tmp_path / "events.csv.gz"
    compressed.write_bytes(gzip.compress(log.read_bytes()))
    population = count_population(log, CUTOFF, None)
    assert read_sample(compressed, choose_sample(population, 50, CUTOFF), None).user_ids
    assert _sampled_users(compressed, 50) == _sampled_users(log, 50)
