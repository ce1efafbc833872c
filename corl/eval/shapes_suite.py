"""The Shapes suite: a GenEval-style generation score and MC / OE understanding accuracy on Shapes rows.

Generation (t2i). For each row, `images_per_prompt` images are generated from the caption (`prompt`) with
CFG; each image passes when `corl.shapes` scoring of it against the row's scene (the `scene` column, Scene
JSON: what the caption asserts) passes. Scores per category are pass rates over images; `t2i.overall` is the
mean over the categories present, as GenEval's overall score is the mean over its tasks (with balanced
categories it is close to the plain image pass rate).

Understanding (mm2t). Each row's question is answered about the row's real image with greedy decoding;
answers are scored as the training rewards score them (`corl.eval.grading.score_answer`): MC accuracy on MC
rows, OE accuracy on OE rows, and the format rate (the <think>/<answer> format) over all answers.
Unscorable rows (a solution naming no option) are counted in `mm2t.n_unscorable` and left out of accuracy.

Determinism. Image batches are seeded with `batch_seed(seed, first row of the batch)`, text is greedy, so a
run is deterministic for (policy, rows, seed, batch_size). Changing the batch size changes which random
stream each image gets.

Result keys: `t2i.overall`, `t2i.<category>` (per category present), `t2i.n_images`, `mc.accuracy`, `mc.n`,
`oe.accuracy`, `oe.n`, `format_rate`, `think_match` (the share of greedy answers with a <think> block whose
think text describes the image exactly as the Shapes base model was taught: `think_matches`; None when no
answer has one), `mm2t.n_unscorable`, `mc.by_topic` and `oe.by_topic` ({topic: {accuracy, n,
think_match}} per question template: color, shape, count, exists, relation, side), `settings`;
`mc.sampled_by_topic` / `oe.sampled_by_topic` ({topic: {accuracy, blind, contrast, n}}, and "all") with
answer_samples; and
`details` (one record per row) when asked for. An accuracy is None when its question type has no rows.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from corl.config import DEFAULT_CFG_WEIGHT
from corl.policy.policy import JanusPolicy
from corl.eval.grading import (
    AnswerScore,
    batch_seed,
    batched,
    check_count,
    mean_or_none,
    save_image_atomic,
    score_answer,
)
from corl.generation.rollout import answer, generate_images
from corl.rewards.accuracy import extract_choice, parse_options
from corl.rewards.text import extract_tag
from corl.shapes.captions import think_text
from corl.shapes.questions import QUESTION_TOPICS, question_topic
from corl.shapes.scene import CATEGORIES, COLOR_NAMES, NUMBER_WORDS, SHAPES, Scene, plural

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = ("prompt", "scene", "image", "question", "solution")
DEFAULT_MAX_NEW_TOKENS = 256

# (generated image, scene the caption asserts) -> a result with .passed (bool) and .reason (str),
# like corl.shapes.GenEvalResult.
GenerationScorer = Callable[[Image.Image, Scene], Any]


def default_generation_scorer() -> GenerationScorer:
    """`corl.shapes.score_generation`: the analyzer reads the image, the category's rule checks it."""
    from corl.shapes import score_generation

    return score_generation


def _rows(dataset_split: Any, max_rows: int | None) -> list[Mapping[str, Any]]:
    """Rows as dicts (a datasets.Dataset or any sequence of mappings), the first `max_rows` of them."""
    n = len(dataset_split)
    if max_rows is not None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        n = min(n, max_rows)
    if n == 0:
        raise ValueError("the Shapes split has no rows")
    rows = [dataset_split[i] for i in range(n)]
    missing = [c for c in REQUIRED_COLUMNS if c not in rows[0]]
    if missing:
        raise KeyError(f"Shapes rows need columns {list(REQUIRED_COLUMNS)}; missing {missing}")
    return rows


def _category(row: Mapping[str, Any], scene: Scene) -> str:
    return str(row.get("category") or scene.category)


def _generation_pass(
    policy: JanusPolicy,
    rows: Sequence[Mapping[str, Any]],
    scenes: Sequence[Scene],
    images_per_prompt: int,
    cfg_weight: float,
    seed: int,
    batch_size: int,
    scorer: GenerationScorer,
    image_dir: Path | None,
) -> list[list[Any]]:
    """Per row, the scorer's result (.passed, .reason) for each of its generated images."""
    passed: list[list[Any]] = []
    n_batches = -(-len(rows) // batch_size)
    for start, batch in tqdm(
        batched(rows, batch_size), total=n_batches, desc="shapes eval: t2i", unit="batch"
    ):
        captions = [str(r["prompt"]) for r in batch]
        images = generate_images(policy,
            captions,
            n=images_per_prompt,
            cfg_weight=cfg_weight,
            seed=batch_seed(seed, start),
            temperature=1.0,
        )
        check_count(images, len(captions) * images_per_prompt, "images")
        for i in range(len(batch)):  # caption-major: images of row start+i are [i*n, (i+1)*n)
            row_images = images[i * images_per_prompt : (i + 1) * images_per_prompt]
            passed.append([scorer(im, scenes[start + i]) for im in row_images])
            if image_dir is not None:
                for j, im in enumerate(row_images):
                    save_image_atomic(im, image_dir / f"row{start + i:05d}_{j}.png")
    return passed


def _answer_pass(
    policy: JanusPolicy, rows: Sequence[Mapping[str, Any]], batch_size: int, max_new_tokens: int,
    samples: int = 0, seed: int = 0,
) -> list[list[str]]:
    """Answers per row, [rows][k]: one greedy answer (samples=0), or `samples` answers at temperature 1 with
    a seed per batch (`batch_seed(seed, first row of the batch)`)."""
    k = samples or 1
    answers: list[list[str]] = []
    n_batches = -(-len(rows) // batch_size)
    desc = "shapes eval: sampled answers" if samples else "shapes eval: mm2t"
    for start, batch in tqdm(batched(rows, batch_size), total=n_batches, desc=desc, unit="batch"):
        images = [_rgb(r["image"]) for r in batch for _ in range(k)]
        questions = [str(r["question"]) for r in batch for _ in range(k)]
        decoding = ({"greedy": False, "temperature": 1.0, "seed": batch_seed(seed, start)} if samples
                    else {"greedy": True})
        out = answer(policy, images, questions, max_new_tokens=max_new_tokens, **decoding)
        check_count(out, len(images), "answers")
        answers.extend(out[i * k:(i + 1) * k] for i in range(len(batch)))
    return answers


def _score(completion: str, row: Mapping[str, Any]) -> AnswerScore:
    return score_answer(completion, row["solution"], str(row["question"]), row.get("question_type"))


def _topic_order(topics: Iterable[str]) -> list[str]:
    """Question templates in QUESTION_TOPICS order, unknown ones ("other") after them, sorted."""
    present = set(topics)
    return [t for t in QUESTION_TOPICS if t in present] + sorted(present - set(QUESTION_TOPICS))


_OBJECT_WORDS = re.compile(
    r"\b(" + "|".join([*COLOR_NAMES, *(plural(x) for x in SHAPES), *SHAPES, *NUMBER_WORDS]) + r")\b")


def question_form(question: str) -> str:
    """The question with its object words (colors, shapes, number words) masked: what an image-blind
    answerer may read in it. 'Is the red circle above or below the blue square?' -> 'Is the _ _ above or
    below the _ _?': the axis a side question names, the relation a yes/no question asks, stay."""
    return _OBJECT_WORDS.sub("_", question)


def _blind_keys(samples: Sequence[AnswerScore], row: Mapping[str, Any]) -> Counter:
    """What a blind answerer can reuse of a row's sampled answers on another question, counted: MC answers
    as the letters of the options they name ("a red circle" -> "B"; option texts differ between questions,
    positions do not), any other answer as its text."""
    options = parse_options(str(row["question"]))
    return Counter((extract_choice(s.extracted, options) or s.extracted)
                   if s.question_format == "mc" and s.extracted is not None else s.extracted for s in samples)


def _blind_accuracy(group: Sequence[tuple[Mapping[str, Any], Sequence[AnswerScore]]]) -> float:
    """Accuracy of an image-blind answerer on these rows (same template): for each row it draws an answer
    from the sampled answers of the *other* rows with the same `question_form` (of the other rows of the
    template when no other row has that form; of the row's own samples when it is the template's only row).
    It sees the question's form, not its object words or image (MC answers are pooled as the letters they
    name: `_blind_keys`); leaving the row out keeps a small pool from counting the row's own image-read
    answers as blind. The sampled accuracy minus this is what the answers take from the image."""
    forms = [question_form(str(row["question"])) for row, _ in group]
    answers = [_blind_keys(samples, row) for row, samples in group]
    by_form: dict[str, Counter] = {}
    for form, counts in zip(forms, answers):
        by_form.setdefault(form, Counter()).update(counts)
    everything = sum(by_form.values(), Counter())
    right = 0.0
    for (row, _), form, own in zip(group, forms, answers):
        pooled = (by_form[form] - own) or (everything - own) or own
        total = sum(pooled.values())
        for text, count in pooled.items():
            if text is not None:
                verdict = _score(f"<answer>{text}</answer>", row).correct
                right += count / total * float(verdict or 0.0)
    return right / len(group)


def sampled_by_topic(rows: Sequence[Mapping[str, Any]], sampled: Sequence[Sequence[AnswerScore]],
                     formats: Sequence[str], topics: Sequence[str | None], question_format: str) -> dict:
    """{topic: {"accuracy", "blind", "contrast", "n"}} over the scorable rows of one format ("all": every
    topic): the mean accuracy of the sampled answers; the accuracy of an image-blind answerer with the same
    answers (`_blind_accuracy`); the share of rows whose samples hold both a right and a wrong answer (the
    rows on which a group of answers has a reward difference to learn from)."""
    groups: dict[str, list[tuple[Mapping[str, Any], list[AnswerScore]]]] = {}
    for row, samples, fmt, topic in zip(rows, sampled, formats, topics, strict=True):
        scored = [s for s in samples if s.correct is not None]
        if fmt == question_format and scored:
            groups.setdefault(topic or "other", []).append((row, scored))
    order = _topic_order(groups)

    def stats(group: list[tuple[Mapping[str, Any], list[AnswerScore]]], blind: float) -> dict[str, float | int]:
        hits = [[bool(s.correct) for s in samples] for _, samples in group]
        return {"accuracy": sum(sum(h) / len(h) for h in hits) / len(hits), "blind": blind,
                "contrast": sum(0 < sum(h) < len(h) for h in hits) / len(hits), "n": len(hits)}

    result = {t: stats(groups[t], _blind_accuracy(groups[t])) for t in order}
    if order:  # "all": the blind answerer of each template, weighted by its rows
        every = [item for t in order for item in groups[t]]
        result["all"] = stats(every, sum(result[t]["blind"] * result[t]["n"] for t in order) / len(every))
    return result


def think_matches(completion: str, scene: Scene) -> bool | None:
    """Whether the completion's <think> text is the scene's description (`corl.shapes.captions.think_text`,
    what the Shapes base model was taught to say before answering); None without a think block."""
    said = extract_tag(completion, "think")
    return None if said is None else " ".join(said.split()) == think_text(scene)


def _share(flags: Sequence[bool | None]) -> float | None:
    """The share of True among the known (not None) flags; None when none is known."""
    return mean_or_none([float(f) for f in flags if f is not None])


def accuracy_by_topic(scores: Sequence[Any], topics: Sequence[str | None], question_format: str,
                      think_right: Sequence[bool | None] | None = None) -> dict:
    """{topic: {"accuracy", "n"}} over the scorable rows of one format, topics in QUESTION_TOPICS order
    (questions of no known template under "other"); with `think_right` (per row, `think_matches`) also
    "think_match": the share of the template's answers with a think block whose think text is right."""
    think_right = think_right if think_right is not None else [None] * len(scores)
    hits: dict[str, list[float]] = {}
    thinks: dict[str, list[bool | None]] = {}
    for score, topic, think in zip(scores, topics, think_right, strict=True):
        if score.question_format == question_format and score.correct is not None:
            hits.setdefault(topic or "other", []).append(float(score.correct))
            thinks.setdefault(topic or "other", []).append(think)
    result = {t: {"accuracy": sum(hits[t]) / len(hits[t]), "n": len(hits[t])} for t in _topic_order(hits)}
    if any(f is not None for f in think_right):
        for t, entry in result.items():
            entry["think_match"] = _share(thinks[t])
    return result


def _rgb(image: Any) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise ValueError(f"the image column must hold PIL images, got {type(image).__name__}")  # noqa: TRY004  (bad data: a user error)
    return image.convert("RGB") if image.mode != "RGB" else image


def evaluate_shapes(
    policy: JanusPolicy,
    dataset_split: Any,
    images_per_prompt: int = 4,
    cfg_weight: float = DEFAULT_CFG_WEIGHT,
    seed: int = 0,
    max_rows: int | None = None,
    batch_size: int = 8,
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    model_path: str | None = None,
    return_details: bool = False,
    scorer: GenerationScorer | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    answer_samples: int = 0,
) -> dict[str, Any]:
    """Evaluate `policy` on Shapes rows (module docstring for the metrics and result keys).

    dataset_split: a datasets.Dataset (or sequence of row dicts) with columns prompt, scene, image,
    question, solution (question_type and category used when present). batch_size: prompts per
    generation call and questions per answer call. scorer: checks one generated image against a scene,
    returning a result with .passed and .reason (default: corl.shapes.score_generation). image_dir: also
    save the generated images there (row<index>_<j>.png). answer_samples: also sample that many answers
    per question at temperature 1 (`mc.sampled_by_topic`, `oe.sampled_by_topic`: sampled accuracy and the
    share of rows with both right and wrong samples, per question template).
    """
    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be >= 1, got {images_per_prompt}")
    if answer_samples < 0:
        raise ValueError(f"answer_samples must be >= 0, got {answer_samples}")
    rows = _rows(dataset_split, max_rows)
    scenes = [Scene.from_json(str(r["scene"])) for r in rows]
    scorer = scorer or default_generation_scorer()
    out_dir = Path(image_dir) if image_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    passed = _generation_pass(
        policy, rows, scenes, images_per_prompt, cfg_weight, seed, batch_size, scorer, out_dir
    )
    answers = [row_answers[0] for row_answers in _answer_pass(policy, rows, batch_size, max_new_tokens)]
    scores = [_score(a, r) for a, r in zip(answers, rows)]

    by_category: dict[str, list[bool]] = {}
    for row, scene, results in zip(rows, scenes, passed):
        by_category.setdefault(_category(row, scene), []).extend(bool(r.passed) for r in results)
    order = [c for c in CATEGORIES if c in by_category] + sorted(set(by_category) - set(CATEGORIES))
    per_category = {c: sum(by_category[c]) / len(by_category[c]) for c in order}

    unscorable = sum(s.correct is None for s in scores)
    if unscorable:
        logger.warning(
            "%d of %d understanding rows could not be scored (solution names no option)",
            unscorable,
            len(scores),
        )
    mc = [s.correct for s in scores if s.question_format == "mc" and s.correct is not None]
    oe = [s.correct for s in scores if s.question_format == "oe" and s.correct is not None]
    topics = [question_topic(str(row["question"])) for row in rows]
    think_right = [think_matches(a, scene) for a, scene in zip(answers, scenes)]

    result: dict[str, Any] = {"t2i.overall": mean_or_none(list(per_category.values()))}
    result.update({f"t2i.{c}": v for c, v in per_category.items()})
    result.update(
        {
            "t2i.n_images": sum(len(results) for results in passed),
            "mc.accuracy": mean_or_none(mc),
            "mc.n": len(mc),
            "oe.accuracy": mean_or_none(oe),
            "oe.n": len(oe),
            "format_rate": mean_or_none([float(s.formatted) for s in scores]),
            "think_match": _share(think_right),
            "mm2t.n_unscorable": unscorable,
            "mc.by_topic": accuracy_by_topic(scores, topics, "mc", think_right),
            "oe.by_topic": accuracy_by_topic(scores, topics, "oe", think_right),
            "settings": {
                "suite": "shapes",
                "model": model_path,
                "n_rows": len(rows),
                "images_per_prompt": images_per_prompt,
                "cfg_weight": cfg_weight,
                "seed": seed,
                "greedy": True,
                "batch_size": batch_size,
                "max_new_tokens": max_new_tokens,
                "answer_samples": answer_samples,
            },
        }
    )
    if answer_samples:
        sampled = [[_score(a, row) for a in row_answers] for row, row_answers in
                   zip(rows, _answer_pass(policy, rows, batch_size, max_new_tokens, answer_samples, seed))]
        formats = [s.question_format for s in scores]
        for fmt in ("mc", "oe"):
            result[f"{fmt}.sampled_by_topic"] = sampled_by_topic(rows, sampled, formats, topics, fmt)
    if return_details:
        result["details"] = [
            {
                "index": i,
                "prompt": str(row["prompt"]),
                "category": _category(row, scene),
                "t2i_passed": [bool(r.passed) for r in results],
                "t2i_reasons": [str(r.reason) for r in results],
                "question": str(row["question"]),
                "question_type": score.question_format,
                "topic": topic,
                "solution": row["solution"],
                "completion": answer,
                "extracted": score.extracted,
                "correct": score.correct,
                "formatted": score.formatted,
                "think_match": think,
            }
            for i, (row, scene, results, answer, score, topic, think) in enumerate(
                zip(rows, scenes, passed, answers, scores, topics, think_right)
            )
        ]
    return result


def unseen_accuracy(result: dict[str, Any], rows: Any, seen: set[tuple[str, str]]) -> dict[str, Any]:
    """MC and OE accuracy over the evaluated questions whose (scene JSON, question) pair is not in `seen`
    (the pairs training saw): `mc.accuracy_unseen`, `mc.n_unseen`, `oe.accuracy_unseen`, `oe.n_unseen` for
    each type with such a question. `result` needs its details (`return_details=True`); `rows` are the
    evaluated rows, with a scene column."""
    scenes, questions = rows["scene"], rows["question"]
    out: dict[str, Any] = {}
    for kind in ("mc", "oe"):
        kept = [d["correct"] for d in result["details"] if d["question_type"] == kind and d["correct"] is not None
                and (scenes[d["index"]], questions[d["index"]]) not in seen]
        if kept:
            out[f"{kind}.accuracy_unseen"] = sum(kept) / len(kept)
            out[f"{kind}.n_unseen"] = len(kept)
    return out
