"""A PNG contact sheet of dataset rows: each image with its caption, question and solution."""

from __future__ import annotations

import logging
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
from datasets import Dataset

logger = logging.getLogger(__name__)

COLUMNS = 4
TEXT_WIDTH = 34  # characters per wrapped line


def _row_text(row: dict) -> str:
    lines = [f"[{row.get('category', '?')} / {row.get('question_type', '?')}]"]
    lines += textwrap.wrap(f"caption: {row['prompt']}", TEXT_WIDTH)
    for i, qline in enumerate(str(row["question"]).splitlines()):
        lines += textwrap.wrap(("Q: " if i == 0 else "   ") + qline, TEXT_WIDTH)
    lines.append(f"solution: {row['solution']}")
    return "\n".join(lines)


def make_sample_sheet(dataset_split: Dataset, n: int, out_path: str | Path) -> Path:
    """Write a sheet of the first `n` rows of `dataset_split` to `out_path` (PNG); returns the path."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    missing = {"prompt", "image", "question", "solution"} - set(dataset_split.column_names)
    if missing:
        raise KeyError(f"dataset split lacks columns {sorted(missing)}")
    n = min(n, len(dataset_split))
    if n == 0:
        raise ValueError("dataset split is empty")
    rows = [dataset_split[i] for i in range(n)]
    cols = min(COLUMNS, n)
    grid_rows = math.ceil(n / cols)
    # Two figure rows per sheet row: the image (2 in) and its text (1.6 in).
    fig, axes = plt.subplots(
        2 * grid_rows, cols, figsize=(2.6 * cols, 3.6 * grid_rows),
        gridspec_kw={"height_ratios": [2.0, 1.6] * grid_rows}, squeeze=False,
    )
    for ax in axes.flat:
        ax.axis("off")
    for i, row in enumerate(rows):
        r, c = divmod(i, cols)
        img_ax = axes[2 * r, c]
        img_ax.imshow(row["image"].convert("RGB"), interpolation="nearest")
        img_ax.axis("on")  # keep a frame: the white background would otherwise merge with the page
        img_ax.set_xticks([])
        img_ax.set_yticks([])
        axes[2 * r + 1, c].text(0.0, 1.0, _row_text(row), va="top", ha="left", fontsize=7,
                                family="monospace", transform=axes[2 * r + 1, c].transAxes)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    logger.debug("wrote a sheet of %d samples to %s", n, out)  # the path is returned: the caller says it
    return out
