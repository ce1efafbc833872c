from __future__ import annotations

import pytest
import torch

from corl.policy.matching import gather_masked, matching_states
from corl.policy.prompts import PromptStyle, encode_understanding
from corl.policy.testing import sample_images

TEXTS = ["a red circle", "two green triangles above a yellow square", "one blue square"]


def naive_states(policy, image, text, style, layer=-1):
    """Unpadded single-row forward through transformers' JanusModel (which scatters image features)."""
    style = PromptStyle(answer_format=None, system_prompt=style.system_prompt, image_first=style.image_first)
    encoded = encode_understanding(policy.processor, [image], [text], style, mark_text=True)
    with torch.no_grad():
        out = policy.model.model(
            input_ids=encoded.input_ids, pixel_values=encoded.pixel_values.double(), output_hidden_states=True
        )
    states = out.last_hidden_state[0] if layer == -1 else out.hidden_states[layer][0]
    image_positions = encoded.input_ids[0] == policy.tokens.image_token_id
    return states[image_positions].float(), states[encoded.text_token_mask[0]].float()


@pytest.mark.parametrize(
    "style", [PromptStyle(), PromptStyle(image_first=False, system_prompt="look at the image .")]
)
def test_states_match_an_unpadded_single_row_pass(tiny_policy, style):
    images = sample_images(3)
    result = matching_states(tiny_policy, images, TEXTS, style=style)
    n = tiny_policy.num_image_tokens
    tokenizer = tiny_policy.tokenizer
    assert result.image_states.shape[:2] == (3, n) and bool(result.image_mask.all())
    for row, text in enumerate(TEXTS):
        count = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        assert int(result.text_mask[row].sum()) == count
        image_ref, text_ref = naive_states(tiny_policy, images[row], text, style)
        torch.testing.assert_close(result.image_states[row], image_ref, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(result.text_states[row, :count], text_ref, atol=1e-6, rtol=1e-6)
        assert int(result.text_states[row, count:].abs().sum()) == 0


def test_answer_format_is_not_part_of_the_text(tiny_policy):
    # the policy style's answer-format instruction must not leak into the matching prompt
    styled = matching_states(tiny_policy, sample_images(1), ["red circle"], style=PromptStyle())
    assert int(styled.text_mask.sum()) == 2


def test_layer_selection_and_batching(tiny_policy):
    images = sample_images(3)
    whole = matching_states(tiny_policy, images, TEXTS, layer=1)
    parts = matching_states(tiny_policy, images, TEXTS, layer=1, batch_size=2)
    torch.testing.assert_close(whole.text_states, parts.text_states, atol=1e-6, rtol=1e-6)
    assert torch.equal(whole.text_mask, parts.text_mask)
    last = matching_states(tiny_policy, images, TEXTS)
    assert (whole.image_states - last.image_states).abs().max() > 1e-3
    _, text_ref = naive_states(tiny_policy, images[0], TEXTS[0], tiny_policy.style, layer=1)
    torch.testing.assert_close(whole.text_states[0, : text_ref.shape[0]], text_ref, atol=1e-6, rtol=1e-6)


def test_gather_masked_packs_in_order():
    states = torch.arange(12.0).reshape(2, 3, 2)
    mask = torch.tensor([[False, True, True], [True, False, False]])
    packed, packed_mask = gather_masked(states, mask)
    assert torch.equal(packed, torch.tensor([[[2.0, 3.0], [4.0, 5.0]], [[6.0, 7.0], [0.0, 0.0]]]))
    assert torch.equal(packed_mask, torch.tensor([[True, True], [True, False]]))


def test_bad_inputs_are_errors(tiny_policy):
    with pytest.raises(ValueError, match="texts"):
        matching_states(tiny_policy, sample_images(2), ["a"])
    with pytest.raises(ValueError, match="non-empty"):
        matching_states(tiny_policy, sample_images(1), ["  "])
