"""Questions are checked against an independent oracle that re-derives the answer from the scene."""

import random
import re
from collections import Counter

import pytest

from corl.shapes.questions import (
    MC_TEMPLATES,
    OE_TEMPLATES,
    QUESTION_TOPICS,
    format_mc,
    make_question,
    parse_mc_options,
    question_topic,
)
from corl.shapes.scene import CATEGORIES, COLORS, SHAPES, Scene, grid_relations, number_word, sample_scene

ANSWER = re.compile(r"^<answer>([^<>]+)</answer>$")


def _find(scene: Scene, color: str | None, shape: str | None):
    return [o for o in scene.objects if (color is None or o.color == color) and (shape is None or o.shape == shape)]


def _single(scene: Scene, color: str, shape: str):
    objs = _find(scene, color, shape)
    assert len(objs) == 1, "a referring expression must pick exactly one object"
    return objs[0]


def _count(scene: Scene, target: str) -> int:
    words = target.split()
    if words == ["objects"]:
        return len(scene.objects)
    if len(words) == 2 and words[1] == "objects":
        return len(_find(scene, words[0], None))
    if len(words) == 2:
        return len(_find(scene, words[0], words[1][:-1]))
    return len(_find(scene, None, words[0][:-1]))


def oracle(stem: str, scene: Scene, options: list[str] | None = None) -> str:
    """The true answer (OE) or the true option text (MC) to a question stem, derived from the scene."""
    if m := re.fullmatch(r"What color (?:is|are) the (\w+?)s?\?", stem):
        colors = {o.color for o in _find(scene, None, m.group(1))}
        assert len(colors) == 1, "ambiguous color question"
        return colors.pop()
    if m := re.fullmatch(r"What shape (?:is|are) the (\w+) objects?\?", stem):
        shapes = {o.shape for o in _find(scene, m.group(1), None)}
        assert len(shapes) == 1, "ambiguous shape question"
        return shapes.pop()
    if m := re.fullmatch(r"How many (.+?) (?:are there|are in the image)\?", stem):
        return number_word(_count(scene, m.group(1)))
    if m := re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", stem):
        return "yes" if _find(scene, m.group(1), m.group(2)) else "no"
    if m := re.fullmatch(r"Is the (\w+) (\w+) to the left or to the right of the (\w+) (\w+)\?", stem):
        rels = grid_relations(_single(scene, *m.group(1, 2)), _single(scene, *m.group(3, 4)))
        assert len(rels & {"left of", "right of"}) == 1 and len(rels) == 1
        return "left" if "left of" in rels else "right"
    if m := re.fullmatch(r"Is the (\w+) (\w+) above or below the (\w+) (\w+)\?", stem):
        rels = grid_relations(_single(scene, *m.group(1, 2)), _single(scene, *m.group(3, 4)))
        assert len(rels) == 1 and rels <= {"above", "below"}
        return rels.pop()
    if m := re.fullmatch(r"Is the (\w+) (\w+) (to the left of|to the right of|above|below) the (\w+) (\w+)\?", stem):
        a, b = _single(scene, *m.group(1, 2)), _single(scene, *m.group(4, 5))
        rel = m.group(3).replace("to the ", "")
        rels = grid_relations(a, b)
        assert len(rels) == 1, "relation questions only about unambiguous pairs"
        if rel in rels:
            return "yes"
        # "no" must be clear: the opposite relation, or level on the asked axis.
        level = a.col == b.col if rel in ("left of", "right of") else a.row == b.row
        opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}[rel]
        assert opposite in rels or level
        return "no"
    if stem in ("Which of these objects is in the image?", "Which object appears in the image?"):
        present = [opt for opt in options if _find(scene, *opt.split()[1:])]
        assert len(present) == 1, "exactly one option may be present"
        return present[0]
    if m := re.fullmatch(r"Where is the (\w+) (\w+) relative to the (\w+) (\w+)\?", stem):
        rels = grid_relations(_single(scene, *m.group(1, 2)), _single(scene, *m.group(3, 4)))
        assert len(rels) == 1
        return {"left of": "to the left of it", "right of": "to the right of it", "above": "above it",
                "below": "below it"}[rels.pop()]
    raise AssertionError(f"unknown question template: {stem!r}")


def _questions(kind: str, n: int = 600, seed: int = 0):
    rng = random.Random(seed)
    for i in range(n):
        scene = sample_scene(rng, CATEGORIES[i % len(CATEGORIES)])
        yield scene, *make_question(scene, rng, kind)


def test_mc_questions_are_well_formed_and_solution_points_at_the_truth():
    letters_used = Counter()
    for scene, question, solution in _questions("mc"):
        lines = question.split("\n")
        stem, option_lines = lines[0], lines[1:]
        assert 3 <= len(option_lines) <= 4
        assert [ln[:3] for ln in option_lines] == [f"{'ABCD'[i]}. " for i in range(len(option_lines))]
        options = parse_mc_options(question)
        assert list(options) == list("ABCD")[: len(option_lines)]
        assert len(set(options.values())) == len(options)
        m = ANSWER.match(solution)
        assert m and m.group(1) in options
        assert options[m.group(1)] == oracle(stem, scene, list(options.values())), question
        letters_used[m.group(1)] += 1
        assert "<think>" not in question and "<answer>" not in question
    assert set(letters_used) == set("ABCD")  # options are shuffled


def test_oe_questions_are_answerable_and_solutions_are_words():
    answers = Counter()
    for scene, question, solution in _questions("oe"):
        assert "\n" not in question and question.endswith("?")
        m = ANSWER.match(solution)
        assert m, solution
        answer = m.group(1)
        assert not re.search(r"\d", answer)
        assert answer in set(COLORS) | set(SHAPES) | {"yes", "no", "left", "right", "above", "below"} | {
            number_word(i) for i in range(5)}
        assert answer == oracle(question, scene), question
        answers[answer] += 1
    assert answers["yes"] > 0 and answers["no"] > 0 and answers["zero"] > 0
    assert 0.5 < answers["yes"] / answers["no"] < 2.0


def test_question_topics_cover_all_templates():
    questions = [q for kind in ("mc", "oe") for _, q, _ in _questions(kind, 600, seed=1)]
    for start in ("What color", "What shape", "How many", "Is there", "Which", "Where is"):
        assert any(q.startswith(start) for q in questions), start
    assert any(" left or to the right of " in q for q in questions)
    assert any(" above or below " in q for q in questions)
    assert any(re.match(r"Is the \w+ \w+ (to the left of|to the right of|above|below) ", q) for q in questions)


def test_question_topic_names_the_template_of_every_question():
    rng = random.Random(2)
    seen = Counter()
    for index in range(400):
        scene = sample_scene(rng, CATEGORIES[index % len(CATEGORIES)])
        for kind, templates in (("oe", OE_TEMPLATES), ("mc", MC_TEMPLATES)):
            for name, template in templates.items():
                made = template(scene, rng)
                if made is None:
                    continue
                question = made[0] if kind == "oe" else format_mc(made[0], made[1], made[2], rng)[0]
                assert question_topic(question) == name, question
                seen[kind, name] += 1
    assert {name for _, name in seen} == set(QUESTION_TOPICS)
    assert question_topic("Describe the image.") is None and question_topic("") is None


def test_questions_are_seeded_and_kind_is_checked():
    scene = sample_scene(random.Random(0), "counting")
    assert make_question(scene, random.Random(3), "mc") == make_question(scene, random.Random(3), "mc")
    with pytest.raises(ValueError, match="question kind"):
        make_question(scene, random.Random(0), "essay")
