"""The README and docs/ stay true to the repository: links resolve, contract commands are documented,
and every excerpt of the default playbook equals the file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLAYBOOK = ROOT / "chalicelib" / "retention" / "playbooks" / "default.json"

# The command table of the public contract (CONTRACTS.md, "Commands"), word for word.
CONTRACT_COMMANDS = (
    "make demo",
    "make test",
    "python -m chalicelib demo",
    "python -m chalicelib generate --users N --days D --seed S --as-of DATE --out FILE",
    "python -m chalicelib train --events FILE --cutoff DATE --horizon-days N --out DIR",
    "python -m chalicelib score --model DIR --input FILE --as-of DATE --out FILE",
    "python -m chalicelib evaluate --model DIR --events FILE --cutoff DATE --horizon-days N",
)

# Keys only a playbook has (a retention message has `reasons` too).
PLAYBOOK_ONLY_KEYS = {"act_on_risk_tiers", "default_reason", "rules", "contact_policy", "holdout", "texts"}

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXCERPT = re.compile(r"<!-- excerpt: (\S+) -->\s*\Z")
EXAMPLE = re.compile(r"<!-- example of: (\S+) -->\s*\Z")


def _relative_links(page: Path) -> list[str]:
    """Return the targets of the page's links that point into the repository."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))  # code holds no links
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def _json_blocks(page: Path, marker: re.Pattern[str] = EXCERPT) -> list[tuple[str | None, str]]:
    """Return (what the marker before it names, or None; body) of each ```json block on the page."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        if match.group(1) != "json":
            continue
        named = marker.search(text[: match.start()])
        blocks.append((named.group(1) if named else None, match.group(2)))
    return blocks


def _resolve(document: object, pointer: str) -> object:
    """Return the part of `document` a JSON Pointer (RFC 6901) names."""
    for token in pointer.lstrip("/").split("/") if pointer != "/" else []:
        token = token.replace("~1", "/").replace("~0", "~")
        document = document[int(token)] if isinstance(document, list) else document[token]
    return document


def test_the_readme_guides_and_the_reference_lives_in_docs():
    # Given the README, when its lines are counted, then it is a guide, not a manual
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move reference material to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_points_to_an_existing_file_without_an_anchor(page):
    # Given a page, when each of its relative links is resolved from the page's folder
    broken = []
    for target in _relative_links(page):
        if "#" in target:
            broken.append(f"{target} (anchors break when headings change; link the file)")
        elif not (page.parent / target).resolve().exists():
            broken.append(target)
    # then each names a file or folder that exists
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_the_readme_links_into_every_docs_page():
    # Given the README's links, then every page under docs/ is reachable from it
    linked = {(ROOT / t).resolve() for t in _relative_links(ROOT / "README.md")}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


@pytest.mark.parametrize("command", CONTRACT_COMMANDS)
def test_every_contract_command_is_documented(command):
    # Given the README and the docs, then each command of the contract appears in them exactly as written
    assert any(command in page.read_text(encoding="utf-8") for page in PAGES), f"undocumented: {command}"


def test_every_playbook_excerpt_equals_the_default_playbook():
    # Given the default playbook file and every JSON block marked as an excerpt of it
    playbook = json.loads(PLAYBOOK.read_text(encoding="utf-8"))
    excerpts = [(page, pointer, body) for page in PAGES for pointer, body in _json_blocks(page) if pointer]
    assert excerpts, "docs/playbook.md shows no excerpt of the default playbook"
    for page, pointer, body in excerpts:
        # when the excerpt is parsed and the part of the file it names is looked up
        try:
            part = _resolve(playbook, pointer)
        except (KeyError, IndexError, ValueError) as exc:
            pytest.fail(f"{page.relative_to(ROOT)}: excerpt {pointer} names nothing in {PLAYBOOK.name}: {exc}")
        # then the two are equal
        assert json.loads(body) == part, f"{page.relative_to(ROOT)}: excerpt {pointer} differs from {PLAYBOOK.name}"


def test_no_page_holds_an_unchecked_copy_of_the_playbook():
    # Given every JSON block that is not marked as an excerpt
    for page in PAGES:
        for pointer, body in _json_blocks(page):
            if pointer:
                continue
            # then it is not playbook material, which would drift from the file unseen
            assert page.name != "playbook.md", f"docs/playbook.md: a JSON block without an excerpt marker:\n{body}"
            value = json.loads(body)
            assert not (isinstance(value, dict) and PLAYBOOK_ONLY_KEYS & value.keys()), (
                f"{page.relative_to(ROOT)}: a copy of the playbook; show it as a marked excerpt instead"
            )


def test_every_example_is_valid_against_the_schema_it_names():
    # Given every JSON block marked as an example of a schema in schemas/
    examples = [(page, schema, body) for page in PAGES for schema, body in _json_blocks(page, EXAMPLE) if schema]
    assert examples, "docs/scores-and-messages.md shows no example retention message"
    for page, schema, body in examples:
        # when it is validated against that schema, then it passes
        validator = Draft202012Validator(json.loads((ROOT / schema).read_text(encoding="utf-8")))
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(json.loads(body))
        ]
        assert not errors, f"{page.relative_to(ROOT)}: example of {schema} is invalid: {errors}"


def _floats(text: str) -> list[float]:
    return [float(number) for number in re.findall(r"[-+]?\d+\.\d+", text.replace("−", "-"))]


def test_the_model_cards_proof_states_the_figures_measured_in_docs():
    from churnguard_offline.model_card import _PROOF

    # GIVEN the three-seed proof table of docs/model.md, whose sixth column is each run's gap
    rows = [line for line in (ROOT / "docs" / "model.md").read_text().splitlines() if re.match(r"\| [ABC] \|", line)]
    card = [line for line in _PROOF if line.startswith("| ")][1:]  # the card's table below its header: a row a scenario
    # THEN the card gives, per scenario, the lowest and highest gap the docs measured
    assert len(rows) == 9 and len(card) == 3
    for scenario, line in zip("ABC", card, strict=True):
        gaps = [_floats(row.split("|")[6])[0] for row in rows if row.startswith(f"| {scenario} |")]
        stated = _floats(line.split("|")[5])
        assert stated == [min(gaps), max(gaps)], (scenario, stated, gaps)


def test_the_committed_model_card_is_the_card_this_code_writes_for_its_manifest():
    from churnguard_offline.model_card import card_text

    # GIVEN the committed model's manifest and card; THEN the card is what the code writes for that manifest now,
    # so a changed sentence of the card's code reaches the shipped card too
    manifest = json.loads((ROOT / "model_artifacts" / "manifest.json").read_text())
    assert (ROOT / "model_artifacts" / "model_card.md").read_text().rstrip("\n") == card_text(manifest).rstrip("\n")


def test_the_committed_model_card_states_the_proof_this_code_writes():
    from churnguard_offline.model_card import _PROOF

    # GIVEN the committed model's card, written when it was trained, and the proof section the code writes now
    card = (ROOT / "model_artifacts" / "model_card.md").read_text()
    # THEN the card carries that section as it stands, so a re-measured proof reaches the shipped card too
    assert "\n".join(_PROOF) in card


# What the docs' excerpts of scores, items and messages print as the model that made them.
QUOTED_MODEL = re.compile(
    r"[\"']?model_version[\"']?\s*[:=]\s*[\"']?(churn-[0-9a-f-]+)|,(churn-\d{8}-[0-9a-f]{8})\r?$", re.MULTILINE
)


def test_every_excerpt_of_the_functions_output_names_the_committed_model():
    # Given the committed model's version and the pages' excerpts of output (scores CSV rows, DynamoDB items, messages)
    committed = json.loads((ROOT / "model_artifacts" / "manifest.json").read_text())["model_version"]
    quoted = {(page.name, a or b) for page in PAGES for a, b in QUOTED_MODEL.findall(page.read_text(encoding="utf-8"))}
    # Then there are some, and each was made by the model in model_artifacts/: a retrained model means new excerpts
    assert {name for name, _ in quoted} >= {"README.md", "scores-and-messages.md"}
    assert {version for _, version in quoted} == {committed}, sorted(quoted)
