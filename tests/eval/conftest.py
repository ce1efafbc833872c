"""The eval tests run the suites against `FakePolicy` (tests/eval/helpers.py): every test here has the
suites' `generate_images` / `answer` routed to the fake's methods (a real JanusPolicy still gets the real
functions)."""

from __future__ import annotations

import pytest

from .helpers import route_to_fakes, scenes_by_caption, shapes_split, solutions_by_question  # noqa: F401


@pytest.fixture(autouse=True)
def _fake_eval_calls(monkeypatch):
    route_to_fakes(monkeypatch)
