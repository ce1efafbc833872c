from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from transformers import JanusForConditionalGeneration, JanusProcessor

from corl.basemodel.pipeline import REPORT_NAME, make_base_model, mediocrity_check, shapes_vocabulary
from corl.cli import main
from corl.generation.rollout import answer, rollout_images
from corl.policy.loading import SHAPES_BASE_ENV, SHIPPED_SHAPES_BASE, default_model_path, load_policy
from corl.policy.tokenizer import BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN, PAD_TOKEN, REASONING_TAGS
from corl.shapes.captions import caption_for, think_text
from corl.shapes.questions import make_question
from corl.shapes.render import render_scene
from corl.shapes.scene import sample_scene


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("base") / "shapes-base"
    return out, make_base_model(out, seed=0, quick=True)


def test_quick_recipe_saves_a_loadable_checkpoint_with_a_report(quick_build):
    out, report = quick_build
    assert json.loads((out / REPORT_NAME).read_text()) == report
    for key in ("t2i.overall", "mc.accuracy", "oe.accuracy", "format_rate", "oe.sampled_by_topic"):
        assert key in report["evaluation"]
    assert report["evaluation_settings"]["answer_samples"] == 2
    assert report["parameters"]["total"] == sum(v for k, v in report["parameters"].items() if k != "total")
    assert 0 < report["checkpoint_bytes"] < 25 * 2**20
    assert set(report["timings_seconds"]) == {"data_and_init", "vq", "vision", "sft_data", "sft", "eval", "save"}
    assert report["vision_pretraining"]["steps"] == 2 and "probe_accuracy_test" in report["vision_pretraining"]
    assert report["machine"]["cpu"] and report["machine"]["cpu_capability"]

    model = JanusForConditionalGeneration.from_pretrained(out)
    processor = JanusProcessor.from_pretrained(out)
    tokenizer = processor.tokenizer
    assert model.config.vision_config.num_image_tokens == processor.num_image_tokens == 36
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)
    assert model.generation_config.generation_kwargs["boi_token_id"] == tokenizer.convert_tokens_to_ids(
        processor.image_start_token)
    for tag in REASONING_TAGS:  # single tokens, kept by skip_special_tokens
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) == 1


def test_policy_from_the_quick_checkpoint_rolls_out_images_and_answers(quick_build):
    out, _ = quick_build
    policy = load_policy(out, dtype="fp32", device="cpu")
    assert (policy.tokens.bos_id, policy.tokens.eos_id, policy.tokens.pad_id) == (0, 1, 2)
    rollout = rollout_images(policy, ["a red circle above a blue square"], group_size=2, seed=0)
    assert tuple(rollout.image_tokens.shape) == (2, 36)
    assert [im.size for im in rollout.images] == [(48, 48), (48, 48)]
    scene = sample_scene(random.Random(0))
    answers = answer(policy, [render_scene(scene)], ["What color is the circle?"], max_new_tokens=6)
    assert len(answers) == 1 and isinstance(answers[0], str)


def test_make_base_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        make_base_model(tmp_path, quick=True)


def test_cli_make_base_quick(tmp_path, capsys):
    out = tmp_path / "cli-base"
    assert main(["shapes", "make-base", "--out", str(out), "--quick", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "saved Shapes base model" in printed and "generation pass rate" in printed
    assert "answers sampled at temperature 1 (2 per question)" in printed
    assert json.loads((out / REPORT_NAME).read_text())["seed"] == 1


def test_vocabulary_covers_the_words_of_fresh_rows():
    vocab = set(shapes_vocabulary(samples=300))
    rng = random.Random(99)
    for i in range(30):
        scene = sample_scene(rng)
        texts = [caption_for(scene, rng), *make_question(scene, rng, "mc" if i % 2 else "oe"), think_text(scene)]
        words = {w for t in texts for w in re.findall(r"[A-Za-z]+|\d+", t)}
        assert words <= vocab, words - vocab


def test_mediocrity_check():
    good = {"t2i.overall": 0.4, "mc.accuracy": 0.3, "oe.accuracy": 0.5, "format_rate": 0.7}
    assert mediocrity_check(good)["all"]
    assert not mediocrity_check({**good, "mc.accuracy": 0.9})["all"]
    assert not mediocrity_check({**good, "format_rate": 1.0})["format_rate"]
    assert not mediocrity_check({**good, "oe.accuracy": None})["oe.accuracy"]


# ---- the shipped checkpoint --------------------------------------------------------------------------

shipped = pytest.mark.skipif(not (SHIPPED_SHAPES_BASE / "config.json").is_file(),
                             reason="no checkpoint shipped in corl/assets/shapes-base")


@shipped
def test_shipped_checkpoint_loads_with_plain_transformers_and_met_its_targets():
    model = JanusForConditionalGeneration.from_pretrained(SHIPPED_SHAPES_BASE)
    processor = JanusProcessor.from_pretrained(SHIPPED_SHAPES_BASE)
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert processor.num_image_tokens == model.config.vision_config.num_image_tokens == 36
    report = json.loads((SHIPPED_SHAPES_BASE / REPORT_NAME).read_text())
    assert report["seed"] == 0 and not report["quick"] and report["targets"]["all"]
    size = sum(f.stat().st_size for f in SHIPPED_SHAPES_BASE.iterdir() if f.is_file())
    assert size <= 25 * 10**6


@shipped
def test_default_model_path_prefers_env_then_shipped(monkeypatch, tmp_path):
    monkeypatch.delenv(SHAPES_BASE_ENV, raising=False)
    assert default_model_path() == SHIPPED_SHAPES_BASE
    monkeypatch.setenv(SHAPES_BASE_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="corl shapes make-base"):
        default_model_path()


@pytest.mark.slow
@shipped
def test_rebuilding_the_shipped_recipe_reproduces_its_report(tmp_path):
    """Same seed, same machine type and library versions -> same numbers (takes the full build time, twice
    where the shipped report comes from another machine: float kernels differ between CPU types)."""
    shipped_report = json.loads((SHIPPED_SHAPES_BASE / REPORT_NAME).read_text())
    report = make_base_model(tmp_path / "rebuild", seed=shipped_report["seed"],
                             num_threads=shipped_report["num_threads"])
    if shipped_report.get("machine") == report["machine"] and shipped_report["versions"] == report["versions"]:
        reference_dir, reference = SHIPPED_SHAPES_BASE, shipped_report
    else:
        reference_dir = tmp_path / "again"
        reference = make_base_model(reference_dir, seed=shipped_report["seed"],
                                    num_threads=shipped_report["num_threads"])
    assert report["evaluation"] == reference["evaluation"]
    assert report["vq"]["reconstruction"] == reference["vq"]["reconstruction"]
    assert report["sft"]["final_t2i_loss"] == reference["sft"]["final_t2i_loss"]
    assert (tmp_path / "rebuild" / "model.safetensors").read_bytes() == (
        reference_dir / "model.safetensors").read_bytes()
