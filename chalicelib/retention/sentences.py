"""Whether a rendered message reads as a correct sentence: what a customer would notice at a glance.

The playbook loader runs these checks over every template with every offer and reason it could be filled
with, so a template that cannot compose with an offer stops a deployment instead of reaching a customer.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter

# Where a sentence ends: Latin punctuation before a space, or a CJK full stop, exclamation or question mark.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
_PUNCTUATION = ".,;:!?。，；：！？、"
_DOUBLED_PUNCTUATION = re.compile(f"[{_PUNCTUATION}]\\s*[{_PUNCTUATION}]")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*|\d+%?")
# The same word twice with only space between ("you! You" is two sentences, not a doubled word).
_DOUBLED_WORD = re.compile(r"\b([^\W\d_]+)\s+\1\b", re.IGNORECASE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+")
# Words that may recur in a short message without reading as a repetition ("for you ... to you").
_FUNCTION_WORDS = frozenset(
    {
        "a",
        "an",
        "the",
        "of",
        "to",
        "for",
        "in",
        "on",
        "at",
        "by",
        "with",
        "from",
        "and",
        "or",
        "but",
        "as",
        "is",
        "are",
        "be",
        "was",
        "our",
        "your",
        "you",
        "we",
        "us",
        "it",
        "its",
        "this",
        "that",
        "so",
        "if",
        "than",
        "then",
        "there",
        "here",
    }
)
# Runs of this many CJK characters seen twice read as a repeated phrase (two-character words recur naturally).
CJK_PHRASE = 3


def problems(text: str) -> list[str]:
    """Return what is wrong with a rendered message (empty when it reads as correct sentences)."""
    found = [*_layout_problems(text), *_case_problems(text), *_repetitions(text)]
    return list(dict.fromkeys(found))


def _layout_problems(text: str) -> list[str]:
    """Return the placeholders left, stray spaces and punctuation of a text."""
    found = []
    if not text.strip():
        return ["the text is empty"]
    if "{" in text or "}" in text:
        found.append("a placeholder is left")
    if text != text.strip():
        found.append("space at the start or end")
    if "  " in text or re.search(r"\s[,.;:!?]", text):
        found.append("a double space or a space before punctuation")
    if _DOUBLED_PUNCTUATION.search(text):
        found.append("doubled punctuation")
    if text.rstrip()[-1] not in ".!?。！？":
        found.append("the last sentence has no full stop")
    return found


def _case_problems(text: str) -> list[str]:
    """Return the sentences that start lower-case (in scripts that have case)."""
    found = []
    for sentence in _SENTENCE_END.split(text.strip()):
        first = next((c for c in sentence if c.isalnum()), "")
        if first.islower():
            found.append(f"a sentence starts lower-case: {sentence[:40]!r}")
    return found


def _repetitions(text: str) -> list[str]:
    """Return doubled words ("the the") and phrases said twice ("your next order ... your next order")."""
    found = [f"a doubled word: {m.group(1).lower()!r}" for m in _DOUBLED_WORD.finditer(text)]
    words = [w.lower() for w in _WORD.findall(text)]
    pairs = Counter((a, b) for a, b in itertools.pairwise(words) if not {a, b} <= _FUNCTION_WORDS)
    found += [f"a phrase said twice: {' '.join(pair)!r}" for pair, n in sorted(pairs.items()) if n > 1]
    return [*found, *_cjk_repetitions(text)]


def _cjk_repetitions(text: str) -> list[str]:
    """Return the runs of CJK_PHRASE CJK characters that occur twice in `text`, without overlapping."""
    runs = _CJK.findall(text)
    seen = Counter(run[i : i + CJK_PHRASE] for run in runs for i in range(len(run) - CJK_PHRASE + 1))
    return [f"a phrase said twice: {p!r}" for p, n in seen.items() if n > 1 and text.count(p) > 1]
