"""The fast decoding pieces give exactly what transformers' own forward gives."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from corl.config import DecodingConfig
from corl.generation import decoding
from corl.generation.decoding import (
    DecodeStep,
    PreallocatedCache,
    StaticDecoder,
    decode_threads,
    distinct_rows,
    fast_path_available,
    left_pad_to_multiple,
    prompt_bucket,
    shared_prefill,
    single_query_attention,
    start_decoding,
)
from corl.generation.rollout import rollout_images, rollout_text
from corl.policy.logits import positions_from_mask
from corl.policy.policy import JanusPolicy
from corl.policy.scoring import image_token_logps, text_token_logps
from corl.policy.testing import sample_images, tiny_janus


def _prompts(rows: int = 4, length: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids [rows, length] with rows 0 and 2 identical, and their mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 40, (rows, length), generator=generator)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[1, :3] = 0  # padded rows
    mask[3, :1] = 0
    ids[2], mask[2] = ids[0], mask[0]
    return ids, mask


def _reference_decode(language_model, embeds, mask, new_embeds) -> list[torch.Tensor]:
    """transformers' forward with a DynamicCache: prompt, then one token per step -> hidden per step."""
    cache = DynamicCache(config=language_model.config)
    positions = positions_from_mask(mask)
    out = language_model(
        inputs_embeds=embeds,
        attention_mask=mask,
        position_ids=positions,
        **{decoding.CACHE_KWARG: cache},
        use_cache=True,
    )
    hiddens = [out.last_hidden_state[:, -1]]
    for step in range(new_embeds.shape[1]):
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        out = language_model(
            inputs_embeds=new_embeds[:, step : step + 1],
            attention_mask=mask,
            position_ids=positions[:, -1:] + 1 + step,
            **{decoding.CACHE_KWARG: cache},
            use_cache=True,
        )
        hiddens.append(out.last_hidden_state[:, -1])
    return hiddens


def _fast_decode(language_model, ids, mask, new_embeds, **kwargs) -> list[torch.Tensor]:
    """Prefill once per distinct prompt, then the lean decode step (or the static/generic variants)."""
    first, inverse = distinct_rows(ids, mask)
    embeds = language_model.get_input_embeddings()(ids[first])
    if kwargs.pop("static", False):
        extra = kwargs.pop("bucket_extra", 0)  # prompt region longer than the prompt (a bucket)
        decoder = StaticDecoder(
            language_model, ids.shape[0], ids.shape[1] + extra + 8, embeds.dtype, ids.device, cpu_compiler="aot"
        )
        decoder.start(torch.cat([mask.new_zeros(mask.shape[0], extra), mask], dim=1), new_embeds.shape[1])
        hidden = shared_prefill(language_model, decoder, embeds, mask[first], inverse)
        step = decoder.step
    elif kwargs.pop("generic", False):
        cache = PreallocatedCache(
            language_model.config,
            ids.shape[0],
            ids.shape[1] + new_embeds.shape[1],
            dtype=embeds.dtype,
            device="cpu",
        )
        hidden = shared_prefill(language_model, cache, embeds, mask[first], inverse)
        step = DecodeStep(language_model, cache, mask, new_embeds.shape[1], fast=False)
    else:
        hidden, step = start_decoding(language_model, embeds, mask[first], inverse, new_embeds.shape[1])
    hiddens = [hidden]
    for index in range(new_embeds.shape[1]):
        hiddens.append(step(new_embeds[:, index : index + 1]))
    return hiddens


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("padded", [True, False])
def test_fast_decode_is_bitwise_equal_to_transformers_forward(attn_implementation, padded):
    model, _ = tiny_janus(1)  # float32, grouped-query attention (4 heads, 2 key/value heads)
    language_model = model.model.language_model
    language_model.config._attn_implementation = attn_implementation
    assert fast_path_available(language_model)
    assert language_model.config.num_key_value_heads < language_model.config.num_attention_heads
    ids, mask = _prompts()
    if not padded:
        mask = torch.ones_like(mask)
    embeds = language_model.get_input_embeddings()(ids)
    new_embeds = torch.randn(ids.shape[0], 5, embeds.shape[-1], generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = _reference_decode(language_model, embeds, mask, new_embeds)
        fast = _fast_decode(language_model, ids, mask, new_embeds)
        generic = _fast_decode(language_model, ids, mask, new_embeds, generic=True)
    for step, (want, got, got_generic) in enumerate(zip(reference, fast, generic, strict=True)):
        assert torch.equal(got, want), step
        assert torch.equal(got_generic, want), step


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_autocast_decoding_keeps_its_kv_cache_in_the_compute_dtype(attn_implementation):
    """fp32 weights under bf16 autocast: keys / values are stored in bf16 (half the memory), and the lean
    step gives exactly what transformers' forward gives under the same autocast (whose attention rounds
    them to bf16 too)."""
    model, _ = tiny_janus(1)
    language_model = model.model.language_model
    language_model.config._attn_implementation = attn_implementation
    ids, mask = _prompts()
    embeds = language_model.get_input_embeddings()(ids)
    new_embeds = torch.randn(ids.shape[0], 5, embeds.shape[-1], generator=torch.Generator().manual_seed(1))
    first, inverse = distinct_rows(ids, mask)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference = _reference_decode(language_model, embeds, mask, new_embeds)
        hidden, step = start_decoding(language_model, embeds[first], mask[first], inverse, new_embeds.shape[1])
        fast = [hidden] + [step(new_embeds[:, i : i + 1]) for i in range(new_embeds.shape[1])]
    assert {layer.key_buffer.dtype for layer in step.cache.layers} == {torch.bfloat16}
    assert {layer.value_buffer.dtype for layer in step.cache.layers} == {torch.bfloat16}
    for index, (want, got) in enumerate(zip(reference, fast, strict=True)):
        assert got.dtype == want.dtype == torch.float32  # the residual stream stays in the weights' dtype
        assert torch.equal(got, want), index
    with torch.inference_mode():  # without autocast the cache is in the weights' dtype
        _, plain = start_decoding(language_model, embeds[first], mask[first], inverse, 2)
    assert plain.cache.layers[0].key_buffer.dtype == torch.float32


def test_static_shape_decode_matches_up_to_rounding():
    model, _ = tiny_janus(2, dtype=torch.float64)
    language_model = model.model.language_model
    ids, mask = _prompts(seed=3)
    embeds = language_model.get_input_embeddings()(ids)
    new_embeds = torch.randn(ids.shape[0], 4, embeds.shape[-1], dtype=torch.float64)
    with torch.inference_mode():
        reference = _reference_decode(language_model, embeds, mask, new_embeds)
        static = _fast_decode(language_model, ids, mask, new_embeds, static=True)
        # an unpadded prompt in the last slots of a longer (bucketed) prompt region: the same states
        bucketed = _fast_decode(language_model, ids, mask, new_embeds, static=True, bucket_extra=5)
    for want, got, got_bucketed in zip(reference, static, bucketed, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got_bucketed, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("compile_step", [False, True])
def test_embed_and_head_run_around_every_step(compile_step, monkeypatch):
    """start_decoding(embed=, head=): first value head(prompt state), then step(x) = head(state(embed(x)));
    the static path keeps them in its (here uncompiled) graph and reuses the decoder per fuse_key."""
    monkeypatch.setattr(decoding, "compile_decoder", lambda decoder, weights, example, cpu_compiler: decoder)
    model, _ = tiny_janus(2, dtype=torch.float64)
    language_model = model.model.language_model
    ids, mask = _prompts(seed=4)
    first, inverse = distinct_rows(ids, mask)
    table = torch.randn(10, language_model.config.hidden_size, dtype=torch.float64)  # "token" -> embedding
    projection = torch.randn(language_model.config.hidden_size, 3, dtype=torch.float64)

    def embed(tokens):  # [b] long -> [b, 1, D]
        return table[tokens][:, None]

    def head(hidden):  # [b, D] -> [b, 3]
        return hidden @ projection

    tokens = torch.randint(0, 10, (ids.shape[0], 3), generator=torch.Generator().manual_seed(5))
    static_decoders: dict = {}
    with torch.inference_mode():
        reference = _reference_decode(
            language_model, language_model.get_input_embeddings()(ids), mask, table[tokens]
        )
        for _ in range(2):
            out, step = start_decoding(
                language_model, language_model.get_input_embeddings()(ids[first]), mask[first], inverse, 3,
                compile_step=compile_step, static_decoders=static_decoders, cpu_compiler="aot",
                embed=embed, head=head, fuse_key="toy",
            )
            got = [out] + [step(tokens[:, index]) for index in range(3)]
            for want, value in zip(reference, got, strict=True):
                torch.testing.assert_close(value, head(want), rtol=1e-10, atol=1e-10)
    assert len(static_decoders) == (1 if compile_step else 0)  # reused by the second call


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_single_query_attention_matches_scaled_dot_product_attention(dtype):
    """Grouped-query heads (8 query heads on 2 key/value heads) and a padding mask; the reference is
    torch's SDPA in float64 with the key/value heads repeated for their query heads."""
    generator = torch.Generator().manual_seed(0)
    rows, heads, kv_heads, length, head_dim = 3, 8, 2, 11, 16
    query = torch.randn(rows, heads, 1, head_dim, generator=generator, dtype=torch.float64)
    key = torch.randn(rows, kv_heads, length, head_dim, generator=generator, dtype=torch.float64)
    value = torch.randn(rows, kv_heads, length, head_dim, generator=generator, dtype=torch.float64)
    keep = torch.ones(rows, 1, 1, length, dtype=torch.bool)
    keep[1, ..., :4] = False  # a left-padded row
    want = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(4, 1), value.repeat_interleave(4, 1), attn_mask=keep, scale=0.25
    ).transpose(1, 2)  # [rows, 1, heads, head_dim]
    mask = torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min)
    got, weights = single_query_attention(
        torch.nn.Module(), query.to(dtype), key.to(dtype), value.to(dtype), mask, scaling=0.25
    )
    assert weights is None and got.dtype == dtype and got.shape == (rows, 1, heads, head_dim)
    tolerance = 1e-12 if dtype == torch.float64 else 3e-2
    torch.testing.assert_close(got.double(), want, rtol=tolerance, atol=tolerance)


def test_static_decoder_is_reused_and_bucketed_prompts_give_the_same_greedy_images(monkeypatch):
    """compile_decode's path without the compiler: prompts padded to the bucket, decoders kept per shape."""
    monkeypatch.setattr(decoding, "compile_decoder", lambda decoder, weights, example, cpu_compiler: decoder)
    model, processor = tiny_janus(5, dtype=torch.float64)
    policy = JanusPolicy(model, processor)
    language_model = model.model.language_model
    captions = ["a red circle", "two blue squares left of a green triangle"]
    dynamic = rollout_images(policy, captions, group_size=2, greedy=True, decode=False).image_tokens
    static = rollout_images(policy, captions, group_size=2, greedy=True, decode=False, compile_decode=True)
    assert torch.equal(static.image_tokens, dynamic)
    decoders = policy.static_decoders
    assert len(decoders) == 1
    assert "_corl_static_decoders" not in language_model.__dict__  # kept on the policy, not the model
    (decoder,) = decoders.values()
    bucket = prompt_bucket(policy.num_image_tokens - 1)
    assert bucket == 16  # a short generation: small buckets (long ones: 64)
    assert decoder.cache_shape[2] % bucket == policy.num_image_tokens - 1  # bucketed prompt + N - 1 codes
    again = rollout_images(policy,
        captions[::-1], group_size=2, greedy=True, decode=False, compile_decode=True
    )
    assert len(decoders) == 1 and next(iter(decoders.values())) is decoder  # reused, not rebuilt
    assert torch.equal(again.image_tokens, dynamic[[2, 3, 0, 1]])
    text = rollout_text(policy,
        sample_images(2), ["what color?", "which shape?"], greedy=True, max_new_tokens=4
    )
    text_static = rollout_text(policy,
        sample_images(2), ["what color?", "which shape?"], greedy=True, max_new_tokens=4, compile_decode=True
    )
    assert torch.equal(text_static.completion_ids, text.completion_ids)
    assert len(decoders) == 2  # the answers' decoder joined the images'
    policy.static_decoders.clear()  # frees every decoder (and its buffers)
    assert policy.static_decoders == {}


def test_left_pad_to_multiple():
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    ids = torch.tensor([[0, 5, 6], [7, 8, 9]])
    padded_mask, padded_ids = left_pad_to_multiple(mask, 4, ids, pad_value=2)
    assert padded_mask.tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]
    assert padded_ids.tolist() == [[2, 0, 5, 6], [2, 7, 8, 9]]
    assert left_pad_to_multiple(mask, 3, ids)[1] is ids


def test_distinct_rows_and_prefix_copy():
    ids, mask = _prompts()
    first, inverse = distinct_rows(ids, mask)
    assert first.shape[0] == 3 and inverse.tolist()[0] == inverse.tolist()[2]
    assert torch.equal(ids[first][inverse], ids) and torch.equal(mask[first][inverse], mask)
    # the representative of each group is its first row
    assert sorted(first.tolist()) == [0, 1, 3]
    with pytest.raises(TypeError):
        distinct_rows(ids.float())


def test_preallocated_cache_views_and_capacity():
    model, _ = tiny_janus(0)
    config = model.config.text_config
    cache = PreallocatedCache(config, 2, 5, dtype=torch.float32, device="cpu")
    layer = cache.layers[0]
    heads, head_dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    keys = torch.randn(2, heads, 3, head_dim)
    got_keys, _ = cache.update(keys, keys + 1, 0)
    assert torch.equal(got_keys, keys) and cache.get_seq_length() == 3
    step_keys = torch.randn(2, heads, 1, head_dim)
    got_keys, _ = cache.update(step_keys, step_keys, 0)
    assert got_keys.shape[2] == 4 and torch.equal(got_keys[:, :, 3:], step_keys)
    assert got_keys.data_ptr() == layer.key_buffer.data_ptr()  # a view, no copy of the cache
    cache.update(step_keys, step_keys, 0)
    with pytest.raises(ValueError, match="KV cache full"):
        cache.update(step_keys, step_keys, 0)


def test_decode_threads_restores_the_thread_count():
    before = torch.get_num_threads()
    cpu, shapes_step, janus_1b_step = torch.device("cpu"), 32 * 128 * 384, 32 * 2048 * 5632
    default = DecodingConfig().single_thread_below
    with decode_threads(shapes_step, default, cpu):
        assert torch.get_num_threads() == before  # off by default
    with decode_threads(shapes_step, 1 << 23, cpu):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with decode_threads(janus_1b_step, 1 << 23, cpu):
        assert torch.get_num_threads() == before  # large steps keep every thread


def test_rollout_tensors_can_enter_autograd():
    """Rollouts run under inference_mode; what they return must still work in a scoring backward."""
    model, processor = tiny_janus(4)
    policy = JanusPolicy(model, processor)
    model.requires_grad_(True)
    images = rollout_images(policy, ["a red circle"], group_size=2, seed=0, decode=False)
    logps = image_token_logps(policy, images.prompt_ids, images.prompt_mask, images.image_tokens, 5.0)
    logps.sum().backward()
    text = rollout_text(policy, sample_images(1), ["what color?"], group_size=2, max_new_tokens=3, seed=0)
    logps = text_token_logps(policy,
        text.prompt_ids, text.prompt_mask, text.pixel_values, text.completion_ids, text.completion_mask
    )
    logps.sum().backward()
    assert model.model.generation_embeddings.weight.grad is not None
    assert model.lm_head.weight.grad is not None


def test_a_step_that_does_not_export_falls_back_to_torch_compile(monkeypatch, caplog):
    from corl.generation import step_compiler

    def fail(decoder, weights, example):
        raise RuntimeError("unsupported op")

    compiled = []
    monkeypatch.setattr(step_compiler, "aot_compile", fail)
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: compiled.append(kwargs) or module)
    model, processor = tiny_janus(5, dtype=torch.float64)
    policy = JanusPolicy(model, processor)
    eager = rollout_images(policy, ["a red circle"], group_size=2, greedy=True, decode=False).image_tokens
    with caplog.at_level("WARNING", logger="corl.generation.step_compiler"):
        static = rollout_images(policy,
            ["a red circle"], group_size=2, greedy=True, decode=False, compile_decode=True
        )
    assert torch.equal(static.image_tokens, eager)
    assert compiled == [{"fullgraph": True, "dynamic": False, "options": {"cpp_wrapper": True}}]
    assert "could not compile the decode step (RuntimeError: unsupported op)" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("compiler", ["aot", "inductor"])
def test_compiled_static_decode_gives_the_same_images(compiler):
    """The compiled static-shape step (CPU: AOTInductor, or torch.compile with inductor; CUDA graphs on
    GPU), greedy and seeded sampling with top-k (the draw runs inside the compiled step), and sampled
    answers; then the weights change in place, as an optimizer step changes them, and the same compiled
    step follows."""
    setting_of_compiler = DecodingConfig(cpu_compiler=compiler)
    model, processor = tiny_janus(0, dtype=torch.float32)
    policy = JanusPolicy(model, processor)
    captions = ["a red circle", "two blue squares left of a green triangle"]
    settings = ({"greedy": True}, {"seed": 3, "temperature": 0.9, "top_k": 20})

    def compare() -> list[torch.Tensor]:
        codes = []
        for setting in settings:
            eager = rollout_images(policy, captions, group_size=2, decode=False, **setting).image_tokens
            compiled = rollout_images(policy,
                captions, group_size=2, decode=False, compile_decode=True, decoding=setting_of_compiler,
                **setting,
            ).image_tokens
            assert torch.equal(compiled, eager), setting
            codes.append(eager)
        answers = [
            rollout_text(policy,
                sample_images(2), ["what color?", "which shape?"], group_size=2, max_new_tokens=6, seed=2,
                compile_decode=compile_decode, decoding=setting_of_compiler,
            ).completion_ids
            for compile_decode in (False, True)
        ]
        assert torch.equal(answers[1], answers[0])
        return [*codes, answers[0]]

    before = compare()
    decoders = policy.static_decoders
    built = {key: decoder.compiled for key, decoder in decoders.items()}
    assert len(built) == 3 and all(compiled is not None for compiled in built.values())
    if compiler == "aot":
        assert all(not isinstance(compiled, torch.nn.Module) for compiled in built.values())
    else:  # the setting reached the compiler: torch.compile's wrappers are modules
        assert all(isinstance(compiled, torch.nn.Module) for compiled in built.values())
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # in place, like AdamW: the compiled steps hold these very tensors
        for parameter in (*model.model.language_model.parameters(), *model.model.generation_head.parameters()):
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    after = compare()
    assert all(not torch.equal(old, new) for old, new in zip(before, after))  # the change shows
    assert {key: decoder.compiled for key, decoder in decoders.items()} == built  # not recompiled
    if compiler == "aot":  # weights replaced by new tensors (a dtype round trip): the steps re-bind
        pointers = [compiled.pointers for compiled in built.values()]
        model.to(torch.float64).to(torch.float32)
        again = compare()  # eager and compiled equal, and both equal to before the round trip
        assert all(torch.equal(old, new) for old, new in zip(after, again, strict=True))
        assert all(compiled.pointers != old for compiled, old in zip(built.values(), pointers))
