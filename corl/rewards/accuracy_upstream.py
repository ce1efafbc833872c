"""`accuracy_upstream`: R_acc as the official ULM-R1 code scores it (mm-vl/ULM-R1, `qa_accuracy`), for the
`official` recipe family. corl's own `accuracy` (accuracy.py) is stricter; the differences are the point
of having both.

Per completion and solution:
- the reference: the first <answer>...</answer> on one line of the solution, else the whole solution;
- the answer: the first <answer>...</answer> on one line of the completion; WITHOUT one, the completion
  itself with <think>...</think> blocks, stray tags and the words "Answer:" / "Answer" removed (so an
  untagged answer can earn full credit);
- 1.0 when they are equal after lower-casing, stripping and dropping the answer's trailing "."s, or when
  one of them is a single English number word whose value is the other ("two" vs "2");
- else the soft Jaccard index of their word sets (lower-cased, split on whitespace; the answer's trailing
  ".,!?" dropped): exact common words count 1, and each remaining answer word matched greedily to the
  most similar unmatched reference word with a difflib ratio >= 0.8 counts that ratio;
  score = matched / (|A| + |S| - matched). Multiple-choice rows get this too: the official code's
  multiple-choice branch compares the question-type COLUMN (a list) with "MC" and never runs.
Quirks kept on purpose (this is what the official run optimized): partial credit for wrong answers, no
tag needed. One is not kept: the official code walks the answer's words in set order, which depends on
Python's hash seed; here they are walked in sorted order, so scores are reproducible.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Any

from corl.rewards.registry import register_function
from corl.rewards.text import completion_text, replace_number_words

SOFT_MATCH_THRESHOLD = 0.8
_TAGGED_RE = re.compile(r"<answer>(.*?)</answer>")  # no DOTALL: one line, as upstream
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)


def reference_text(solution: Any) -> str:
    solution = str(solution)
    match = _TAGGED_RE.search(solution)
    return match.group(1).strip() if match else solution.strip()


def answer_text(completion: str) -> str:
    match = _TAGGED_RE.search(completion)
    if match:
        return match.group(1).strip()
    text = _THINK_RE.sub("", completion)
    for piece in ("<think>", "</think>", "<answer>", "</answer>", "Answer:", "Answer"):
        text = text.replace(piece, "")
    return text.strip()


def _number_value(word: str) -> str | None:
    """'two' -> '2' for one English number word; None otherwise."""
    converted = replace_number_words([word])
    return converted[0] if converted != [word] and len(converted) == 1 else None


def loosely_equal(answer: str, reference: str) -> bool:
    a, r = answer.rstrip(".").lower().strip(), reference.lower().strip()
    return a == r or _number_value(a) == r or (_number_value(r) is not None and _number_value(r) == a)


def soft_jaccard(answer: str, reference: str, threshold: float = SOFT_MATCH_THRESHOLD) -> float:
    words_a, words_r = set(answer.lower().split()), set(reference.lower().split())
    exact = words_a & words_r
    soft, taken = 0.0, set()
    for word in sorted(words_a - exact):
        best, best_ratio = None, 0.0
        for candidate in sorted(words_r - exact - taken):
            ratio = SequenceMatcher(None, word, candidate).ratio()
            if ratio > best_ratio and ratio >= threshold:
                best, best_ratio = candidate, ratio
        if best is not None:
            soft += best_ratio
            taken.add(best)
    matched = len(exact) + soft
    union = len(words_a) + len(words_r) - matched
    return matched / union if union else 0.0


def upstream_score(completion: str, solution: Any) -> float:
    answer, reference = answer_text(completion), reference_text(solution)
    if loosely_equal(answer, reference):
        return 1.0
    return soft_jaccard(answer.rstrip(".,!?"), reference)


def accuracy_upstream(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """The official code's accuracy per completion (module docstring); None where the row has no solution."""
    if "solution" not in columns:
        raise KeyError("accuracy_upstream needs a 'solution' column")
    return [None if solution is None else upstream_score(completion_text(c), solution)
            for c, solution in zip(completions, columns["solution"], strict=True)]


register_function("accuracy_upstream", accuracy_upstream)
