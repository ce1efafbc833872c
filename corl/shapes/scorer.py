"""GenEval-style verification of a generated Shapes image against the scene spec of its prompt.

Rules per category (in the spirit of GenEval's object-detector rules, with our analyzer as detector):
- single_object / two_object / colors / color_attr: every object the caption names is detected, at
  least as many times as named; its color is checked only when the caption names colors.
- counting: exactly N detections of the counted kind (shape, and color when named).
- position: both objects are detected and, for at least one pair of candidates, the caption's relation
  holds between their detected centres (cone rule of `relations_from_offset`, like GenEval's
  direction test on box centres).
- every category, clutter: the image fails when any detection is UNKNOWN (a blob the analyzer does not
  recognize as a flat palette-colored shape on white: noise, scribbles, an off-palette or misshapen
  object), or when it holds more detections than the caption asserts plus EXTRA_OBJECTS_ALLOWED
  (captions assert at most MAX_OBJECTS objects, so more than MAX_OBJECTS detections always fail).

The clutter rule is where we depart from GenEval on purpose. GenEval ignores objects the prompt does not
name because real photos have context; a Shapes caption mentions every object of its scene (see
`corl.shapes.scene.Scene`) and Shapes images are plain, so an extra object contradicts the caption. We
allow no extra object (EXTRA_OBJECTS_ALLOWED = 0): with even one, a generator (or a policy under RL
using this scorer as a reward) could game the benchmark by hedging, e.g. drawing a circle, a square and
a triangle passes every two_object prompt, and two shapes pass two thirds of single_object prompts. An
untrained model's noise yields only UNKNOWN blobs (or none) and so passes nothing.
The overall GenEval score is the mean over categories of the per-category pass rate.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from corl.shapes.analyzer import UNKNOWN, DetectedObject, analyze
from corl.shapes.scene import CATEGORIES, Scene, relations_from_offset

EXTRA_OBJECTS_ALLOWED = 0  # detections beyond what the caption asserts before an image fails as cluttered


@dataclass(frozen=True)
class GenEvalResult:
    passed: bool
    category: str
    reason: str
    detections: tuple[DetectedObject, ...] = ()


def _name(shape: str, color: str | None) -> str:
    return f"{color} {shape}" if color else shape


def _matches(obj: DetectedObject, shape: str, color: str | None) -> bool:
    return obj.shape == shape and (color is None or obj.color == color)


def clutter_problems(found: tuple[DetectedObject, ...], scene: Scene) -> list[str]:
    """Why the detections hold more than the caption asserts (empty when they do not): UNKNOWN blobs,
    or more objects than asserted plus EXTRA_OBJECTS_ALLOWED."""
    problems = []
    unknown = sum(o.shape == UNKNOWN or o.color == UNKNOWN for o in found)
    if unknown:
        problems.append(f"{unknown} unrecognized blob{'s' if unknown > 1 else ''} (noise or clutter)")
    asserted = sum(n for _, _, n in scene.required())
    if len(found) > asserted + EXTRA_OBJECTS_ALLOWED:
        problems.append(f"{len(found)} objects where the caption asserts {asserted}")
    return problems


def _category_problem(found: tuple[DetectedObject, ...], scene: Scene) -> tuple[str | None, str]:
    """(why the category's rule fails or None, what was checked) for detections against `scene`."""
    cat = scene.category
    need: Counter[tuple[str, str | None]] = Counter()
    for shape, color, n in scene.required():
        need[(shape, color)] += n

    if cat == "counting":
        (shape, color), n = next(iter(need.items()))
        got = sum(_matches(o, shape, color) for o in found)
        reason = f"expected exactly {n} {_name(shape, color)}, found {got}"
        return (None if got == n else reason), reason

    missing = []
    for (shape, color), n in need.items():
        got = sum(_matches(o, shape, color) for o in found)
        if got < n:
            missing.append(f"expected {n} {_name(shape, color)}, found {got}")
    if missing:
        return "; ".join(missing), ""

    if cat == "position":
        a_spec, b_spec = scene.objects
        color_a = a_spec.color if scene.named_colors else None
        color_b = b_spec.color if scene.named_colors else None
        cands_a = [o for o in found if _matches(o, a_spec.shape, color_a)]
        cands_b = [o for o in found if _matches(o, b_spec.shape, color_b)]
        seen_rels: set[str] = set()
        for a in cands_a:
            for b in cands_b:
                if a is b:
                    continue
                rels = relations_from_offset(a.center_xy[0] - b.center_xy[0], a.center_xy[1] - b.center_xy[1])
                if scene.relation in rels:
                    return None, f"{_name(a_spec.shape, color_a)} {scene.relation} {_name(b_spec.shape, color_b)}"
                seen_rels |= rels
        got = ", ".join(sorted(seen_rels)) or "no clear relation"
        return f"expected {scene.relation}, found {got}", ""

    return None, "all named objects found"


def score_detections(objects: Iterable[DetectedObject], scene: Scene) -> GenEvalResult:
    """Apply the category's rule and the clutter rule to detections already read from an image."""
    found = tuple(objects)
    problem, checked = _category_problem(found, scene)
    problems = ([problem] if problem else []) + clutter_problems(found, scene)
    if problems:
        return GenEvalResult(False, scene.category, "; ".join(problems), found)
    return GenEvalResult(True, scene.category, f"ok: {checked}", found)


def score_generation(image: Image.Image | np.ndarray, scene: Scene) -> GenEvalResult:
    """Analyze `image` and check it against what `scene`'s caption asserts."""
    return score_detections(analyze(image), scene)


def summarize_results(results: Iterable[GenEvalResult]) -> dict[str, float]:
    """Pass rate per category present, and 'overall' = mean of the per-category rates (GenEval)."""
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        by_cat[r.category].append(r.passed)
    rates = {c: float(np.mean(by_cat[c])) for c in CATEGORIES if by_cat.get(c)}
    if rates:
        rates["overall"] = float(np.mean(list(rates.values())))
    return rates
