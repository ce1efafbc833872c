from __future__ import annotations

import pytest
import torch

from corl.policy.prompts import (
    DEFAULT_ANSWER_FORMAT,
    PromptStyle,
    encode_generation,
    encode_understanding,
    render_generation,
    render_understanding,
)
from corl.policy.testing import sample_images as make_images


def test_understanding_prompt_text(tiny_policy):
    processor = tiny_policy.processor
    assert render_understanding(processor, " what color? ") == (
        f"<|User|>: <image_placeholder>\nwhat color? {DEFAULT_ANSWER_FORMAT}\n\n<|Assistant|>:"
    )
    assert render_understanding(processor, "what color?", PromptStyle(answer_format=None)) == (
        "<|User|>: <image_placeholder>\nwhat color?\n\n<|Assistant|>:"
    )
    assert "<think>" in DEFAULT_ANSWER_FORMAT and "<answer>" in DEFAULT_ANSWER_FORMAT


def test_generation_prompt_ends_with_image_start(tiny_policy):
    assert render_generation(tiny_policy.processor, "a red circle") == (
        "<|User|>: a red circle\n\n<|Assistant|>:<begin_of_image>"
    )


@pytest.mark.parametrize(
    "style",
    [
        PromptStyle(),
        PromptStyle(answer_format=None, image_first=False),
        PromptStyle(system_prompt="be brief."),
    ],
)
def test_understanding_batch_equals_janus_processor(tiny_policy, style):
    processor = tiny_policy.processor
    questions = ["what color?", "how many circles are there left of the square?", "which shape?"]
    images = make_images(3)
    ours = encode_understanding(processor, images, questions, style)
    rendered = [render_understanding(processor, q, style) for q in questions]
    reference = processor(text=rendered, images=images, padding=True)
    assert torch.equal(ours.input_ids, reference["input_ids"])
    assert torch.equal(ours.attention_mask, reference["attention_mask"])
    assert torch.equal(ours.pixel_values, reference["pixel_values"])
    # left padding: every row ends with the real end of its prompt
    assert bool(ours.attention_mask[:, -1].all()) and not bool(ours.attention_mask[:, 0].all())


def test_generation_batch_equals_janus_processor_image_mode(tiny_policy):
    processor = tiny_policy.processor
    captions = ["a red circle", "a blue square left of a green triangle"]
    ours = encode_generation(processor, captions)
    without_tag = [render_generation(processor, c)[: -len(processor.image_start_token)] for c in captions]
    reference = processor(text=without_tag, generation_mode="image", padding=True)
    assert torch.equal(ours.input_ids, reference["input_ids"])
    assert torch.equal(ours.attention_mask, reference["attention_mask"])
    boi = processor.tokenizer.convert_tokens_to_ids(processor.image_start_token)
    assert bool((ours.input_ids[:, -1] == boi).all())


@pytest.mark.parametrize(
    "style",
    [
        PromptStyle(),
        PromptStyle(image_first=False),
        PromptStyle(system_prompt="the red circle is a system word."),
    ],
)
def test_text_token_mask_selects_exactly_the_question(tiny_policy, style):
    processor = tiny_policy.processor
    questions = ["red circle", "a blue square left of a green triangle ?"]
    encoded = encode_understanding(processor, make_images(2), questions, style, mark_text=True)
    tokenizer = processor.tokenizer
    for row, question in enumerate(questions):
        picked = encoded.input_ids[row][encoded.text_token_mask[row]]
        assert tokenizer.decode(picked).strip() == question
        assert int(encoded.text_token_mask[row].sum()) == len(
            tokenizer(question, add_special_tokens=False)["input_ids"]
        )


def test_generation_text_mask_selects_the_caption(tiny_policy):
    tokenizer = tiny_policy.processor.tokenizer
    captions = ["two circles", "a yellow triangle above a red square"]
    encoded = encode_generation(tiny_policy.processor, captions, mark_text=True)
    for row, caption in enumerate(captions):
        assert tokenizer.decode(encoded.input_ids[row][encoded.text_token_mask[row]]).strip() == caption


def test_mismatched_batch_is_an_error(tiny_policy):
    with pytest.raises(ValueError, match="images"):
        encode_understanding(tiny_policy.processor, make_images(1), ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        encode_generation(tiny_policy.processor, [])


def test_over_long_question_loses_its_start_never_image_tokens(tiny_policy):
    processor = tiny_policy.processor
    tokenizer = processor.tokenizer
    short = "how many circles ?"
    long = " ".join(["red square"] * 40) + " " + short
    full = encode_understanding(processor, make_images(2), [short, long])
    limit = int(full.attention_mask[0].sum()) + 6  # room for the short question and 6 more tokens
    cut = encode_understanding(processor, make_images(2), [short, long], max_length=limit, mark_text=True)
    assert cut.tokens_cut[0] == 0 and cut.tokens_cut[1] > 0 and cut.num_cut == 1
    lengths = cut.attention_mask.sum(dim=1)
    assert int(lengths.max()) <= limit
    image_id = processor.image_token_id if hasattr(processor, "image_token_id") else tokenizer.convert_tokens_to_ids(
        processor.image_token)
    assert ((cut.input_ids == image_id).sum(dim=1) == (full.input_ids == image_id).sum(dim=1)).all()
    kept = tokenizer.decode(cut.input_ids[1][cut.text_token_mask[1]]).strip()
    assert long.endswith(kept) and kept.endswith(short) and len(kept) < len(long)
    assert DEFAULT_ANSWER_FORMAT.split()[0] in cut.texts[1]  # the format instruction stays whole


def test_over_long_caption_is_cut_from_the_left_and_a_too_small_limit_is_an_error(tiny_policy):
    processor = tiny_policy.processor
    caption = " ".join(["a blue square"] * 30) + " and one yellow triangle"
    full = encode_generation(processor, ["two circles", caption])
    limit = int(full.attention_mask[0].sum()) + 5
    cut = encode_generation(processor, ["two circles", caption], max_length=limit, mark_text=True)
    assert cut.tokens_cut[1] > 0 and int(cut.attention_mask.sum(dim=1).max()) <= limit
    assert caption.endswith(processor.tokenizer.decode(cut.input_ids[1][cut.text_token_mask[1]]).strip())
    assert torch.equal(cut.input_ids[0][-limit:][cut.attention_mask[0][-limit:].bool()],
                       full.input_ids[0][full.attention_mask[0].bool()])  # the short prompt is untouched
    with pytest.raises(ValueError, match="max_prompt_length"):
        encode_generation(processor, [caption], max_length=3)
