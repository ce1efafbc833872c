"""Rollouts: sampling images (t2i) and answers (mm2t) from the policy, without autograd.

Image rollout (Janus-Pro's t2i recipe): B captions, G images each. Every sample gets a conditional row
(the caption prompt) and an unconditional row (prompt tokens replaced by pad, BOS and the image-start
tag kept, same attention mask: what transformers' Janus `generate` does). Both rows run in one batch;
the next code is drawn from softmax((uncond + w * (cond - uncond)) / temperature), optionally top-k
filtered, and fed back through the generation embeddings + aligner into both rows. Exactly N codes
are drawn per image; then the VQ decoder turns them into pixels.

Text rollout: B (image, question) prompts, G answers each; the vision encoder runs once per image and
its features are shared by the G rows. The image placeholder token is never sampled (probability 0, in
scoring too). Sampling stops at EOS per row (the mask includes the EOS) or at
max_new_tokens (such rows are flagged `is_truncated`).

Both loops (`corl.generation.decoding`): run under torch.inference_mode (returned tensors are cloned out
of it, so they can enter autograd later); one prompt forward per distinct prompt (the G rows of a
group share it), a KV cache allocated once (prompt + new tokens), a lean decode step per token,
preallocated outputs, and left-padding-aware position ids (0 at each row's first real token), the same
ones `scoring.py` uses, so sampled tokens are scored under the distribution they came from (exactly;
up to float rounding where large float32 CPU linears run through oneDNN, see `cpu_linear`).
Note: transformers' image `generate` counts positions from the first (padding) slot instead; for
prompts without padding the two agree exactly (tested). Seeds: a torch.Generator seeded with `seed`
drives every draw, so the same seed, batch and `max_rows` give the same samples.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence

import torch
from PIL import Image

from corl.config import DEFAULT_CFG_WEIGHT, DecodingConfig
from corl.generation.cpu_linear import onednn_linears
from corl.generation.decoding import decode_threads, distinct_rows, start_decoding
from corl.generation.records import ImageRollout, TextRollout
from corl.generation.sampling import (
    completion_mask_after_eos,
    exponential_noise,
    sample_next,
    sample_with_noise,
)
from corl.policy.logits import blocked_token_mask, cfg_logits, suppress_tokens, unconditional_prompt
from corl.policy.policy import JanusPolicy
from corl.policy.prompts import EncodedPrompts, PromptStyle, encode_generation, encode_understanding
from corl.policy.scoring import understanding_embeddings

logger = logging.getLogger(__name__)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A generator on `device` seeded with `seed`; None (global RNG) when seed is None."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(int(seed))


@contextlib.contextmanager
def cpu_decoding(
    policy: JanusPolicy, rows: int, decoding: DecodingConfig, *, compiled: bool = False
) -> Iterator[None]:
    """The CPU settings of an eager rollout of `rows` rows: large float32 linears through oneDNN
    (`cpu_linear`, decoding.onednn_min_macs) and `decoding.decode_threads` (one thread for tiny models,
    when decoding.single_thread_below is set). A compiled step keeps the kernels its compiler chose.
    No-op on GPU."""
    config = policy.model.config.text_config
    step_macs = rows * config.hidden_size * config.intermediate_size  # the step's largest matmul
    with contextlib.ExitStack() as stack:
        if not compiled:
            stack.enter_context(onednn_linears(policy.device, policy.dtype, step_macs, decoding.onednn_min_macs))
        stack.enter_context(
            decode_threads(step_macs, decoding.single_thread_below, policy.device, compiled=compiled)
        )
        yield


def _row_chunks(rows: int, max_rows: int | None) -> list[slice]:
    step = rows if not max_rows else max(1, int(max_rows))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


# ----------------------------------------------------------------------------------------- images


def guided_image_logits(model, hidden: torch.Tensor, cfg_weight: float) -> torch.Tensor:
    """Generation-head logits, CFG-combined, float32: hidden [b, D] -> [r, V_img] (r = b / 2 with CFG)."""
    logits = model.model.generation_head(hidden).float()  # [b, V_img]
    if cfg_weight == 1.0:
        return logits
    rows = logits.shape[0] // 2
    return cfg_logits(logits[:rows], logits[rows:], cfg_weight)


def draw_code_with_noise(
    model,
    hidden: torch.Tensor,  # [b, D] last LLM states; with CFG (w != 1): conditional rows, then unconditional
    noise: torch.Tensor | None,  # [r, V_img] ~ Exp(1) (`exponential_noise`), None when greedy
    *,
    cfg_weight: float,
    temperature: float,
    greedy: bool = False,
    top_k: int | None = None,
) -> torch.Tensor:
    """One image code per sample from the generation head, CFG-combined -> [r] long (r = b / 2 with CFG;
    -1 for non-finite logits). The generator's draw is made beforehand, so this is pure tensor math that
    runs inside a compiled decode step; the code equals torch.multinomial's (see `sample_with_noise`)."""
    logits = guided_image_logits(model, hidden, cfg_weight)  # [r, V_img]
    return sample_with_noise(logits, noise, temperature=temperature, greedy=greedy, top_k=top_k)


def embed_image_codes(model, codes: torch.Tensor, guided: bool) -> torch.Tensor:
    """Codes [r] -> decoder inputs [b, 1, D]: with CFG both rows of a sample (conditional, unconditional)
    are fed its code, so b = 2r. A code of -1 (a row whose logits went non-finite, see
    `sample_with_noise`) is fed as 0; the rollout raises once its codes are drawn."""
    embeds = model.prepare_embeddings_for_image_generation(codes.clamp(min=0)[:, None])  # [r, 1, D]
    return torch.cat([embeds, embeds]) if guided else embeds


def _sample_image_tokens(
    policy: JanusPolicy,
    prompt_ids: torch.Tensor,  # [r, P]
    prompt_mask: torch.Tensor,  # [r, P]
    *,
    cfg_weight: float,
    temperature: float,
    top_k: int | None,
    greedy: bool,
    generator: torch.Generator | None,
    steps: int,
    compile_decode: bool,
    cpu_compiler: str,
) -> torch.Tensor:
    """Draw `steps` image codes for r rows -> [r, steps] long (call under torch.inference_mode)."""
    model = policy.model
    language_model = model.model.language_model
    rows = prompt_ids.shape[0]
    guided = cfg_weight != 1.0  # w = 1 is exactly the conditional distribution: skip the extra rows
    if guided:
        uncond_ids = unconditional_prompt(
            prompt_ids, bos_id=policy.tokens.bos_id, boi_id=policy.tokens.boi_id, pad_id=policy.tokens.pad_id
        )
        ids = torch.cat([prompt_ids, uncond_ids])  # [2r, P]: conditional rows first, then unconditional
        mask = torch.cat([prompt_mask, prompt_mask])
    else:
        ids, mask = prompt_ids, prompt_mask
    # Prefill once per distinct prompt row (G samples of a caption share it), then one code per step;
    # the last code is never fed back.
    # The code embedding, generation head, CFG and the draw of the next code run inside the decode step
    # (one compiled graph per code with compile_decode): next_code(codes [r], noise [r, V_img]) -> [r].
    # The generator's draw for each code is made eagerly, in order, just before it is used: the same
    # stream torch.multinomial would consume, so the codes equal sample_next's (see sample_with_noise).
    def noise() -> torch.Tensor | None:
        return None if greedy else exponential_noise(
            rows, policy.image_vocab_size, generator=generator, device=ids.device
        )

    first, inverse = distinct_rows(ids, mask)
    draw = functools.partial(
        draw_code_with_noise, model, cfg_weight=cfg_weight, temperature=temperature, greedy=greedy, top_k=top_k
    )
    code, next_code = start_decoding(
        language_model,
        language_model.get_input_embeddings()(ids[first]),  # [U, P, D]
        mask[first],
        inverse,
        steps - 1,
        compile_step=compile_decode,
        static_decoders=policy.static_decoders,
        cpu_compiler=cpu_compiler,
        embed=functools.partial(embed_image_codes, model, guided=guided),
        head=draw,
        weights=model,
        fuse_key=("image codes", float(cfg_weight), float(temperature), bool(greedy), top_k),
        first_head_args=(noise(),),
    )
    tokens = torch.empty(rows, steps, dtype=torch.long, device=ids.device)
    tokens[:, 0] = code
    for step in range(1, steps):  # the last code is never fed back
        code = next_code(code, noise())  # [r]
        tokens[:, step] = code
    bad = tokens < 0
    if bool(bad.any()):
        row, step = (int(index) for index in bad.nonzero()[0])
        raise FloatingPointError(
            f"image logits are NaN or infinite ({int(bad.any(1).sum())} of {rows} rows; first: row {row}, "
            f"code {step}): the policy's weights or prompt embeddings are not finite"
        )
    return tokens


@torch.no_grad()
def decode_images(
    policy: JanusPolicy, image_tokens: torch.Tensor, *, batch_size: int = 16
) -> list[Image.Image]:
    """VQ codes [R, N] -> R PIL images through the VQ decoder and the image processor's postprocess."""
    if image_tokens.shape[1] != policy.num_image_tokens:
        raise ValueError(f"expected {policy.num_image_tokens} codes per image, got {image_tokens.shape[1]}")
    vqmodel = policy.model.model.vqmodel
    images: list[Image.Image] = []
    for start in range(0, image_tokens.shape[0], batch_size):
        codes = image_tokens[start : start + batch_size].to(policy.device)
        pixels = (
            vqmodel.decode(codes).float().clamp(-1.0, 1.0)
        )  # [b, 3, H, W] in the processor's normalized space
        post = policy.processor.image_processor.postprocess(
            list(pixels.cpu()), return_tensors="PIL.Image.Image", input_data_format="channels_first"
        )["pixel_values"]
        images.extend(post)
    return images


@torch.no_grad()
def sample_image_codes(
    policy: JanusPolicy,
    captions: Sequence[str],
    *,
    num_codes: int,
    group_size: int = 1,
    cfg_weight: float = DEFAULT_CFG_WEIGHT,
    temperature: float = 1.0,
    top_k: int | None = None,
    greedy: bool = False,
    seed: int | None = None,
    max_rows: int | None = None,
    style: PromptStyle | None = None,
    compile_decode: bool = False,
    decoding: DecodingConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first `num_codes` image codes of `group_size` samples per caption, without decoding them.

    Returns prompt_ids [R, P], prompt_mask [R, P] and codes [R, num_codes] (R = len(captions) * group_size).
    `rollout_images` draws all N codes this way; a prefix (num_codes < N) is for measuring the
    decode loop (benchmarks) at the real model's shape without drawing a whole image.
    """
    encoded = encode_generation(policy.processor, captions, style or policy.style)
    return _sample_codes(
        policy, encoded, num_codes=num_codes, group_size=group_size, cfg_weight=cfg_weight,
        temperature=temperature, top_k=top_k, greedy=greedy, seed=seed, max_rows=max_rows,
        compile_decode=compile_decode, decoding=decoding,
    )


def _sample_codes(
    policy: JanusPolicy, encoded: EncodedPrompts, *, num_codes: int, group_size: int, cfg_weight: float,
    temperature: float, top_k: int | None, greedy: bool, seed: int | None, max_rows: int | None,
    compile_decode: bool, decoding: DecodingConfig | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if not 1 <= num_codes <= policy.num_image_tokens:
        raise ValueError(f"num_codes must be in [1, {policy.num_image_tokens}], got {num_codes}")
    decoding = decoding or DecodingConfig()
    device = policy.device
    prompt_ids = encoded.input_ids.repeat_interleave(group_size, dim=0).to(device)  # [R, P]
    prompt_mask = encoded.attention_mask.repeat_interleave(group_size, dim=0).to(device)
    generator = make_generator(seed, device)
    codes = torch.zeros(prompt_ids.shape[0], num_codes, dtype=torch.long, device=device)  # [R, num_codes]
    chunks = _row_chunks(prompt_ids.shape[0], max_rows)
    batch_rows = (chunks[0].stop - chunks[0].start) * (2 if cfg_weight != 1.0 else 1)
    with torch.inference_mode(), cpu_decoding(policy, batch_rows, decoding, compiled=compile_decode):
        for rows in chunks:
            codes[rows] = _sample_image_tokens(
                policy, prompt_ids[rows], prompt_mask[rows], cfg_weight=cfg_weight, temperature=temperature,
                top_k=top_k, greedy=greedy, generator=generator, steps=num_codes,
                compile_decode=compile_decode, cpu_compiler=decoding.cpu_compiler,
            )
    return prompt_ids, prompt_mask, codes


@torch.no_grad()
def rollout_images(
    policy: JanusPolicy,
    captions: Sequence[str],
    *,
    group_size: int = 1,
    cfg_weight: float = DEFAULT_CFG_WEIGHT,
    temperature: float = 1.0,
    top_k: int | None = None,
    greedy: bool = False,
    seed: int | None = None,
    decode: bool = True,
    max_rows: int | None = None,
    style: PromptStyle | None = None,
    compile_decode: bool = False,
    decoding: DecodingConfig | None = None,
    max_prompt_length: int | None = None,
) -> ImageRollout:
    """Sample `group_size` images for each caption -> ImageRollout with R = len(captions) * group_size rows,
    exactly N codes each.

    max_rows: at most this many samples per forward batch (each uses 2 rows with CFG), to bound memory.
    compile_decode: run the decode step with static shapes, compiled (`decoding.StaticDecoder`: AOTInductor
    on CPU, torch.compile with CUDA graphs on GPU); the first call per shape compiles (slow), later ones
    reuse the graph and keep its KV buffers allocated (`policy.static_decoders.clear()` frees them).
    decoding: the CPU decoding settings (`corl.config.DecodingConfig`; defaults when None).
    max_prompt_length: captions whose prompt is longer are cut from the left (`prompts_cut` counts them).
    """
    encoded = encode_generation(policy.processor, captions, style or policy.style, max_length=max_prompt_length)
    prompt_ids, prompt_mask, image_tokens = _sample_codes(
        policy, encoded, num_codes=policy.num_image_tokens, group_size=group_size, cfg_weight=cfg_weight,
        temperature=temperature, top_k=top_k, greedy=greedy, seed=seed, max_rows=max_rows,
        compile_decode=compile_decode, decoding=decoding,
    )  # image_tokens: [R, N]
    images = decode_images(policy, image_tokens) if decode else []
    return ImageRollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        image_tokens=image_tokens,
        images=images,
        captions=[caption for caption in captions for _ in range(group_size)],
        group_size=group_size,
        prompts_cut=encoded.num_cut,
        cfg_weight=float(cfg_weight),
        temperature=float(temperature),
        top_k=top_k,
        seed=seed,
    )


# ------------------------------------------------------------------------------------------- text


def _sample_completion(
    policy: JanusPolicy,
    prompt_embeds: torch.Tensor,  # [U, P, D] distinct prompts
    prompt_mask: torch.Tensor,  # [U, P]
    prompt_of_row: torch.Tensor,  # [r] long: the prompt (0..U-1) of each sampled row
    *,
    max_new_tokens: int,
    temperature: float,
    greedy: bool,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
    compile_decode: bool,
    cpu_compiler: str,
) -> torch.Tensor:
    """Sample up to max_new_tokens per row, stopping when every row has emitted EOS -> [r, steps] long
    (pad after each row's EOS). Call under torch.inference_mode."""
    model = policy.model
    language_model = model.model.language_model
    eos_id, pad_id = policy.tokens.eos_id, policy.tokens.pad_id
    rows = prompt_of_row.shape[0]
    device = prompt_mask.device
    # the G answers of a question share one prompt forward; the last token is never fed back
    hidden, decode = start_decoding(
        language_model,
        prompt_embeds,
        prompt_mask,
        prompt_of_row,
        max_new_tokens - 1,
        compile_step=compile_decode,
        static_decoders=policy.static_decoders,
        cpu_compiler=cpu_compiler,
    )  # hidden: [r, D]
    blocked = blocked_token_mask(policy.tokens.not_in_text, model.lm_head.out_features, device)  # [V]
    completion = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    steps = max_new_tokens
    for step in range(max_new_tokens):
        # [r, V]; an answer never contains the image placeholder (scoring would try to put image
        # features there); scoring suppresses the same ids, so both see the same distribution
        logits = suppress_tokens(model.lm_head(hidden), policy.tokens.not_in_text, blocked=blocked)
        token = sample_next(
            logits, temperature=temperature, greedy=greedy, top_k=top_k, top_p=top_p, generator=generator
        )
        token = token.masked_fill(finished, pad_id)
        completion[:, step] = token
        finished |= token == eos_id
        if step == max_new_tokens - 1 or bool(finished.all()):
            steps = step + 1
            break
        hidden = decode(language_model.get_input_embeddings()(token[:, None]))  # [r, D]
    return completion[:, :steps]


@torch.no_grad()
def rollout_text(
    policy: JanusPolicy,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    *,
    group_size: int = 1,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    greedy: bool = False,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    max_rows: int | None = None,
    style: PromptStyle | None = None,
    compile_decode: bool = False,
    decoding: DecodingConfig | None = None,
    max_prompt_length: int | None = None,
) -> TextRollout:
    """Sample `group_size` answers per (image, question) -> TextRollout with R = B * group_size rows.

    max_rows: at most this many answers per forward batch, to bound memory.
    compile_decode, decoding: as in `rollout_images`.
    max_prompt_length: a longer prompt loses the start of its question, never image tokens (`prompts_cut`).
    """
    if group_size < 1 or max_new_tokens < 1:
        raise ValueError(f"group_size and max_new_tokens must be >= 1, got {group_size}, {max_new_tokens}")
    style = style or policy.style
    decoding = decoding or DecodingConfig()
    device = policy.device
    encoded = encode_understanding(policy.processor, images, questions, style, max_length=max_prompt_length)
    ids = encoded.input_ids.to(device)  # [B, P]
    mask = encoded.attention_mask.to(device)
    pixel_values = encoded.pixel_values.to(device, policy.dtype)  # [B, 3, H, W]
    rows_total = ids.shape[0] * group_size
    prompt_of_row = torch.arange(ids.shape[0], device=device).repeat_interleave(group_size)  # [R]
    generator = make_generator(seed, device)
    chunks = _row_chunks(rows_total, max_rows)
    with torch.inference_mode():  # vision encoder once per image
        embeds = understanding_embeddings(policy.model, ids, pixel_values)  # [B, P, D]
    pieces = []
    with torch.inference_mode(), cpu_decoding(
        policy, chunks[0].stop - chunks[0].start, decoding, compiled=compile_decode
    ):
        for rows in chunks:
            prompts, local = torch.unique(prompt_of_row[rows], return_inverse=True)  # the chunk's questions
            pieces.append(
                _sample_completion(
                    policy, embeds[prompts], mask[prompts], local, max_new_tokens=max_new_tokens,
                    temperature=temperature, greedy=greedy, top_k=top_k, top_p=top_p, generator=generator,
                    compile_decode=compile_decode, cpu_compiler=decoding.cpu_compiler,
                )
            )
    pieces = [piece.clone() for piece in pieces]  # inference tensors -> normal tensors (usable in autograd)
    length = max(piece.shape[1] for piece in pieces)
    completion_ids = torch.cat(
        [
            torch.nn.functional.pad(piece, (0, length - piece.shape[1]), value=policy.tokens.pad_id)
            for piece in pieces
        ]
    )  # [R, C]
    completion_mask = completion_mask_after_eos(completion_ids, policy.tokens.eos_id)  # [R, C]
    has_eos = (completion_ids == policy.tokens.eos_id).any(dim=1)
    texts = policy.processor.tokenizer.batch_decode(
        [row[: int(n)] for row, n in zip(completion_ids.tolist(), completion_mask.sum(dim=1))],
        skip_special_tokens=True,
    )
    return TextRollout(
        prompt_ids=ids.repeat_interleave(group_size, dim=0),
        prompt_mask=mask.repeat_interleave(group_size, dim=0),
        pixel_values=pixel_values.repeat_interleave(group_size, dim=0),
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        texts=texts,
        questions=[question for question in questions for _ in range(group_size)],
        group_size=group_size,
        temperature=float(temperature),
        greedy=greedy,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        is_truncated=~has_eos,
        prompts_cut=encoded.num_cut,
    )


# ------------------------------------------------------------------------------------- conveniences


def answer(
    policy: JanusPolicy,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    *,
    greedy: bool = True,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    seed: int | None = None,
    style: PromptStyle | None = None,
) -> list[str]:
    """One answer per (image, question): decoded text, special tokens removed, tags kept."""
    result = rollout_text(
        policy, images, questions, greedy=greedy, max_new_tokens=max_new_tokens, temperature=temperature,
        seed=seed, style=style,
    )
    return result.texts


def generate_images(
    policy: JanusPolicy,
    captions: Sequence[str],
    n: int = 1,
    *,
    cfg_weight: float = DEFAULT_CFG_WEIGHT,
    seed: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> list[Image.Image]:
    """n images per caption (caption-major order) with CFG."""
    result = rollout_images(
        policy, captions, group_size=n, cfg_weight=cfg_weight, seed=seed, temperature=temperature, top_k=top_k
    )
    return result.images
