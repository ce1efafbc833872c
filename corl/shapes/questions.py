"""Questions about a Shapes scene, answerable from its image alone.

`make_question(scene, rng, kind)` returns (question, solution):
- kind "mc": the question, then 3-4 shuffled options one per line ("A. red"); exactly one is true;
  solution "<answer>B</answer>".
- kind "oe": color / shape / count / yes-no / side questions; solution "<answer>red</answer>",
  "<answer>two</answer>" (numbers as words), "<answer>yes</answer>".

Questions are about the image, not the caption: they may ask about colors the caption did not name and
about absent objects ("How many squares are there?" -> zero). A question is only asked when its answer
is unambiguous from the pixels: "the circle" only when all circles share a color, relation questions
only for pairs with exactly one relation on the grid, and "no" answers to relation questions use the
opposite relation or an axis on which the two objects are level. The format instruction
(<think>/<answer>) is not appended here; the policy adds it.

Question templates are chosen at random among the applicable ones, with the category's own topic
(counts for counting, relations for position, colors for colors / color_attr) weighted up.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable

from corl.shapes.captions import with_article
from corl.shapes.scene import (
    COLOR_NAMES,
    SHAPES,
    Scene,
    ShapeObject,
    number_word,
    plural,
    unique_relation,
)

QUESTION_KINDS: tuple[str, ...] = ("mc", "oe")
LETTERS = "ABCDEFGH"
MAX_COUNT_OPTION = 5
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
RELATION_QUESTION = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
RELATION_OPTION = {"left of": "to the left of it", "right of": "to the right of it", "above": "above it",
                   "below": "below it"}

QA = tuple[str, str]  # (question text, answer text)


def answer_tag(text: str) -> str:
    return f"<answer>{text}</answer>"


def format_mc(question: str, options: list[str], correct: str, rng: random.Random) -> tuple[str, str]:
    """Shuffle options; return (question with 'A. ...' lines, '<answer>L</answer>')."""
    if correct not in options or len(set(options)) != len(options):
        raise ValueError(f"MC options must be distinct and contain the answer: {options} / {correct}")
    opts = list(options)
    rng.shuffle(opts)
    lines = [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(opts)]
    return question + "\n" + "\n".join(lines), answer_tag(LETTERS[opts.index(correct)])


_OPTION_LINE = re.compile(r"^\s*([A-H])\.\s+(.+?)\s*$")


def parse_mc_options(question: str) -> dict[str, str]:
    """Option letter -> option text from an MC question built by `format_mc`."""
    out: dict[str, str] = {}
    for line in question.splitlines():
        m = _OPTION_LINE.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


# ---- facts about the image --------------------------------------------------------------------

def _uniform_color(scene: Scene, shape: str) -> str | None:
    colors = {o.color for o in scene.objects if o.shape == shape}
    return next(iter(colors)) if len(colors) == 1 else None


def _uniform_shape(scene: Scene, color: str) -> str | None:
    shapes = {o.shape for o in scene.objects if o.color == color}
    return next(iter(shapes)) if len(shapes) == 1 else None


def _distinct_pairs(scene: Scene) -> list[tuple[ShapeObject, ShapeObject, str]]:
    """Ordered pairs of objects with unique kinds (so 'the red circle' refers) and exactly one relation."""
    kinds = Counter(o.kind for o in scene.objects)
    out = []
    for a in scene.objects:
        for b in scene.objects:
            if a is b or kinds[a.kind] > 1 or kinds[b.kind] > 1:
                continue
            rel = unique_relation(a, b)
            if rel is not None:
                out.append((a, b, rel))
    return out


def _the(obj: ShapeObject) -> str:
    return f"the {obj.color} {obj.shape}"


def _is_level(a: ShapeObject, b: ShapeObject, relation: str) -> bool:
    """True when a and b are level on relation's axis (same column for above/below, same row for left/right)."""
    return a.col == b.col if relation in ("left of", "right of") else a.row == b.row


def _false_relation(a: ShapeObject, b: ShapeObject, true_rel: str, rng: random.Random) -> str:
    """A relation clearly false for (a, b): the opposite one, or an orthogonal one when level on that axis."""
    candidates = [OPPOSITE[true_rel]]
    for rel in ("above", "below") if true_rel in ("left of", "right of") else ("left of", "right of"):
        if _is_level(a, b, rel):
            candidates.append(rel)
    return rng.choice(candidates)


def _count_target(scene: Scene, rng: random.Random) -> tuple[str, int]:
    """A counting phrase ('circles', 'red objects', 'objects', 'red circles') and its true count."""
    objs = scene.objects
    mode = rng.choice(("shape", "shape", "color", "kind", "all"))
    if mode == "all":
        return "objects", len(objs)
    present = rng.random() < 0.75
    if mode == "shape":
        pool = sorted({o.shape for o in objs}) if present else [s for s in SHAPES if s not in {o.shape for o in objs}]
        shape = rng.choice(pool or list(SHAPES))
        return plural(shape), sum(o.shape == shape for o in objs)
    if mode == "color":
        pool = sorted({o.color for o in objs}) if present else [c for c in COLOR_NAMES
                                                                 if c not in {o.color for o in objs}]
        color = rng.choice(pool or list(COLOR_NAMES))
        return f"{color} objects", sum(o.color == color for o in objs)
    kinds = sorted({o.kind for o in objs})
    if present:
        color, shape = rng.choice(kinds)
    else:
        o = rng.choice(objs)  # absent kind sharing an attribute with a present object: tests binding
        color, shape = rng.choice([(c, o.shape) for c in COLOR_NAMES if (c, o.shape) not in kinds]
                                  + [(o.color, s) for s in SHAPES if (o.color, s) not in kinds])
    return f"{color} {plural(shape)}", sum(o.kind == (color, shape) for o in objs)


def _absent_kinds(scene: Scene) -> list[tuple[str, str]]:
    present = {o.kind for o in scene.objects}
    return [(c, s) for c in COLOR_NAMES for s in SHAPES if (c, s) not in present]


def _confusable_absent_kind(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """An absent (color, shape), sharing the color or the shape of a present object when possible."""
    absent = _absent_kinds(scene)
    shapes = {o.shape for o in scene.objects}
    colors = {o.color for o in scene.objects}
    near = [k for k in absent if k[0] in colors or k[1] in shapes]
    return rng.choice(near or absent)


# ---- open-ended ---------------------------------------------------------------------------------

def _oe_attribute(scene: Scene, rng: random.Random, asked: str) -> QA | None:
    """"What color is the circle?" (asked="color", the subject named by its shape) or "What shape is the
    red object?" (asked="shape", named by its color); only subjects whose asked attribute is one value."""
    named = "shape" if asked == "color" else "color"
    uniform = _uniform_color if asked == "color" else _uniform_shape
    subjects = [v for v in sorted({getattr(o, named) for o in scene.objects}) if uniform(scene, v)]
    if not subjects:
        return None
    subject = rng.choice(subjects)
    n = sum(getattr(o, named) == subject for o in scene.objects)
    if asked == "color":
        q = f"What color is the {subject}?" if n == 1 else f"What color are the {plural(subject)}?"
    else:
        q = f"What shape is the {subject} object?" if n == 1 else f"What shape are the {subject} objects?"
    return q, uniform(scene, subject)  # type: ignore[return-value]


def _oe_color(scene: Scene, rng: random.Random) -> QA | None:
    return _oe_attribute(scene, rng, "color")


def _oe_shape(scene: Scene, rng: random.Random) -> QA | None:
    return _oe_attribute(scene, rng, "shape")


def _oe_count(scene: Scene, rng: random.Random) -> QA | None:
    target, n = _count_target(scene, rng)
    q = rng.choice((f"How many {target} are there?", f"How many {target} are in the image?"))
    return q, number_word(n)


def _oe_exists(scene: Scene, rng: random.Random) -> QA | None:
    if rng.random() < 0.5:
        o = rng.choice(scene.objects)
        color, shape, ans = o.color, o.shape, "yes"
    else:
        (color, shape), ans = _confusable_absent_kind(scene, rng), "no"
    return f"Is there {with_article(color + ' ' + shape)} in the image?", ans


def _oe_relation_yes_no(scene: Scene, rng: random.Random) -> QA | None:
    pairs = _distinct_pairs(scene)
    if not pairs:
        return None
    a, b, rel = rng.choice(pairs)
    asked, ans = (rel, "yes") if rng.random() < 0.5 else (_false_relation(a, b, rel, rng), "no")
    return f"Is {_the(a)} {RELATION_QUESTION[asked]} {_the(b)}?", ans


def _oe_side(scene: Scene, rng: random.Random) -> QA | None:
    pairs = _distinct_pairs(scene)
    if not pairs:
        return None
    a, b, rel = rng.choice(pairs)
    if rel in ("left of", "right of"):
        return f"Is {_the(a)} to the left or to the right of {_the(b)}?", rel.split()[0]
    return f"Is {_the(a)} above or below {_the(b)}?", rel


# ---- multiple choice ------------------------------------------------------------------------------

def _mc_color(scene: Scene, rng: random.Random) -> tuple[str, list[str], str] | None:
    qa = _oe_color(scene, rng)
    if qa is None:
        return None
    others = rng.sample([c for c in COLOR_NAMES if c != qa[1]], 3)
    return qa[0], [qa[1], *others], qa[1]


def _mc_shape(scene: Scene, rng: random.Random) -> tuple[str, list[str], str] | None:
    qa = _oe_shape(scene, rng)
    if qa is None:
        return None
    return qa[0], list(SHAPES), qa[1]


def _mc_count(scene: Scene, rng: random.Random) -> tuple[str, list[str], str] | None:
    target, n = _count_target(scene, rng)
    others = rng.sample([k for k in range(MAX_COUNT_OPTION + 1) if k != n], 3)
    opts = [number_word(k) for k in sorted([n, *others])]
    return f"How many {target} are in the image?", opts, number_word(n)


EXISTS_MC_QUESTIONS = ("Which of these objects is in the image?", "Which object appears in the image?")


def _mc_exists(scene: Scene, rng: random.Random) -> tuple[str, list[str], str] | None:
    o = rng.choice(scene.objects)
    absent = _absent_kinds(scene)
    # Prefer distractors that share an attribute with the scene (harder, tests binding).
    shapes, colors = {x.shape for x in scene.objects}, {x.color for x in scene.objects}
    near = [k for k in absent if k[0] in colors or k[1] in shapes]
    pool = near if len(near) >= 3 else absent
    distractors = rng.sample(pool, 3)
    correct = with_article(o.phrase())
    opts = [correct] + [with_article(f"{c} {s}") for c, s in distractors]
    q = rng.choice(EXISTS_MC_QUESTIONS)
    return q, opts, correct


def _mc_relation(scene: Scene, rng: random.Random) -> tuple[str, list[str], str] | None:
    pairs = _distinct_pairs(scene)
    if not pairs:
        return None
    a, b, rel = rng.choice(pairs)
    opts = [RELATION_OPTION[r] for r in ("left of", "right of", "above", "below")]
    return f"Where is {_the(a)} relative to {_the(b)}?", opts, RELATION_OPTION[rel]


OE_TEMPLATES: dict[str, Callable[[Scene, random.Random], QA | None]] = {
    "color": _oe_color,
    "shape": _oe_shape,
    "count": _oe_count,
    "exists": _oe_exists,
    "relation": _oe_relation_yes_no,
    "side": _oe_side,
}
MC_TEMPLATES: dict[str, Callable[[Scene, random.Random], tuple[str, list[str], str] | None]] = {
    "color": _mc_color,
    "shape": _mc_shape,
    "count": _mc_count,
    "exists": _mc_exists,
    "relation": _mc_relation,
}
# Topics weighted up per category (weight 3 instead of 1), so questions follow the scene's theme.
CATEGORY_TOPICS: dict[str, tuple[str, ...]] = {
    "single_object": ("shape", "exists"),
    "two_object": ("shape", "exists"),
    "counting": ("count",),
    "colors": ("color",),
    "position": ("relation", "side"),
    "color_attr": ("color", "shape"),
}


def _weighted_order(names: list[str], category: str, rng: random.Random) -> list[str]:
    """Template names in a random order, the category's topics more likely to come first."""
    topics = CATEGORY_TOPICS.get(category, ())
    pool = list(names)
    order = []
    while pool:
        weights = [3.0 if n in topics else 1.0 for n in pool]
        pick = rng.choices(pool, weights=weights)[0]
        order.append(pick)
        pool.remove(pick)
    return order


QUESTION_TOPICS: tuple[str, ...] = ("color", "shape", "count", "exists", "relation", "side")


def question_topic(question: str) -> str | None:
    """The template a Shapes question (OE, or MC with its option lines) was made from, read back from its
    text: one of QUESTION_TOPICS ("relation": yes/no "Is the X left of the Y?" and MC "Where is ...";
    "side": "Is the X above or below the Y?"), None for text no template makes. For per-topic accuracy."""
    first = question.strip().splitlines()[0] if question.strip() else ""
    for prefix, topic in (("What color ", "color"), ("What shape ", "shape"), ("How many ", "count"),
                          ("Is there ", "exists"), ("Where is ", "relation")):
        if first.startswith(prefix):
            return topic
    if first in EXISTS_MC_QUESTIONS:
        return "exists"
    if first.startswith("Is the "):
        return "side" if (" above or below " in first or " to the left or to the right of " in first) else "relation"
    return None


def make_question(scene: Scene, rng: random.Random, kind: str = "oe") -> tuple[str, str]:
    """A question about `scene`'s image and its solution ('<answer>...</answer>')."""
    if kind not in QUESTION_KINDS:
        raise ValueError(f"question kind must be one of {QUESTION_KINDS}, got {kind!r}")
    templates = MC_TEMPLATES if kind == "mc" else OE_TEMPLATES
    for name in _weighted_order(list(templates), scene.category, rng):
        made = templates[name](scene, rng)
        if made is None:
            continue
        if kind == "mc":
            question, options, correct = made  # type: ignore[misc]
            return format_mc(question, options, correct, rng)
        question, answer = made  # type: ignore[misc]
        return question, answer_tag(answer)
    # "count" and "exists" apply to every scene, so this is unreachable for valid scenes.
    raise ValueError(f"no {kind} question applies to scene {scene.to_json()}")
