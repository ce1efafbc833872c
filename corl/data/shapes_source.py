"""The Shapes dataset as a training and evaluation source: built once per size into the corl cache."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from corl.paths import cache_root
from corl.shapes.dataset import build_shapes_dataset
from corl.shapes.dataset_defaults import DEFAULT_IMAGE_SIZE, DEFAULT_N_TEST, DEFAULT_N_TRAIN, DEFAULT_SEED

logger = logging.getLogger(__name__)


def default_shapes_dir(
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int | None = None,
    image_size: int | None = None,
) -> Path:
    """The Shapes dataset directory for these sizes under the corl cache, built (once, atomically) if
    missing. Unset sizes take the world's defaults (`corl.shapes.dataset_defaults`), which `corl shapes build`, training (`data.source:
    shapes`), `corl eval --suite shapes` and `corl demo` all share."""
    n_train = DEFAULT_N_TRAIN if n_train is None else n_train
    n_test = DEFAULT_N_TEST if n_test is None else n_test
    seed = DEFAULT_SEED if seed is None else seed
    image_size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    folder = cache_root() / "shapes" / f"train{n_train}-test{n_test}-seed{seed}-px{image_size}"
    if (folder / "dataset_dict.json").is_file():
        return folder
    logger.info("building the Shapes dataset into %s", folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        build_shapes_dataset(n_train, n_test, seed=seed, image_size=image_size).save_to_disk(str(tmp))
        if (folder / "dataset_dict.json").is_file():  # built meanwhile by another process
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def shapes_dir_of(data: Any) -> Path:
    """The Shapes dataset directory of a `DataConfig`'s shapes_* sizes (built if missing)."""
    return default_shapes_dir(data.shapes_n_train, data.shapes_n_test, data.shapes_seed, data.shapes_image_size)


def resolve_source(data: Any) -> str:
    """A `DataConfig`'s source as `load_rows` reads it: `shapes` becomes its dataset directory."""
    return str(shapes_dir_of(data)) if data.source == "shapes" else data.source
