"""Bad model folders and images given to `corl answer` / `corl generate` / `corl train`: each is named in
one line before transformers builds anything (no default-size model built for a foreign config, no
SafetensorError or sentencepiece message, no process killed for memory)."""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image




def model_copy(fuzz, name: str = "model"):
    target = fuzz.tmp / name
    shutil.copytree(fuzz.model, target)
    return target


def answer(fuzz, model, image=None):
    image = image or fuzz.write("picture.png", fuzz.png(1))
    return fuzz.run("answer", "--image", image, "--question", "How many shapes?", "--model", model,
                    "--max-new-tokens", "4")


# ------------------------------------------------------------------------------------ model folders


def test_missing_model_path(fuzz):
    fuzz.expect_error(answer(fuzz, "/nonexistent/model"), "/nonexistent/model")


def test_relative_missing_model_path(fuzz):
    fuzz.expect_error(answer(fuzz, "./models/none"), "models/none")


def test_folder_without_config(fuzz):
    (fuzz.tmp / "empty-model").mkdir()
    fuzz.expect_error(answer(fuzz, fuzz.tmp / "empty-model"), ("empty-model", "config.json"))


def test_another_architecture(fuzz):
    folder = fuzz.tmp / "llama"
    fuzz.write("llama/config.json", json.dumps({"model_type": "llama", "hidden_size": 8}))
    fuzz.expect_error(answer(fuzz, folder), ("llama", "Janus"))


def test_damaged_config_json(fuzz):
    model = model_copy(fuzz)
    (model / "config.json").write_text('{"model_type": "janus", ')
    fuzz.expect_error(answer(fuzz, model), "config.json")


def test_missing_weights(fuzz):
    model = model_copy(fuzz)
    (model / "model.safetensors").unlink()
    fuzz.expect_error(answer(fuzz, model), ("model", "model.safetensors"))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_weights(fuzz, damage):
    model = model_copy(fuzz)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    fuzz.expect_error(answer(fuzz, model), "model.safetensors")


def test_missing_tokenizer(fuzz):
    model = model_copy(fuzz)
    (model / "tokenizer.json").unlink()
    fuzz.expect_error(answer(fuzz, model), ("tokenizer",))


def test_model_larger_than_memory(fuzz, monkeypatch):
    import corl.policy.model_files as model_files

    monkeypatch.setattr(model_files, "available_memory", lambda device: 1024)  # 1 KiB left
    fuzz.expect_error(answer(fuzz, fuzz.model), ("GiB", "available"))


def test_hub_id_not_cached_offline(fuzz):
    fuzz.expect_error(answer(fuzz, "nobody/no-such-model"), "nobody/no-such-model")


def test_shapes_base_alias_without_a_base_model(fuzz, monkeypatch):
    monkeypatch.setenv("CORL_SHAPES_BASE", str(fuzz.tmp / "no-base"))
    fuzz.expect_error(answer(fuzz, "shapes-base"), ("no-base", "make-base"))


def test_train_with_a_foreign_model_stops_before_loading(fuzz):
    fuzz.write("llama/config.json", json.dumps({"model_type": "llama"}))
    fuzz.expect_error(fuzz.run("train", "shapes-tiny/t2i", "--out", "run", f"model.name_or_path={fuzz.tmp / 'llama'}"),
                      "llama")


# -------------------------------------------------------------------------------- images to answer

BAD_IMAGES = {  # file name -> its bytes
    "garbage.png": lambda fuzz: os.urandom(500),
    "truncated.png": lambda fuzz: fuzz.png(2, size=64)[:300],
    "empty.png": lambda fuzz: b"",
    "notes.txt": lambda fuzz: b"a text file\n",
    "fake.jpg": lambda fuzz: b"\xff\xd8\xff\xe0" + os.urandom(100),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_answer_refuses_an_unreadable_image(fuzz, name):
    fuzz.expect_error(answer(fuzz, fuzz.model, fuzz.write(name, BAD_IMAGES[name](fuzz))), name)


def test_answer_refuses_a_decompression_bomb(fuzz, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    fuzz.expect_error(answer(fuzz, fuzz.model, fuzz.write("bomb.png", fuzz.png(3, size=40))), ("bomb.png", "too large"))


def test_answer_refuses_a_folder_as_image(fuzz):
    (fuzz.tmp / "pictures").mkdir()
    fuzz.expect_error(answer(fuzz, fuzz.model, fuzz.tmp / "pictures"), "pictures")


def test_answer_reads_rgba_and_grayscale_images(fuzz):
    for mode in ("RGBA", "L", "P"):
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).convert(mode).save(buffer, "PNG")
        fuzz.expect_ok(answer(fuzz, fuzz.model, fuzz.write(f"{mode}.png", buffer.getvalue())))


# ------------------------------------------------------------------------------------ over-long text


def test_answer_cuts_an_over_long_question_and_says_so(fuzz):
    question = "Count the red circles and the blue squares in the picture. " * 400  # ~10k characters
    result = fuzz.ok("answer", "--image", fuzz.write("p.png", fuzz.png(4)), "--question", question,
                     "--model", fuzz.model, "--max-new-tokens", "4")
    assert "too long for the model" in result.text and "cut" in result.text


def test_generate_cuts_an_over_long_prompt_and_says_so(fuzz):
    prompt = "a red circle above a blue square " * 500
    result = fuzz.ok("generate", "--prompt", prompt, "--model", fuzz.model, "-n", "1", "--out", "g.png")
    assert "too long for the model" in result.text and (fuzz.tmp / "g.png").is_file()


def test_generate_into_a_path_under_a_file_is_named(fuzz):
    fuzz.write("taken", "a file")
    fuzz.expect_error(fuzz.run("generate", "--prompt", "two circles", "--model", fuzz.model, "-n", "1",
                               "--out", "taken/grid.png"), "taken")


@pytest.mark.parametrize("command", [
    ["generate", "--prompt", "two circles", "-n", "1"],
    ["eval", "--out", "e.json", "--max-rows", "2"],
    ["train", "shapes-tiny/t2i", "--out", "run"],
    ["merge", "--b", "{model}", "--out", "merged"],
])
def test_every_command_names_a_missing_model_path(fuzz, command):
    command = [part.format(model=fuzz.model) for part in command]
    flag = {"train": "model.name_or_path=/nonexistent/model", "merge": "--a"}.get(command[0], "--model")
    argv = [*command, flag] if "=" in flag else [*command, flag, "/nonexistent/model"]
    fuzz.error(*argv, names="/nonexistent/model")
