"""Scoring one understanding answer, and small helpers shared by the evaluation suites.

Answers are scored exactly as the training rewards score them (corl.rewards), so an evaluation number
and a reward mean measure the same thing:
- the answer is the content of the last <answer>...</answer> pair (`corl.rewards.accuracy.answer_span`);
  a completion without a complete pair is wrong (the default of R_acc);
- the row's format (MC / OE) comes from its question type, else from its solution and parsed options
  (`question_format`);
- MC: the answer names an option letter, or option text that maps to it (`mc_score`); OE: normalized
  exact match with number words equal to digits (`oe_score`); a solution may be a list of acceptable
  answers;
- "formatted" is R_format: the whole completion is <think>...</think> then <answer>...</answer>.
A row whose solution names no option (bad data) is unscorable: `correct` is None, and the suites count
and log it instead of scoring it 0.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from corl.rewards.accuracy import answer_span, mc_score, oe_score, question_format
from corl.rewards.format import has_think_answer_format
from corl.rewards.text import completion_text

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class AnswerScore:
    """question_format: "mc" or "oe"; extracted: the <answer> content (None without one); correct: 1.0 / 0.0,
    or None for an unscorable row; formatted: the completion has the <think><answer> format."""

    question_format: str
    extracted: str | None
    correct: float | None
    formatted: bool


def score_answer(
    completion: Any,
    solution: Any,
    question: str | None,
    question_type: str | None = None,
    partial_credit: bool = False,
) -> AnswerScore:
    """Score one completion against its row (module docstring)."""
    fmt = question_format(question_type, question, solution)
    extracted = answer_span(completion, require_answer_tag=True)
    if fmt == "mc":
        correct = mc_score(extracted, solution, question)
    else:
        correct = oe_score(extracted, solution, partial_credit=partial_credit)
    formatted = has_think_answer_format(completion_text(completion))
    return AnswerScore(question_format=fmt, extracted=extracted, correct=correct, formatted=formatted)


# ---- helpers -----------------------------------------------------------------------------------


def batched(items: Sequence[T], size: int) -> Iterator[tuple[int, Sequence[T]]]:
    """(start index, slice) over `items` in slices of `size`."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


def batch_seed(seed: int, start: int) -> int:
    """The RNG seed of the batch starting at row `start`: distinct per batch, fixed for (seed, start)."""
    return seed * 1_000_003 + start


def mean_or_none(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def check_count(got: Sequence[Any], expected: int, what: str) -> None:
    if len(got) != expected:
        raise ValueError(f"the policy returned {len(got)} {what}, expected {expected}")


def write_json_atomic(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write JSON to `path` through a temporary file in the same folder and os.replace (no torn files)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=False, default=_json_default)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def save_image_atomic(image: Image.Image, path: str | os.PathLike[str]) -> None:
    """Save a PNG through a temporary file + os.replace, so a crash never leaves a truncated image."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def image_grid(images: Sequence[Image.Image], cols: int) -> Image.Image:
    """Tile equally sized images row-major (left to right, then top to bottom) into one RGB image."""
    if not images:
        raise ValueError("no images to tile")
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise ValueError(f"images to tile must share one size, got {sorted(sizes)}")
    (w, h), rows = images[0].size, math.ceil(len(images) / cols)
    grid = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((i % cols) * w, (i // cols) * h))
    return grid


FRAME = (224, 224, 224)


def captioned_grid(images: Sequence[Image.Image], caption: str, cols: int | None = None, cell: int = 256,
                   border: int = 8) -> Image.Image:
    """Images a person can look at: each scaled up to `cell` px (nearest neighbour, so the pixels a small
    model drew stay visible), framed by a `border` px gap, with `caption` wrapped under the grid."""
    import textwrap

    from PIL import ImageDraw, ImageFont

    if not images:
        raise ValueError("no images to tile")
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    font = ImageFont.load_default(size=max(12, cell // 14))
    lines = textwrap.wrap(caption, width=max(20, int(cols * (cell + border) / (0.55 * font.size))))
    line_height = int(font.size * 1.3)
    width = cols * (cell + border) + border
    height = rows * (cell + border) + border + line_height * len(lines) + (border if lines else 0)
    grid = Image.new("RGB", (width, height), FRAME)  # grey: the white backgrounds of images stay apart
    draw = ImageDraw.Draw(grid)
    for i, image in enumerate(images):
        x, y = border + (i % cols) * (cell + border), border + (i // cols) * (cell + border)
        grid.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST), (x, y))
        draw.rectangle((x - 1, y - 1, x + cell, y + cell), outline=(120, 120, 120))
    top = rows * (cell + border) + border
    for n, line in enumerate(lines):
        draw.text((border, top + n * line_height), line, fill=(0, 0, 0), font=font)
    return grid
