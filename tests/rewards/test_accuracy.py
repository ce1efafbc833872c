"""R_acc: multiple-choice and open-ended matching, hand-checked cases."""

from __future__ import annotations

import pytest

from corl.rewards.accuracy import extract_choice, make_accuracy_reward, parse_options

COLOR_Q = "What color is the circle?\nA. red\nB. blue\nC. green\nD. dark red"
COUNT_Q = "How many triangles are there?\n(A) one\n(B) two\n(C) three"

# (answer inside <answer>, question, solution, expected reward)
MC_CASES = [
    ("B", COLOR_Q, "<answer>B</answer>", 1.0),
    ("The answer is B.", COLOR_Q, "<answer>B</answer>", 1.0),
    ("b", COLOR_Q, "<answer>B</answer>", 1.0),
    ("(B) red", COLOR_Q, "<answer>B</answer>", 1.0),  # the letter marker wins over the text
    ("B. blue", COLOR_Q, "<answer>B</answer>", 1.0),
    ("(b)", COLOR_Q, "<answer>B</answer>", 1.0),
    ("B)", COLOR_Q, "B", 1.0),
    ("Answer: B", COLOR_Q, "B", 1.0),
    ("the correct option is B", COLOR_Q, "<answer>B</answer>", 1.0),
    ("blue", COLOR_Q, "<answer>B</answer>", 1.0),  # option text maps to its letter
    ("Blue.", COLOR_Q, "<answer>B</answer>", 1.0),
    ("It is blue", COLOR_Q, "<answer>B</answer>", 1.0),
    ("dark red", COLOR_Q, "<answer>D</answer>", 1.0),  # "red" inside "dark red" is not a second match
    ("I think it is D", COLOR_Q, "<answer>D</answer>", 1.0),
    ("a red one", COLOR_Q, "<answer>A</answer>", 1.0),  # the article "a" is not option A ... but red is
    ("A", COLOR_Q, "<answer>B</answer>", 0.0),
    ("The answer is C.", COLOR_Q, "<answer>B</answer>", 0.0),
    ("green", COLOR_Q, "<answer>B</answer>", 0.0),
    ("B or C", COLOR_Q, "<answer>B</answer>", 0.0),  # two letters: ambiguous
    ("red or blue", COLOR_Q, "<answer>B</answer>", 0.0),  # two options: ambiguous
    ("E", COLOR_Q, "<answer>B</answer>", 0.0),  # not an option
    ("", COLOR_Q, "<answer>B</answer>", 0.0),
    ("two", COUNT_Q, "<answer>B</answer>", 1.0),
    ("2", COUNT_Q, "<answer>B</answer>", 1.0),  # digits equal number words in option text
    ("(C) three", COUNT_Q, "<answer>C</answer>", 1.0),
    ("There are three triangles, so C.", COUNT_Q, "<answer>C</answer>", 1.0),
    ("C", COUNT_Q, "three", 1.0),  # a solution given as option text
]

OE_CASES = [
    ("two", "<answer>two</answer>", 1.0),
    ("2", "<answer>two</answer>", 1.0),
    ("Two.", "<answer>2</answer>", 1.0),
    ("twenty-one", "21", 1.0),
    ("twenty one", "21", 1.0),
    ("one hundred and five", "105", 1.0),
    ("2.0", "2", 1.0),
    ("1,000", "one thousand", 1.0),
    ("Red", "<answer>red</answer>", 1.0),
    ("  red  ", "red", 1.0),
    ("The red circle.", "red circle", 1.0),
    ("a circle", "circle", 1.0),
    ("Yes.", "yes", 1.0),
    ("YES!", "<answer>yes</answer>", 1.0),
    ("blue square", "blue  square", 1.0),
    ("Rot", "rot", 1.0),
    ("café", "Café", 1.0),
    ("three", "two", 0.0),
    ("3", "two", 0.0),
    ("no", "yes", 0.0),
    ("red square", "red circle", 0.0),
    ("redcircle", "red circle", 0.0),
    ("", "red", 0.0),
    ("22", "2", 0.0),
    ("two three", "23", 0.0),  # two numbers, not twenty-three
]


@pytest.mark.parametrize("answer,question,solution,expected", MC_CASES)
def test_multiple_choice(answer, question, solution, expected):
    reward = make_accuracy_reward("mc")
    completion = f"<think>Let me look.</think><answer>{answer}</answer>"
    assert reward(["p"], [completion], solution=[solution], question=[question]) == [expected]


@pytest.mark.parametrize("answer,solution,expected", OE_CASES)
def test_open_ended(answer, solution, expected):
    reward = make_accuracy_reward("oe")
    assert reward(["p"], [f"<answer>{answer}</answer>"], solution=[solution]) == [expected]


def test_case_counts():
    assert len(MC_CASES) >= 20 and len(OE_CASES) >= 20


def test_parse_options_line_and_inline():
    assert parse_options(COLOR_Q) == {"A": "red", "B": "blue", "C": "green", "D": "dark red"}
    assert parse_options(COUNT_Q) == {"A": "one", "B": "two", "C": "three"}
    assert parse_options("Pick one. Options: A. cat B. dog C) bird") == {"A": "cat", "B": "dog", "C": "bird"}
    assert parse_options("What is shown?") == {}
    assert parse_options("I. Something\nX) other") == {}  # not lettered A, B, ...


def test_extract_choice_without_options_accepts_letters_only():
    assert extract_choice("The answer is (C).", None) == "C"
    assert extract_choice("blue", None) is None


def test_partial_credit_is_token_jaccard():
    reward = make_accuracy_reward("oe", partial_credit=True)
    scores = reward(
        ["p"] * 3,
        ["<answer>a red circle</answer>", "<answer>red square</answer>", "<answer>green</answer>"],
        solution=["red circle"] * 3,
    )
    # {red, circle} vs {red, circle}: 1; {red, square} vs {red, circle}: 1/3; disjoint: 0
    assert scores == [1.0, pytest.approx(1 / 3), 0.0]


def test_list_of_acceptable_solutions():
    reward = make_accuracy_reward("oe")
    assert reward(["p"], ["<answer>grey</answer>"], solution=[["gray", "grey"]]) == [1.0]


def test_no_answer_tag_scores_zero_by_default_and_whole_text_when_asked():
    completion = "<think>It is blue.</think> B"
    strict = make_accuracy_reward("mc")
    loose = make_accuracy_reward("mc", require_answer_tag=False)
    assert strict(["p"], [completion], solution=["B"], question=[COLOR_Q]) == [0.0]
    assert loose(["p"], [completion], solution=["B"], question=[COLOR_Q]) == [1.0]


def test_last_answer_tag_counts():
    completion = "<think>I should write <answer>A</answer>? No.</think><answer>B</answer>"
    assert make_accuracy_reward("mc")(["p"], [completion], solution=["B"], question=[COLOR_Q]) == [1.0]


def test_auto_dispatch_on_question_type_and_inference():
    reward = make_accuracy_reward("auto")
    completions = ["<answer>B</answer>", "<answer>two</answer>", "<answer>B</answer>", "<answer>2</answer>"]
    scores = reward(
        ["p"] * 4,
        completions,
        solution=["B", "2", "B", "two"],
        question=[COLOR_Q, "How many?", COLOR_Q, "How many?"],
        question_type=["multiple_choice", "open_ended", None, None],
    )
    assert scores == [1.0, 1.0, 1.0, 1.0]


def test_restricted_mode_returns_none_on_other_format():
    reward = make_accuracy_reward("mc")
    scores = reward(
        ["p", "p"],
        ["<answer>B</answer>", "<answer>two</answer>"],
        solution=["B", "two"],
        question=[COLOR_Q, "How many?"],
        question_type=["mc", "open_ended"],
    )
    assert scores == [1.0, None]


def test_missing_solution_column_is_a_clear_error():
    with pytest.raises(KeyError, match="solution"):
        make_accuracy_reward()(["p"], ["<answer>B</answer>"])


def test_row_without_solution_or_with_a_bad_solution_is_none(caplog):
    reward = make_accuracy_reward("mc")
    scores = reward(
        ["p", "p"],
        ["<answer>B</answer>"] * 2,
        solution=[None, "<answer>purple</answer>"],
        question=[COLOR_Q, COLOR_Q],
    )
    assert scores == [None, None]
    assert any("names no option" in r.message for r in caplog.records)


def test_conversation_completions():
    reward = make_accuracy_reward("oe")
    completion = [{"role": "assistant", "content": "<think>x</think><answer>Two</answer>"}]
    assert reward(["p"], [completion], solution=["2"]) == [1.0]


# Hedges: every way of naming two option letters, in every order, scores 0 (a policy under RL would
# otherwise learn to list options).
HEDGE_TEMPLATES = [
    "{x} or {y}", "{x} and {y}", "Either {x} or {y}", "either {x} or {y}", "{x}/{y}", "{x}, {y}",
    "both {x} and {y}", "({x}) or ({y})", "({lx}) or ({ly})", "{x} or maybe {y}", "I think {x} or {y}",
    "The answer is {x} or {y}.", "{x} vs {y}", "{x} and/or {y}", "Option {x} or option {y}",
    "{x}. {ox} or {y}. {oy}", "{x}, not {y}", "[{x}] [{y}]", "{x} {y}",
]
OPTIONS = {"A": "red", "B": "blue", "C": "green", "D": "yellow"}
PAIRS = [(x, y) for x in OPTIONS for y in OPTIONS if x != y]


@pytest.mark.parametrize("template", HEDGE_TEMPLATES)
def test_every_hedge_names_no_letter(template):
    question = "What color is the circle?\n" + "\n".join(f"{k}. {v}" for k, v in OPTIONS.items())
    reward = make_accuracy_reward()
    for x, y in PAIRS:
        text = template.format(x=x, y=y, lx=x.lower(), ly=y.lower(), ox=OPTIONS[x], oy=OPTIONS[y])
        assert extract_choice(text, OPTIONS) is None, text
        for solution in (x, y):  # whichever letter is right, the hedge earns nothing
            score = reward([question], [f"<answer>{text}</answer>"], solution=[f"<answer>{solution}</answer>"],
                           question=[question], question_type=["mc"])
            assert score == [0.0], (text, solution)


def test_single_letters_still_count_next_to_the_article_and_full_width_letters():
    assert extract_choice("B. A red circle", OPTIONS) == "B"  # "A" before a noun is the article
    assert extract_choice("A red one", OPTIONS) == "A"  # ... and "red" names option A
    assert extract_choice("Ｃ", OPTIONS) == "C"  # full-width, NFKC-normalized
    assert extract_choice("（Ｄ）", OPTIONS) == "D"
    assert extract_choice("<answer>A or B</answer>".removeprefix("<answer>").removesuffix("</answer>")) is None
