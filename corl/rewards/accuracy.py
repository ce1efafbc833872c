"""R_acc: accuracy of an understanding answer against the row's `solution`.

Answer extraction. The answer is the content of the last <answer>...</answer> pair. A completion with no
complete pair scores 0.0 by default: the format reward alone should not carry the burden of teaching the
tag, and scoring the whole free text would reward answers hidden in the reasoning.
`require_answer_tag=False` scores the whole completion (with <think> blocks removed) instead.

Multiple choice (`accuracy_mc`). The options are parsed from the question: lines such as "A. red",
"B) blue", "(C) green", "D: yellow" (or, if no such lines, the same markers inline). The answer names a
letter when it is (in this order of precedence), after NFKC normalization (full-width "Ｂ" is "B"):
0. never when it names two or more different option letters, whatever the wording ("A or B", "either A
   or C", "A/B", "A, B", "both A and D", "(a) or (b)", "B, not A"): a hedge scores 0.0, so a policy
   cannot collect the reward by listing options;
1. a lone letter, any case, optionally in brackets or with a trailing "." / ":" ("b", "(B)", "B.");
2. a cue word ("answer", "option", "choice", then optionally "is" / ":") followed by a letter: at the
   start in any case ("The answer is B.", "answer: b"), or anywhere with a capital letter when all such
   cues name the same letter ("..., so the correct option is C");
3. a letter marker at the start followed by text ("(B) red", "B. red"): the LETTER wins even if the
   text after it names another option (the marker is the model's explicit choice);
4. the text of exactly one option: equal after `normalize_answer`, or else contained as a whole phrase
   in the answer with no other option contained (an option contained in a longer matched option, like
   "red" in "dark red", does not count as a second match);
5. exactly one distinct standalone capital letter that is a valid option letter ("I pick C"), where "A"
   followed by a lower-case word is read as the article, not the option.
Anything else (several letters, several options, nothing) names no letter and scores 0.0. The solution
("<answer>B</answer>", "B", "(B)", or the option text) is parsed the same way.

Open ended (`accuracy_oe`). 1.0 when `normalize_answer(answer) == normalize_answer(solution)` (case,
punctuation, articles, whitespace, number words vs digits: "2" == "two"), else 0.0; with
`partial_credit=True` the score is the token Jaccard index |A & S| / |A | S| of the normalized token
MULTISETS instead (1.0 on an exact match; multisets, so "two two two" does not fully match "two").
The solution may be a list of acceptable answers: the best counts.

`accuracy` dispatches per row on the `question_type` column: "multiple_choice" / "mc" / "multi_choice"
/ "choice" -> MC, "open_ended" / "oe" / "free_form" / "short_answer" / "numerical" / "yes_no" -> OE;
a row without a (known) type is MC when its solution names an option letter of options parsed from its
question, else OE. `accuracy_mc` / `accuracy_oe` return None (does not apply) on rows whose
`question_type` says the other format; a row with no solution gets None too.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from corl.rewards.registry import RewardFn, register_factory
from corl.rewards.text import completion_text, extract_tag, normalize_answer, strip_think, tokenize_normalized

logger = logging.getLogger(__name__)

MC_TYPES = frozenset({"multiple_choice", "multiple-choice", "mc", "multi_choice", "choice", "mcq"})
OE_TYPES = frozenset(
    {
        "open_ended",
        "open-ended",
        "oe",
        "free_form",
        "free-form",
        "short_answer",
        "numerical",
        "yes_no",
        "open",
    }
)

# "A. red" / "A) red" / "(A) red" / "A: red" / "[A] red" at the start of a line.
_OPTION_LINE_RE = re.compile(r"^\s*[\(\[]?([A-Z])(?:[\)\]]|[\.\):])\s*(\S.*?)\s*$")
# The same markers inline: "Options: A. red B. blue" (the letter must follow start, whitespace or "(").
_OPTION_INLINE_RE = re.compile(r"(?:(?<=\s)|^)[\(\[]?([A-Z])(?:[\)\]]|[\.\):])\s+")
_LONE_LETTER_RE = re.compile(r"^[\(\[]?([A-Za-z])[\)\]]?[\.:]?$")
_LEAD_IN_RE = re.compile(
    r"^(?:(?:so|thus|therefore|hence)\s*,?\s*)?(?:the\s+)?(?:final\s+|correct\s+|best\s+)*"
    r"(?:answer|option|choice)(?:\s+is)?\s*[:=]?\s*",
    re.IGNORECASE,
)
# A cue word (any case) then an upper-case letter: "answer is B", "Option: C" (never the article "a").
_CUE_RE = re.compile(r"\b(?i:answer|option|choice)\s*(?i:is\s*)?[:=]?\s*[\(\[]?([A-Z])(?![A-Za-z])")
_MARKER_RE = re.compile(r"^(?:[\(\[]([A-Za-z])[\)\]]|([A-Za-z])[\.\):])(?:\s+|$)")
_STANDALONE_CAPITAL_RE = re.compile(r"(?<![A-Za-z'])([A-Z])(?![A-Za-z'])")
_BRACKETED_LETTER_RE = re.compile(r"[\(\[]([A-Za-z])[\)\]]")
# After "A", these words make it an option letter in a list ("A or B"), not the article ("A red one").
_LIST_WORDS = frozenset({"or", "and", "nor", "vs", "versus", "plus", "then", "maybe", "perhaps", "also", "but",
                         "not", "either", "both", "and/or"})


def parse_options(question: str | None) -> dict[str, str]:
    """Option letter -> option text parsed from a question ({} when fewer than two options are found)."""
    if not question:
        return {}
    options: dict[str, str] = {}
    for line in question.splitlines():
        match = _OPTION_LINE_RE.match(line)
        if match and match.group(1) not in options:
            options[match.group(1)] = match.group(2)
    if len(options) >= 2 and _consecutive(options):
        return options
    # Inline fallback: split the text at the option markers.
    markers = list(_OPTION_INLINE_RE.finditer(question))
    inline: dict[str, str] = {}
    for k, marker in enumerate(markers):
        end = markers[k + 1].start() if k + 1 < len(markers) else len(question)
        text = question[marker.end() : end].strip().rstrip(",;")
        if text and marker.group(1) not in inline:
            inline[marker.group(1)] = text.splitlines()[0].strip()
    if len(inline) >= 2 and _consecutive(inline):
        return inline
    return {}


def _consecutive(options: dict[str, str]) -> bool:
    """Options must be lettered A, B, C, ... in order (guards against a stray "I." or "X)" in the text)."""
    return list(options) == [chr(ord("A") + i) for i in range(len(options))]


def extract_choice(answer: str, options: dict[str, str] | None = None) -> str | None:
    """The option letter an answer names (rules 1-5 in the module docstring), or None."""
    options = options or {}
    valid = set(options) if options else {chr(c) for c in range(ord("A"), ord("Z") + 1)}
    text = " ".join(unicodedata.normalize("NFKC", answer).split())
    if not text:
        return None
    # Rule 0: a hedge names no letter.
    if len(named_letters(text, valid, options)) >= 2:
        return None
    # Rule 1: a lone letter.
    match = _LONE_LETTER_RE.match(text)
    if match and match.group(1).upper() in valid:
        return match.group(1).upper()
    # Rule 2: a lead-in, then the rest is parsed like a fresh answer (lone letter or marker).
    stripped = _LEAD_IN_RE.sub("", text, count=1)
    if stripped != text and stripped:
        match = _LONE_LETTER_RE.match(stripped)
        if match and match.group(1).upper() in valid:
            return match.group(1).upper()
        text_after_lead_in = stripped
    else:
        text_after_lead_in = text
    cued = {m.group(1).upper() for m in _CUE_RE.finditer(text)} & valid
    if len(cued) == 1:
        return cued.pop()
    # Rule 3: a leading letter marker followed by text.
    match = _MARKER_RE.match(text_after_lead_in)
    if match:
        letter = (match.group(1) or match.group(2)).upper()
        if letter in valid and (match.group(1) or match.group(2).isupper() or options):
            return letter
    # Rule 4: option text.
    letter = _match_option_text(text_after_lead_in, options)
    if letter is not None:
        return letter
    # Rule 5: exactly one standalone capital letter, "A" + lower-case word being the article.
    letters = named_letters(text, valid, options)
    return letters.pop() if len(letters) == 1 else None


def named_letters(text: str, valid: set[str], options: dict[str, str]) -> set[str]:
    """The valid option letters `text` names: standalone capitals ("A" before a lower-case word is the
    article unless that word joins a list, as in "A or B"; "I" is the pronoun unless it is an option) and
    bracketed letters of either case ("(b)")."""
    letters = {m.group(1).upper() for m in _BRACKETED_LETTER_RE.finditer(text)}
    for m in _STANDALONE_CAPITAL_RE.finditer(text):
        letter = m.group(1)
        if letter == "A":
            following = re.match(r"\s+([a-z][a-z/]*)", text[m.end() :])
            if following and following.group(1) not in _LIST_WORDS:
                continue
        if letter == "I" and "I" not in options:
            continue
        letters.add(letter)
    return letters & valid


def _match_option_text(answer: str, options: dict[str, str]) -> str | None:
    """Letter of the one option whose normalized text equals, or else is contained in, the answer."""
    if not options:
        return None
    norm_answer = normalize_answer(answer)
    if not norm_answer:
        return None
    norm_options = {letter: normalize_answer(text) for letter, text in options.items()}
    equal = [letter for letter, text in norm_options.items() if text and text == norm_answer]
    if len(equal) == 1:
        return equal[0]
    if equal:
        return None  # two options with the same text: ambiguous
    padded = f" {norm_answer} "
    contained = [letter for letter, text in norm_options.items() if text and f" {text} " in padded]
    # Drop options contained in another contained option ("red" inside "dark red").
    maximal = [
        letter
        for letter in contained
        if not any(
            other != letter
            and f" {norm_options[letter]} " in f" {norm_options[other]} "
            and norm_options[other] != norm_options[letter]
            for other in contained
        )
    ]
    return maximal[0] if len(maximal) == 1 else None


def answer_span(completion: Any, require_answer_tag: bool = True) -> str | None:
    """The answer text of a completion (module docstring), or None when it has no answer."""
    text = completion_text(completion)
    tagged = extract_tag(text, "answer")
    if tagged is not None:
        return tagged
    if require_answer_tag:
        return None
    return strip_think(text)


def _solution_text(solution: Any) -> str:
    """A solution string without its <answer> tags ("<answer>B</answer>" -> "B")."""
    text = completion_text(solution)
    tagged = extract_tag(text, "answer")
    return (tagged if tagged is not None else text).strip()


def mc_score(answer: str | None, solution: Any, question: str | None = None) -> float | None:
    """1.0 if the answer names the same option as the solution, else 0.0; None (logged) when the
    solution itself names no option (bad data: the row cannot be scored)."""
    options = parse_options(question)
    target = extract_choice(_solution_text(solution), options)
    if target is None:
        logger.warning(
            "accuracy: solution %r names no option (options parsed: %s); row scored None",
            str(solution)[:80],
            sorted(options),
        )
        return None
    if answer is None:
        return 0.0
    return 1.0 if extract_choice(answer, options) == target else 0.0


def oe_score(answer: str | None, solution: Any, partial_credit: bool = False) -> float:
    """Normalized exact match (1.0 / 0.0), or token Jaccard with `partial_credit`; best over a list."""
    if answer is None:
        return 0.0
    solutions = solution if isinstance(solution, (list, tuple)) else [solution]
    best = 0.0
    for sol in solutions:
        target = _solution_text(sol)
        if normalize_answer(answer) == normalize_answer(target) and normalize_answer(target):
            return 1.0
        if partial_credit:
            a, s = Counter(tokenize_normalized(answer)), Counter(tokenize_normalized(target))
            if a or s:  # multiset Jaccard: repeating the right word does not earn full credit
                best = max(best, sum((a & s).values()) / sum((a | s).values()))
    return best


def question_format(question_type: Any, question: str | None, solution: Any) -> str:
    """'mc' or 'oe' for one row (module docstring)."""
    if isinstance(question_type, str):
        key = question_type.strip().lower().replace(" ", "_")
        if key in MC_TYPES:
            return "mc"
        if key in OE_TYPES:
            return "oe"
    options = parse_options(question)
    if options and not isinstance(solution, (list, tuple)):
        sol = _solution_text(solution)
        if _LONE_LETTER_RE.match(sol) and sol.strip("()[].:").upper() in options:
            return "mc"
    return "oe"


def _column(columns: dict[str, Any], name: str, n: int) -> list[Any]:
    values = columns.get(name)
    if values is None:
        return [None] * n
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return list(values)


def make_accuracy_reward(
    mode: str = "auto", partial_credit: bool = False, require_answer_tag: bool = True
) -> RewardFn:
    """R_acc as a reward function.

    mode: "auto" (per row from question_type), "mc" or "oe" (only rows of that format, None on others).
    partial_credit: open-ended rows score token Jaccard instead of exact match.
    require_answer_tag: without an <answer> pair a completion scores 0 (True) or is read whole (False).
    Reads columns `solution` (required), `question`, `question_type`.
    """
    if mode not in ("auto", "mc", "oe"):
        raise ValueError(f"accuracy mode must be 'auto', 'mc' or 'oe', got {mode!r}")

    def accuracy(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        n = len(completions)
        if "solution" not in columns:
            raise KeyError("the accuracy reward needs a 'solution' column")
        solutions = _column(columns, "solution", n)
        questions = _column(columns, "question", n)
        types = _column(columns, "question_type", n)
        scores: list[float | None] = []
        for completion, solution, question, qtype in zip(completions, solutions, questions, types):
            if solution is None or (isinstance(solution, str) and not solution.strip()):
                scores.append(None)
                continue
            question = completion_text(question) if question is not None else None
            row_format = question_format(qtype, question, solution)
            if mode != "auto" and row_format != mode and qtype is not None:
                scores.append(None)  # the row is of the other format: this reward does not apply
                continue
            row_format = mode if mode != "auto" else row_format
            answer = answer_span(completion, require_answer_tag)
            if row_format == "mc":
                scores.append(mc_score(answer, solution, question))
            else:
                scores.append(oe_score(answer, solution, partial_credit))
        return scores

    accuracy.__name__ = {"auto": "accuracy", "mc": "accuracy_mc", "oe": "accuracy_oe"}[mode]
    return accuracy


def _factory(mode: str) -> Callable[..., RewardFn]:
    def build(partial_credit: bool = False, require_answer_tag: bool = True) -> RewardFn:
        return make_accuracy_reward(
            mode, partial_credit=partial_credit, require_answer_tag=require_answer_tag
        )

    build.__doc__ = f"R_acc restricted to mode={mode!r}; options: partial_credit, require_answer_tag."
    return build


register_factory("accuracy", _factory("auto"), description="R_acc, MC or OE per row's question_type")
register_factory("accuracy_mc", _factory("mc"), description="R_acc for multiple-choice rows (option letter)")
register_factory("accuracy_oe", _factory("oe"), description="R_acc for open-ended rows (normalized match)")
