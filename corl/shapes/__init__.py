"""The Shapes world: small synthetic scenes of colored shapes, with captions, questions, an analyzer
that reads images back, a GenEval-style scorer and a dataset builder.

The world imports nothing else from corl; everything else may import it. Names are imported lazily, so
that reading `corl.shapes.dataset_defaults` (as the config does) does not load `datasets`.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES: dict[str, tuple[str, ...]] = {  # module -> the names it exports here
    "corl.shapes.analyzer": ("UNKNOWN", "DetectedObject", "analyze", "describe"),
    "corl.shapes.captions": ("caption_for",),
    "corl.shapes.dataset": ("FEATURES", "build_shapes_dataset", "make_row"),
    "corl.shapes.questions": ("make_question", "parse_mc_options"),
    "corl.shapes.render": ("degrade", "render_objects", "render_scene"),
    "corl.shapes.scene": ("CATEGORIES", "COLORS", "GRID", "RELATIONS", "SHAPES", "Scene", "ShapeObject",
                          "number_word", "sample_scene"),
    "corl.shapes.scorer": ("GenEvalResult", "score_detections", "score_generation", "summarize_results"),
}
_EXPORTS: dict[str, str] = {name: module for module, names in _MODULES.items() for name in names}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'corl.shapes' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
