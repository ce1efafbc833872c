"""Large float32 CPU linears through oneDNN inside rollouts: which calls are rerouted, and that they give
the same numbers up to float rounding (and the same codes)."""

from __future__ import annotations

import pytest
import torch

from corl.config import DecodingConfig
from corl.generation import cpu_linear, rollout
from corl.generation.cpu_linear import onednn_linear_applies, onednn_linears
from corl.generation.rollout import rollout_images, rollout_text
from corl.policy.policy import JanusPolicy
from corl.policy.testing import sample_images, tiny_janus

MIN_MACS = DecodingConfig().onednn_min_macs  # the default threshold (rows x in x out multiply-adds)
needs_onednn = pytest.mark.skipif(
    not cpu_linear.onednn_linear_supported(), reason="oneDNN linear not in this PyTorch build / CPU"
)


@pytest.fixture
def spy(monkeypatch) -> list[tuple[int, ...]]:
    """Records the weight shape of every linear that goes through oneDNN."""
    calls: list[tuple[int, ...]] = []
    original = cpu_linear.onednn_linear

    def recording(inputs, weight, bias=None):
        calls.append(tuple(weight.shape))
        return original(inputs, weight, bias)

    monkeypatch.setattr(cpu_linear, "onednn_linear", recording)
    return calls


@needs_onednn
def test_large_float32_linears_are_rerouted_and_equal_up_to_rounding(spy):
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 768)  # 32 x 256 x 768 = 6.3M multiply-adds: over the threshold
    small = torch.nn.Linear(128, 384)  # 32 x 128 x 384 = 1.6M: under it
    inputs = torch.randn(32, 1, 256)  # [rows, 1, in], as in a decode step
    with torch.inference_mode():
        want = layer(inputs)
        with onednn_linears("cpu", torch.float32, None, MIN_MACS):
            got = layer(inputs)
            assert spy == [(768, 256)]
            small(torch.randn(32, 1, 128))
            assert spy == [(768, 256)]  # the small one ran through F.linear as before
            got_no_bias = torch.nn.functional.linear(inputs, layer.weight)
    assert got.shape == want.shape == (32, 1, 768)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_no_bias, want - layer.bias, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_autograd_bfloat16_and_other_devices_are_left_alone(spy):
    layer = torch.nn.Linear(256, 768)
    inputs = torch.randn(32, 256)
    with onednn_linears("cpu", torch.float32, None, MIN_MACS):
        layer(inputs).sum().backward()  # grad enabled: the training forward keeps F.linear
        assert layer.weight.grad is not None
        with torch.no_grad():
            layer.to(torch.bfloat16)(inputs.bfloat16())  # bf16 already runs through oneDNN in PyTorch
    assert spy == []
    assert not onednn_linear_applies(inputs.bfloat16(), layer.weight, MIN_MACS)
    with onednn_linears(torch.device("cuda"), torch.float32, None, MIN_MACS), torch.no_grad():
        layer.float()(inputs)  # a GPU policy's context is a no-op (nothing entered)
    assert spy == []


@needs_onednn
def test_a_small_models_rollout_or_threshold_zero_reroutes_nothing(spy):
    layer, inputs = torch.nn.Linear(256, 768), torch.randn(32, 256)  # large enough on its own
    with torch.inference_mode():
        with onednn_linears("cpu", torch.float32, 32 * 128 * 384, MIN_MACS):  # the Shapes model's step
            layer(inputs)
        assert spy == []
        with onednn_linears("cpu", torch.float32, 32 * 2048 * 5632, MIN_MACS):  # Janus-Pro-1B's
            layer(inputs)
        assert spy == [(768, 256)]
        with onednn_linears("cpu", torch.float32, None, 0):  # 0: never
            layer(inputs)
        assert spy == [(768, 256)]
        assert not onednn_linear_applies(inputs, layer.weight, 0)


@needs_onednn
def test_rollouts_through_onednn_give_the_same_codes_and_answers(spy):
    """Every linear of the tiny model rerouted (threshold 1): the image codes and text answers are the
    ones the MKL/aten path draws; compiled steps keep their own kernels (no rerouting)."""
    model, processor = tiny_janus(3)  # float32
    policy = JanusPolicy(model, processor)
    captions = ["a red circle", "two green triangles above a yellow square"]

    def both(decoding: DecodingConfig | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = rollout_images(policy, captions, group_size=3, seed=5, decode=False, decoding=decoding)
        greedy = rollout_images(policy, captions, greedy=True, decode=False, decoding=decoding)
        text = rollout_text(policy, sample_images(2), ["what color?", "how many?"], group_size=3,
                            max_new_tokens=6, seed=5, decoding=decoding)
        return images.image_tokens, greedy.image_tokens, text.completion_ids

    want_sampled, want_greedy, want_text = both()
    assert spy == []  # tiny model: under the default threshold
    every = DecodingConfig(onednn_min_macs=1)
    got_sampled, got_greedy, got_text = both(every)
    llm = model.config.text_config
    assert (llm.intermediate_size, llm.hidden_size) in spy  # the MLP's gate/up projections
    assert model.model.generation_head.vision_head.weight.shape in {torch.Size(shape) for shape in spy}
    assert torch.equal(got_sampled, want_sampled)
    assert torch.equal(got_greedy, want_greedy)
    assert torch.equal(got_text, want_text)
    assert model.lm_head.weight.shape in {torch.Size(shape) for shape in spy}
    assert len(set(want_greedy[0].tolist())) > 3  # a non-degenerate sequence was compared

    spy.clear()
    with rollout.cpu_decoding(policy, 4, every, compiled=True), torch.inference_mode():
        model.model.generation_head(torch.randn(4, llm.hidden_size))
    assert spy == []
