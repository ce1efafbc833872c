"""Evaluation: the Shapes suite, image dumps for GenEval / DPG-Bench / WISE, MC / OE benchmark scoring.

- `evaluate_shapes(policy, split, ...)` (corl.eval.shapes_suite): GenEval-style generation pass rates per
  category, MC / OE accuracy and format rate on Shapes rows.
- `dump_images(policy, benchmark, items, outdir, ...)` with `read_prompts(benchmark, source)`
  (corl.eval.image_dumps): images in the folder layouts the official GenEval, DPG-Bench and WISE scorers read.
- `evaluate_benchmark(policy, spec, ...)` with `resolve_benchmark(name)` / `BenchmarkSpec`
  (corl.eval.answer_benchmarks): MMStar / MMMU / POPE style understanding benchmarks through corl.data.
- `score_answer(completion, solution, question, question_type)` (corl.eval.grading): one answer, scored as
  the training rewards score it.

Names are imported lazily so that `corl --help` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "evaluate_shapes": "corl.eval.shapes_suite",
    "default_generation_scorer": "corl.eval.shapes_suite",
    "dump_images": "corl.eval.image_dumps",
    "read_prompts": "corl.eval.image_dumps",
    "read_geneval_metadata": "corl.eval.image_dumps",
    "read_dpg_prompts": "corl.eval.image_dumps",
    "read_wise_prompts": "corl.eval.image_dumps",
    "DumpReport": "corl.eval.image_dumps",
    "BenchmarkSpec": "corl.eval.answer_benchmarks",
    "evaluate_benchmark": "corl.eval.answer_benchmarks",
    "load_benchmark": "corl.eval.answer_benchmarks",
    "resolve_benchmark": "corl.eval.answer_benchmarks",
    "score_answer": "corl.eval.grading",
    "AnswerScore": "corl.eval.grading",
    "write_json_atomic": "corl.eval.grading",
}

__all__ = [  # noqa: RUF022  (grouped like _EXPORTS)
    "evaluate_shapes",
    "default_generation_scorer",
    "dump_images",
    "read_prompts",
    "read_geneval_metadata",
    "read_dpg_prompts",
    "read_wise_prompts",
    "DumpReport",
    "BenchmarkSpec",
    "evaluate_benchmark",
    "load_benchmark",
    "resolve_benchmark",
    "score_answer",
    "AnswerScore",
    "write_json_atomic",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'corl.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
