"""Templated captions for Shapes scenes, by GenEval category, with some wording variety.

A caption states exactly what its Scene asserts: shapes always, colors when `scene.named_colors`,
the count for counting scenes (as a word), the relation for position scenes. Wording varies through a
few prefixes ("a photo of", "an image of", none) and relation phrasings ("to the left of" / "left of").
The choice is drawn from the caller's `rng`, so captions are reproducible for a seed.
"""

from __future__ import annotations

import random

from corl.shapes.scene import Scene, ShapeObject, number_word, plural

PREFIXES: tuple[str, ...] = ("", "a photo of ", "an image of ", "a picture of ")
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above",),
    "below": ("below",),
}


def article(word: str) -> str:
    """'a' or 'an' for the following word."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def object_phrase(obj: ShapeObject, with_color: bool) -> str:
    """'a red circle' / 'a circle'."""
    return with_article(obj.phrase(with_color))


def count_phrase(n: int, shape: str, color: str | None) -> str:
    """'three red triangles', 'a circle' for n == 1."""
    noun = shape if n == 1 else plural(shape)
    words = ([color] if color else []) + [noun]
    body = " ".join(words)
    return with_article(body) if n == 1 else f"{number_word(n)} {body}"


def caption_body(scene: Scene, rng: random.Random) -> str:
    """The caption without a prefix such as 'a photo of'."""
    objs, named = scene.objects, scene.named_colors
    cat = scene.category
    if cat in ("single_object", "colors"):
        return object_phrase(objs[0], named)
    if cat in ("two_object", "color_attr"):
        return f"{object_phrase(objs[0], named)} and {object_phrase(objs[1], named)}"
    if cat == "counting":
        o = objs[0]
        return count_phrase(len(objs), o.shape, o.color if named else None)
    if cat == "position":
        assert scene.relation is not None  # Scene validates this
        rel = rng.choice(RELATION_PHRASES[scene.relation])
        return f"{object_phrase(objs[0], named)} {rel} {object_phrase(objs[1], named)}"
    raise ValueError(f"no caption template for category {cat!r}")


def caption_for(scene: Scene, rng: random.Random) -> str:
    """A natural-language caption asserting exactly what `scene` asserts."""
    body = caption_body(scene, rng)
    return rng.choice(PREFIXES) + body


def think_text(scene: Scene) -> str:
    """What the Shapes base model says before it answers (its <think> text): every object of the image,
    'I see two red circles and a blue square.' Objects are grouped by kind in reading order (top-left
    first) and counted, in the captions' words. The evaluation compares a model's think text with it."""
    groups: dict[tuple[str, str], int] = {}
    for obj in sorted(scene.objects, key=lambda o: (o.row, o.col)):
        groups[obj.kind] = groups.get(obj.kind, 0) + 1
    phrases = [count_phrase(n, shape, color) for (color, shape), n in groups.items()]
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"I see {body}."
