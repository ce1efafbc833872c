from __future__ import annotations

import argparse

import pytest
from PIL import Image

from corl.cli import generate as commands
from corl.cli import main
from corl.policy.loading import SHAPES_BASE_ENV, save_policy
from corl.policy.policy import JanusPolicy
from corl.policy.testing import sample_images, tiny_janus


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model, processor = tiny_janus(4)
    return save_policy(JanusPolicy(model, processor), tmp_path_factory.mktemp("cli") / "tiny")


def parse(argv):
    parser = argparse.ArgumentParser(prog="corl")
    commands.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_generate_writes_a_grid(checkpoint, tmp_path, capsys):
    out = tmp_path / "grid.png"
    args = parse(
        [
            "generate",
            "--model",
            str(checkpoint),
            "--prompt",
            "a red circle",
            "--images-per-prompt",
            "4",
            "--out",
            str(out),
            "--cfg",
            "3",
            "--seed",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert args.func(args) == 0
    with Image.open(out) as grid:  # 2 x 2 cells of 256 px with 8 px gaps, the caption below
        assert grid.width == 2 * (256 + 8) + 8 and grid.height > grid.width
        assert grid.getpixel((3, 3)) == (224, 224, 224)  # the grey frame
    assert "wrote 4 images" in capsys.readouterr().out
    args.raw = True  # --raw: the model's pixels, edge to edge
    assert args.func(args) == 0
    with Image.open(out) as grid:
        assert grid.size == (64, 64)  # 2 x 2 images of 32 px


def test_answer_prints_text(checkpoint, tmp_path, capsys):
    image_path = tmp_path / "scene.png"
    sample_images(1)[0].save(image_path)
    args = parse(
        [
            "answer",
            "--model",
            str(checkpoint),
            "--image",
            str(image_path),
            "--question",
            "what color?",
            "--max-new-tokens",
            "4",
            "--device",
            "cpu",
        ]
    )
    assert args.greedy is True
    assert args.func(args) == 0
    first = capsys.readouterr().out
    assert args.func(args) == 0
    assert capsys.readouterr().out == first  # greedy: deterministic
    sampled = parse(["answer", "--image", str(image_path), "--question", "q", "--sample"])
    assert sampled.greedy is False


def test_missing_default_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(SHAPES_BASE_ENV, str(tmp_path / "nowhere"))
    args = parse(["generate", "--prompt", "a red circle"])
    with pytest.raises(FileNotFoundError, match="make-base"):
        args.func(args)


def test_greedy_and_sample_are_exclusive():
    with pytest.raises(SystemExit):
        parse(["answer", "--image", "x.png", "--question", "q", "--greedy", "--sample"])


@pytest.mark.parametrize("kind", ["empty", "garbage", "truncated", "too-large"])
def test_answer_with_a_bad_image_is_one_line_naming_it(tmp_path, monkeypatch, capsys, kind):
    from corl.cli import main

    good = tmp_path / "good.png"
    sample_images(1)[0].save(good)
    data = good.read_bytes()
    image_path = tmp_path / f"{kind}.png"
    image_path.write_bytes({"empty": b"", "garbage": b"\x00\x01 not an image" * 20, "truncated": data[: len(data) // 2],
                            "too-large": data}[kind])
    if kind == "too-large":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    # The image is read before any model: an unloadable default model must not be reached.
    monkeypatch.setenv(SHAPES_BASE_ENV, str(tmp_path / "nowhere"))
    assert main(["answer", "--image", str(image_path), "--question", "q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("corl answer: error: ") and str(image_path) in err
    if kind == "too-large":
        assert "image too large" in err


def test_answer_prints_the_answer_and_raw_the_whole_completion(checkpoint, tmp_path, capsys, monkeypatch):
    import types

    import corl.generation.rollout as rollout

    completion = "<think>two shapes, both red</think> <answer>two</answer>"
    monkeypatch.setattr(rollout, "rollout_text",
                        lambda *a, **k: types.SimpleNamespace(texts=[completion], prompts_cut=0))
    image_path = tmp_path / "scene.png"
    sample_images(1)[0].save(image_path)
    argv = ["answer", "--model", str(checkpoint), "--image", str(image_path), "--question", "how many?"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == "two"
    assert main([*argv, "--raw"]) == 0
    assert capsys.readouterr().out.strip() == completion
