from __future__ import annotations


import pytest
import torch

from corl.generation.sampling import (
    completion_mask_after_eos,
    exponential_noise,
    filter_logits,
    sample_next,
    sample_with_noise,
)


def test_completion_mask_includes_first_eos_only():
    eos, pad = 9, 0
    ids = torch.tensor([[4, 5, 9, 0, 0], [4, 4, 4, 4, 4], [9, 0, 0, 0, 0], [3, 9, 9, 0, 0]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    assert torch.equal(completion_mask_after_eos(ids, eos), expected)
    del pad


def test_top_k_and_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    top2 = filter_logits(logits, top_k=2)
    assert torch.isinf(top2[0, 2:]).all() and torch.isfinite(top2[0, :2]).all()
    nucleus = filter_logits(logits, top_p=0.7)  # keeps 0.5 + 0.3
    assert torch.isfinite(nucleus[0, :2]).all() and torch.isinf(nucleus[0, 2:]).all()
    assert torch.equal(filter_logits(logits), logits)


def test_sampling_is_seeded_and_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(4000, 1)
    a = sample_next(logits, temperature=1.0, generator=torch.Generator().manual_seed(3))
    b = sample_next(logits, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    freq = torch.bincount(a, minlength=3).float() / a.numel()
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.03)
    assert torch.equal(sample_next(logits[:2], temperature=1.0, greedy=True), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="temperature"):
        sample_next(logits, temperature=0.0)


@pytest.mark.parametrize(("rows", "vocab", "temperature", "top_k"), [(16, 128, 1.0, None), (8, 16384, 0.7, 50)])
def test_noise_draws_equal_multinomial_draws_from_the_same_generator(rows, vocab, temperature, top_k):
    """sample_with_noise with exponential_noise drawn just before equals sample_next (torch.multinomial)
    token for token, step after step, and leaves the generator in the same state: the rollouts can move
    the draw into a compiled step without changing a seeded run. Shapes: the Shapes and Janus-Pro image
    vocabularies."""
    logits = torch.randn(30, rows, vocab, generator=torch.Generator().manual_seed(0)) * 3
    multinomial, noise = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    for step_logits in logits:
        want = sample_next(step_logits, temperature=temperature, top_k=top_k, generator=multinomial)
        drawn = exponential_noise(rows, vocab, generator=noise, device="cpu")
        got = sample_with_noise(step_logits, drawn, temperature=temperature, top_k=top_k)
        assert torch.equal(got, want)
    assert torch.equal(multinomial.get_state(), noise.get_state())


def test_noise_draws_greedy_and_non_finite_rows():
    logits = torch.tensor([[0.0, 2.0, 1.0], [float("nan"), 0.0, 0.0], [0.0, float("inf"), 0.0]])
    noise = exponential_noise(3, 3, generator=torch.Generator().manual_seed(0), device="cpu")
    assert torch.equal(sample_with_noise(logits[:1], None, temperature=1.0, greedy=True), torch.tensor([1]))
    assert torch.equal(sample_with_noise(logits, noise, temperature=1.0)[1:], torch.tensor([-1, -1]))
    with pytest.raises(ValueError, match="temperature"):
        sample_with_noise(logits, noise, temperature=0.0)
