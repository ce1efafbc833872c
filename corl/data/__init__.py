"""The corl data layer: row schema, column adapters, loaders with row checks, and batch sampling.

Typical use::

    from corl.data import load_rows, EpochSampler, collate_rows

    loaded = load_rows("mm-vl/x2x_rft_22k", task="unified")   # or a local dir / parquet / jsonl
    print(loaded.report.summary())
    sampler = EpochSampler(len(loaded.dataset), batch_size=2, seed=42, world_size=8, rank=0)
    batch = collate_rows(loaded.dataset, sampler.indices(epoch=0, step=0))
    # batch: {"prompt": [str, ...], "image": [RGB PIL, ...], "question": [...], ...}
"""

from corl.data.adapters import UPSTREAM_LAYOUTS, ColumnResolution, detect_layout, resolve_columns
from corl.data.collate import EpochSampler, collate_rows, sample_batch, strata_of
from corl.data.images import ImageCheck, ImageDecodeError, inspect_image, to_rgb_image
from corl.data.loading import LoadedData, LoadReport, SkippedRow, load_rows, prepare_rows, read_source
from corl.data.schema import (
    CORL_COLUMNS,
    IMAGE,
    MULTIPLE_CHOICE,
    OPEN_ENDED,
    PROMPT,
    QUESTION,
    QUESTION_TYPE,
    QUESTION_TYPES,
    SOLUTION,
    T2I,
    TASKS,
    UNIFIED,
    infer_question_type,
    normalize_question_type,
    required_columns,
    task_needs_image,
)

__all__ = [
    "CORL_COLUMNS",
    "IMAGE",
    "MULTIPLE_CHOICE",
    "OPEN_ENDED",
    "PROMPT",
    "QUESTION",
    "QUESTION_TYPE",
    "QUESTION_TYPES",
    "SOLUTION",
    "T2I",
    "TASKS",
    "UNIFIED",
    "UPSTREAM_LAYOUTS",
    "ColumnResolution",
    "EpochSampler",
    "strata_of",
    "ImageCheck",
    "ImageDecodeError",
    "LoadReport",
    "LoadedData",
    "SkippedRow",
    "collate_rows",
    "detect_layout",
    "infer_question_type",
    "inspect_image",
    "load_rows",
    "normalize_question_type",
    "prepare_rows",
    "read_source",
    "required_columns",
    "resolve_columns",
    "sample_batch",
    "task_needs_image",
    "to_rgb_image",
]
