from __future__ import annotations

import pytest
import torch
from transformers import JanusImageProcessorPil

from corl.generation.rollout import generate_images
from corl.policy.loading import (
    SHAPES_BASE_ENV,
    default_model_path,
    load_policy,
    resolve_dtype,
    resolve_model_path,
    save_policy,
)
from corl.policy.policy import JanusPolicy
from corl.policy.prompts import encode_generation
from corl.policy.testing import tiny_janus


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    model, processor = tiny_janus(2, image_size=48, patch_size=8)
    processor.use_default_system_prompt = True  # as on the hub; loading must turn it off
    directory = save_policy(JanusPolicy(model, processor), tmp_path_factory.mktemp("tiny") / "ckpt")
    return directory, model


def test_load_round_trip_gives_same_ids_and_outputs(saved_checkpoint):
    directory, original = saved_checkpoint
    policy = load_policy(directory, dtype="fp32", device="cpu")
    reference = JanusPolicy(original, policy.processor)
    assert policy.tokens == reference.tokens
    assert policy.num_image_tokens == 36 and policy.image_size == 48 and policy.generated_image_size == 48
    assert isinstance(policy.processor.image_processor, JanusImageProcessorPil)
    assert policy.processor.use_default_system_prompt is False
    assert not policy.model.training and policy.dtype == torch.float32
    encoded = encode_generation(policy.processor, ["a red circle", "a blue square left of a green triangle"])
    with torch.no_grad():
        ours = policy.model(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask).logits
        theirs = original(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask).logits
    torch.testing.assert_close(ours, theirs)


def test_loaded_checkpoint_works_with_transformers_image_generate(saved_checkpoint):
    directory, _ = saved_checkpoint
    policy = load_policy(directory, dtype="fp32", device="cpu")
    encoded = encode_generation(policy.processor, ["a red circle"])
    tokens = policy.model.generate(
        input_ids=encoded.input_ids,
        attention_mask=encoded.attention_mask,
        generation_mode="image",
        do_sample=False,
        guidance_scale=5.0,
    )
    assert tuple(tokens.shape) == (1, 36)  # boi / pad ids came from the saved generation config


def test_bf16_loading(saved_checkpoint):
    directory, _ = saved_checkpoint
    policy = load_policy(directory, dtype="bf16", device="cpu")
    assert policy.dtype == torch.bfloat16
    images = generate_images(policy, ["a red circle"], n=1, seed=0)
    assert images[0].size == (48, 48)


def test_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16 and resolve_dtype(torch.float16, cpu) == torch.float16
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int8", cpu)


def test_default_model_path_explains_how_to_build_it(tmp_path, monkeypatch, saved_checkpoint):
    monkeypatch.setenv(SHAPES_BASE_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="corl shapes make-base"):
        default_model_path()
    directory, _ = saved_checkpoint
    monkeypatch.setenv(SHAPES_BASE_ENV, str(directory))
    assert default_model_path() == directory
    assert load_policy(dtype="fp32", device="cpu").num_image_tokens == 36
    # the recipes' name for it works wherever a checkpoint is asked for (corl eval --model shapes-base)
    assert resolve_model_path("shapes-base") == str(directory)
    assert resolve_model_path("deepseek-community/Janus-Pro-1B") == "deepseek-community/Janus-Pro-1B"
    assert load_policy("shapes-base", dtype="fp32", device="cpu").num_image_tokens == 36


def test_a_directory_without_a_model_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_policy(tmp_path, device="cpu")


def test_missing_paths_and_other_architectures_are_named_before_loading(tmp_path):
    import json

    import pytest

    from corl.policy.loading import load_policy

    with pytest.raises(FileNotFoundError, match=f"model path {tmp_path}/nowhere does not exist"):
        load_policy(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_policy(str(tmp_path / "empty"))
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(ValueError, match=r"holds a 'llama' checkpoint; corl trains Janus models"):
        load_policy(str(llama))
