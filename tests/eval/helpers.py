"""Fakes, fixtures and data shared by the eval tests and tests/cli/test_eval.py (`corl eval`).

The suites call `generate_images(policy, ...)` / `answer(policy, ...)` (corl.generation.rollout), looked up
in their own modules. `route_to_fakes` patches those names so that a `FakePolicy` answers the calls itself
(no model; these tests do not depend on corl.policy) while a real JanusPolicy still reaches the real
functions. Plain module, no relative imports: tests/cli loads it from its file (pytest's importlib mode
puts neither test folder on sys.path).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path

import datasets
import pytest
from PIL import Image

from corl.shapes import Scene, build_shapes_dataset, render_scene

# The suites' modules and the corl.generation.rollout functions each of them looks up.
EVAL_CALLS = {
    "corl.eval.shapes_suite": ("generate_images", "answer"),
    "corl.eval.image_dumps": ("generate_images",),
    "corl.eval.answer_benchmarks": ("answer",),
}


class FakePolicy:
    """generate_images: a render of the caption's scene (from `scenes`), or a blank image with probability
    `fail_rate` (decided by a Random(seed) stream, so results depend on the seed like a real sampler);
    captions without a scene get a solid image whose color encodes (caption index, image index, seed).
    answer: `answer_fn(question)`, or a fixed completion. Every call is recorded.
    The suites reach these methods through `route_to_fakes`."""

    def __init__(
        self,
        scenes: Mapping[str, Scene] | None = None,
        answer_fn: Callable[[str], str] | None = None,
        fail_rate: float = 0.0,
        size: int = 48,
    ) -> None:
        self.scenes = dict(scenes or {})
        self.answer_fn = answer_fn or (lambda q: "<think>hmm</think><answer>A</answer>")
        self.fail_rate = fail_rate
        self.size = size
        self.image_calls: list[dict] = []
        self.answer_calls: list[dict] = []

    def generate_images(self, captions, n, *, cfg_weight=5.0, seed=0, temperature=1.0):
        self.image_calls.append(
            {
                "captions": list(captions),
                "n": n,
                "cfg_weight": cfg_weight,
                "seed": seed,
                "temperature": temperature,
            }
        )
        rng = random.Random(seed)
        images = []
        for c, caption in enumerate(captions):
            for j in range(n):
                if caption in self.scenes and rng.random() >= self.fail_rate:
                    images.append(render_scene(self.scenes[caption], self.size))
                elif caption in self.scenes:
                    images.append(Image.new("RGB", (self.size, self.size), "white"))
                else:
                    color = ((37 * c + 11 * j + seed) % 256, (5 * j) % 256, (seed * 7) % 256)
                    images.append(Image.new("RGB", (self.size, self.size), color))
        return images

    def answer(self, images, questions, *, greedy=True, max_new_tokens=256, temperature=1.0, seed=None):
        assert len(images) == len(questions)
        assert all(isinstance(im, Image.Image) and im.mode == "RGB" for im in images)
        self.answer_calls.append(
            {"questions": list(questions), "greedy": greedy, "max_new_tokens": max_new_tokens,
             "temperature": temperature, "seed": seed}
        )
        return [self.answer_fn(q) for q in questions]


def route_to_fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patch the suites' `generate_images` / `answer` so a FakePolicy (or subclass) serves the call with its
    own method of the same name; any other policy goes to the function the module had."""
    import importlib

    for module_name, names in EVAL_CALLS.items():
        module = importlib.import_module(module_name)
        for name in names:
            real = getattr(module, name)

            def routed(policy, *args, _real=real, _name=name, **kwargs):
                if isinstance(policy, FakePolicy):
                    return getattr(policy, _name)(*args, **kwargs)
                return _real(policy, *args, **kwargs)

            monkeypatch.setattr(module, name, routed)


@pytest.fixture
def fake_eval_calls(monkeypatch):
    route_to_fakes(monkeypatch)


@pytest.fixture(scope="session")
def shapes_split():
    """12 Shapes test rows: two per category, MC and OE balanced."""
    return build_shapes_dataset(0, 12, seed=0)["test"]


@pytest.fixture(scope="session")
def scenes_by_caption(shapes_split):
    return {row["prompt"]: Scene.from_json(row["scene"]) for row in shapes_split}


@pytest.fixture(scope="session")
def solutions_by_question(shapes_split):
    return {row["question"]: row["solution"] for row in shapes_split}


def image(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (16, 16), color)


def write_parquet(path: Path, columns: dict, image_columns: tuple[str, ...] = ("image",)) -> Path:
    features = {
        name: datasets.Image() if name in image_columns else datasets.Value("string") for name in columns
    }
    datasets.Dataset.from_dict(columns, features=datasets.Features(features)).to_parquet(str(path))
    return path


# GenEval's evaluation_metadata.jsonl format.
GENEVAL_LINES = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {
        "tag": "counting",
        "include": [{"class": "cup", "count": 3}],
        "exclude": [{"class": "cup", "count": 4}],
        "prompt": "a photo of three cups",
    },
    {
        "tag": "position",
        "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1, "position": ["left of", 0]}],
        "prompt": "a photo of a cat left of a dog",
    },
]
