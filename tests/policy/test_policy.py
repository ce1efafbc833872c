from __future__ import annotations

import pytest
import torch

from corl.generation.rollout import answer, generate_images
from corl.policy.policy import PARAMETER_GROUPS, JanusPolicy, trainable_parameters
from corl.policy.testing import sample_images, tiny_janus


def test_special_ids_come_from_the_processor(tiny_policy):
    tokenizer = tiny_policy.tokenizer
    tokens = tiny_policy.tokens
    assert (tokens.bos_id, tokens.eos_id, tokens.pad_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert tokens.image_token_id == tiny_policy.model.config.image_token_id
    assert tokenizer.convert_ids_to_tokens([tokens.boi_id, tokens.eoi_id]) == [
        "<begin_of_image>",
        "<end_of_image>",
    ]


def test_mismatched_processor_and_model_are_rejected():
    model, processor = tiny_janus(0)
    model.config.image_token_id = 5
    with pytest.raises(ValueError, match="do not belong together"):
        JanusPolicy(model, processor)
    model, processor = tiny_janus(0)
    processor.num_image_tokens = 9
    with pytest.raises(ValueError, match="image token counts"):
        JanusPolicy(model, processor)


def test_default_freezing_trains_only_the_language_model():
    model, processor = tiny_janus(0)
    params = trainable_parameters(JanusPolicy(model, processor))
    expected = {id(p) for p in model.model.language_model.parameters()} | {id(model.lm_head.weight)}
    assert {id(p) for p in params} == expected
    assert {id(p) for p in model.parameters() if p.requires_grad} == expected
    assert not any(p.requires_grad for p in model.model.generation_head.parameters())


def test_freezing_is_configurable_and_validated():
    model, _ = tiny_janus(0)
    params = trainable_parameters(model, train=("generation_head", "generation_embeddings"))
    assert {id(p) for p in params} == {
        id(p)
        for p in [*model.model.generation_head.parameters(), *model.model.generation_embeddings.parameters()]
    }
    with pytest.raises(KeyError, match="valid"):
        trainable_parameters(model, train=("everything",))
    assert set(PARAMETER_GROUPS) >= {"language_model", "vision_model", "vqmodel", "generation_head"}


def test_answer_and_generate_images_conveniences(tiny_policy):
    answers = answer(tiny_policy, sample_images(2), ["what color?", "which shape?"], max_new_tokens=5)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    again = answer(tiny_policy, sample_images(2), ["what color?", "which shape?"], max_new_tokens=5)
    assert answers == again  # greedy by default
    images = generate_images(tiny_policy, ["a red circle", "a blue square"], n=2, seed=3)
    assert len(images) == 4 and images[0].size == (32, 32)
    pixels = [torch.tensor(list(image.getdata())) for image in images]
    assert not torch.equal(pixels[0], pixels[1])
