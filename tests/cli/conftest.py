"""The `corl eval` tests (test_eval.py) share the eval tests' fakes, fixtures and data (tests/eval/helpers.py).

pytest's importlib mode puts neither test folder on sys.path, so tests/eval is not importable from here:
the helper module is loaded from its file, once.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "_corl_tests_eval_helpers"


def _load_eval_helpers():
    if _NAME not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "eval" / "helpers.py"
        spec = importlib.util.spec_from_file_location(_NAME, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[_NAME]


eval_helpers = _load_eval_helpers()
fake_eval_calls = eval_helpers.fake_eval_calls
shapes_split = eval_helpers.shapes_split
scenes_by_caption = eval_helpers.scenes_by_caption
solutions_by_question = eval_helpers.solutions_by_question
