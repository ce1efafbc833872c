"""Image-rollout throughput: corl's rollout vs a naive reference loop, same model, same process.

    .venv/bin/python benchmarks/rollout.py [--model shapes|1b|all] [--repeats N] [--threads 2]
        [--prompts 2] [--group-size 8] [--steps N] [--device cpu|cuda] [--dtype fp32|bf16] [--compile]
        [--single-thread-below MACS]

Models: `shapes` = the Shapes base checkpoint (`corl.policy.default_model_path()`) when it exists, else a
random-weight stand-in at its sizes (48 px, patch 8 -> 36 image tokens, LLM 128 wide x 3 layers);
`1b` = a Janus-Pro-1B-shaped model with random weights (`JANUS_PRO_1B`: LLM 2048 x 24 layers, 16384 VQ
codes, 576 image tokens), sampling only `--steps` of the 576 codes (default 16 on CPU; corl's loop through
`sample_image_codes(num_codes=steps)`) with the real grid and heads otherwise.

The naive loop is the straightforward way, written here on purpose: transformers' DynamicCache grown
by one token per step through `LlamaModel.forward`, conditional and unconditional rows in one batch
(a full prompt forward for every row), log-softmax and sampling per step in Python. Both loops draw from
the same CFG distribution (w = --cfg, temperature 1) with the same seed; the line `same codes`
says whether they drew the same tokens (they should, up to float rounding in rare draws).

`--full-image` (1b) estimates a whole image's rollout on CPU, where timing all 576 codes would take
half an hour: the cost of one code grows with the cache (the naive loop copies its whole cache with
torch.cat every step), so both loops time 3 codes with the cache filled to the midpoints of 4 equal slices
of the image and the full rollout is N times their mean (the midpoint rule; exact for a per-code cost
linear in the depth). Prefill is left out of both (it favors corl: one prompt forward per distinct prompt).

Timing: `--repeats` rounds (default 11 for Shapes, 3 for 1b), each timing both loops back to back, the
order alternating between rounds; medians are reported. Throughput = images x sampled codes / seconds (prompt forward included; the VQ
decoder is not part of either). A 1-code run per loop (off with `--no-breakdown`) splits the time into
the prompt forward (prefill) and the per-code decode step. The load average is printed: the CPU may be
shared, so compare the two lines of one run, not runs on different days.

GPU (`--device cuda --dtype bf16 --steps 576`, optionally `--compile` for torch.compile + CUDA graphs
of corl's decode step) is wired but was not run when this was written (no GPU in that session).
`--compile` on CPU compiles the step ahead of time with AOTInductor (first rollout: 10-20 s for Shapes).
`--single-thread-below` sets `DecodingConfig.single_thread_below` (recipe key
`rollout.decoding.single_thread_below`, off by default) for corl's loop: an eager decode step whose largest
matmul is under that many multiply-adds runs on one thread; a `corl-all-threads` line then times corl
with it off, to show how much of the ratio is the thread choice.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transformers import DynamicCache

from corl.config import DecodingConfig
from corl.generation import decoding
from corl.generation.rollout import cpu_decoding, draw_code_with_noise, sample_image_codes
from corl.generation.sampling import exponential_noise
from corl.policy.architecture import JANUS_PRO_1B, JanusSizes, build_janus
from corl.policy.loading import default_model_path, load_policy
from corl.policy.logits import positions_from_mask, unconditional_prompt
from corl.policy.policy import JanusPolicy
from corl.policy.prompts import encode_generation
from corl.policy.testing import TINY_SIZES, TINY_WORDS, tiny_janus
from corl.policy.tokenizer import build_processor, build_tokenizer

# Shapes-style captions made only of words the stand-in's tiny tokenizer knows (and the real Shapes one)
CAPTIONS = [
    "a red circle left of a blue square",
    "two green triangles above a yellow square",
    "three blue circles",
    "a yellow triangle below a red square",
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ----------------------------------------------------------------------------------------- models


def shapes_sizes() -> JanusSizes:
    """The Shapes base model's sizes (corl.basemodel.pipeline), or a copy of them if that moved."""
    try:
        from corl.basemodel.pipeline import shapes_base_sizes

        return shapes_base_sizes()
    except ImportError:
        return replace(
            TINY_SIZES,
            text_hidden_size=128,
            text_intermediate_size=384,
            text_layers=3,
            text_heads=4,
            text_kv_heads=4,
            image_size=48,
            patch_size=8,
            vq_codebook_size=128,
        )


def shapes_policy(device: str, dtype: torch.dtype) -> tuple[JanusPolicy, str]:
    try:
        path = default_model_path()
        return load_policy(path, dtype=dtype, device=device), f"Shapes base checkpoint ({path})"
    except FileNotFoundError:
        pass
    model, processor = tiny_janus(0, sizes=shapes_sizes())
    policy = JanusPolicy(model.to(device=device, dtype=dtype), processor)
    return policy, "random-weight stand-in at SHAPES_BASE_SIZES (no Shapes base checkpoint yet)"


def janus_1b_policy(device: str, dtype: torch.dtype) -> tuple[JanusPolicy, str]:
    tokenizer = build_tokenizer(list(TINY_WORDS))
    processor = build_processor(tokenizer, JANUS_PRO_1B.image_size, patch_size=JANUS_PRO_1B.patch_size)
    torch.manual_seed(0)
    model = build_janus(JANUS_PRO_1B, tokenizer).to(device=device, dtype=dtype)
    return JanusPolicy(model, processor), "Janus-Pro-1B-shaped, random weights (JANUS_PRO_1B sizes)"


def describe(policy: JanusPolicy) -> str:
    text = policy.model.config.text_config
    params = sum(p.numel() for p in policy.model.model.language_model.parameters()) / 1e6
    return (
        f"LLM {text.hidden_size} x {text.num_hidden_layers} layers ({params:.1f}M params), "
        f"{policy.model.config.vq_config.num_embeddings} image codes, N = {policy.num_image_tokens}, "
        f"{policy.dtype}, {policy.device}"
    )


# ------------------------------------------------------------------------------------ naive loop


def naive_draw(policy: JanusPolicy, hidden: torch.Tensor, cfg_weight: float, generator: torch.Generator
               ) -> torch.Tensor:
    """hidden [2R, D] (conditional rows, then unconditional) -> one code per sample [R]."""
    rows = hidden.shape[0] // 2
    logits = policy.model.model.generation_head(hidden).float()  # [2R, V_img]
    logits = logits[rows:] + cfg_weight * (logits[:rows] - logits[rows:])  # [R, V_img]
    logprobs = torch.log_softmax(logits, dim=-1)
    return torch.multinomial(logprobs.exp(), 1, generator=generator).squeeze(-1)  # [R]


def naive_feed(policy: JanusPolicy, token: torch.Tensor, mask: torch.Tensor, position: torch.Tensor,
               cache: DynamicCache) -> tuple[torch.Tensor, torch.Tensor]:
    """Feed each sample's code to both its rows through transformers' forward: the mask grows by one
    column (torch.cat) and so does the DynamicCache. -> (hidden [2R, D], mask [2R, L + 1])."""
    mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    embeds = policy.model.prepare_embeddings_for_image_generation(torch.cat([token, token])[:, None])
    out = policy.model.model.language_model(
        inputs_embeds=embeds,
        attention_mask=mask,
        position_ids=position,
        **{decoding.CACHE_KWARG: cache},
        use_cache=True,
    )
    return out.last_hidden_state[:, -1], mask


@torch.no_grad()
def naive_rollout(
    policy: JanusPolicy, captions: list[str], group_size: int, cfg_weight: float, steps: int, seed: int
) -> torch.Tensor:
    """The straightforward CFG image rollout -> [R, steps] codes (R = len(captions) * group_size)."""
    model = policy.model
    language_model = model.model.language_model
    encoded = encode_generation(policy.processor, captions, policy.style)
    ids = encoded.input_ids.repeat_interleave(group_size, 0).to(policy.device)  # [R, P]
    mask = encoded.attention_mask.repeat_interleave(group_size, 0).to(policy.device)
    tokens = policy.tokens
    uncond = unconditional_prompt(ids, bos_id=tokens.bos_id, boi_id=tokens.boi_id, pad_id=tokens.pad_id)
    ids, mask = torch.cat([ids, uncond]), torch.cat([mask, mask])  # [2R, P]: cond rows, then uncond rows
    positions = positions_from_mask(mask)
    cache = DynamicCache(config=language_model.config)
    out = language_model(
        inputs_embeds=language_model.get_input_embeddings()(ids),
        attention_mask=mask,
        position_ids=positions,
        **{decoding.CACHE_KWARG: cache},
        use_cache=True,
    )
    hidden = out.last_hidden_state[:, -1]  # [2R, D]
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    drawn = []
    for step in range(steps):
        token = naive_draw(policy, hidden, cfg_weight, generator)  # [R]
        drawn.append(token)
        if step == steps - 1:
            break
        hidden, mask = naive_feed(policy, token, mask, positions[:, -1:] + 1 + step, cache)
    return torch.stack(drawn, dim=1)


def single_thread_applies(policy: JanusPolicy, rows: int, settings: DecodingConfig, compiled: bool) -> bool:
    text = policy.model.config.text_config
    return decoding.single_thread_decode(
        rows * text.hidden_size * text.intermediate_size,
        settings.single_thread_below,
        policy.device,
        compiled=compiled,
    )


def all_threads(settings: DecodingConfig) -> DecodingConfig:
    """`settings` with corl's single-thread rule for tiny decode steps switched off."""
    return replace(settings, single_thread_below=0)


def corl_rollout(
    policy: JanusPolicy,
    captions: list[str],
    group_size: int,
    cfg_weight: float,
    steps: int,
    seed: int,
    compile_decode: bool = False,
    settings: DecodingConfig | None = None,
) -> torch.Tensor:
    """corl's image rollout without the VQ decoder, the first `steps` codes only -> [R, steps]."""
    _, _, codes = sample_image_codes(
        policy,
        captions,
        num_codes=steps,
        group_size=group_size,
        cfg_weight=cfg_weight,
        seed=seed,
        compile_decode=compile_decode,
        decoding=settings,
    )
    return codes


# --------------------------------------------------------------------------------------- timing


def timed(fn: Callable[[], torch.Tensor], device: str) -> tuple[float, torch.Tensor]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def bench_model(name: str, policy: JanusPolicy, source: str, args: argparse.Namespace, steps: int) -> float:
    captions = (CAPTIONS * args.prompts)[: args.prompts]
    images = len(captions) * args.group_size
    print(f"\n== {name}: {source}\n   {describe(policy)}")
    print(
        f"   {args.prompts} prompts x G = {args.group_size} -> {images} images "
        f"({2 * images} rows with CFG w = {args.cfg}), {steps} of {policy.num_image_tokens} codes each, "
        f"{torch.get_num_threads()} threads; {load()}"
    )
    settings = decoding_settings(args)
    loops = {
        "naive": lambda n: naive_rollout(policy, captions, args.group_size, args.cfg, n, args.seed),
        "corl": lambda n: corl_rollout(
            policy, captions, args.group_size, args.cfg, n, args.seed, args.compile, settings
        ),
    }
    text = policy.model.config.text_config
    if single_thread_applies(policy, 2 * images, settings, args.compile):
        # corl decodes tiny models on one thread; this variant keeps the caller's thread count, to show
        # how much of the ratio is the thread choice and how much the rest
        loops["corl-all-threads"] = lambda n: corl_rollout(
            policy, captions, args.group_size, args.cfg, n, args.seed, args.compile, all_threads(settings)
        )
        print(
            f"   corl decodes on 1 thread here ({2 * images} rows x {text.hidden_size} x "
            f"{text.intermediate_size} < {settings.single_thread_below} multiply-adds per matmul); "
            "corl-all-threads keeps the thread count"
        )
    for fn in loops.values():  # warm-up (allocator, lazy init; compiles corl's step with --compile)
        fn(min(steps, 2 if not args.compile else steps))
    times: dict[str, list[float]] = {key: [] for key in loops}
    prefill: dict[str, list[float]] = {key: [] for key in loops}
    outputs: dict[str, torch.Tensor] = {}
    for repeat in range(args.repeats):
        order = list(loops) if repeat % 2 == 0 else list(reversed(loops))
        for key in order:
            seconds, outputs[key] = timed(lambda key=key: loops[key](steps), args.device)
            times[key].append(seconds)
            if args.breakdown:
                prefill[key].append(timed(lambda key=key: loops[key](1), args.device)[0])
        print(
            f"   round {repeat + 1}: "
            + ", ".join(f"{key} {times[key][-1]:.3f}s" for key in order)
            + f"; {load()}"
        )
    same = (outputs["naive"] == outputs["corl"]).float().mean().item()
    print(f"   same codes drawn by naive and corl: {100 * same:.1f}%")
    throughput = {key: images * steps / statistics.median(values) for key, values in times.items()}
    if args.breakdown and steps > 1:
        for key in loops:
            first = statistics.median(prefill[key])
            per_step = (statistics.median(times[key]) - first) / (steps - 1)
            print(f"   {key}: prefill + first code {first:.3f}s, then {1000 * per_step:.1f} ms per code")
    for key in ["naive", *(key for key in loops if key not in ("naive", "corl")), "corl"]:
        median = statistics.median(times[key])
        print(f"   {key}: {throughput[key]:.1f} image tokens/s (median {median:.3f}s)")
    if "corl-all-threads" in loops:
        print(
            f"   ratio corl-all-threads / naive: {throughput['corl-all-threads'] / throughput['naive']:.2f}x"
        )
    ratio = throughput["corl"] / throughput["naive"]
    print(f"   ratio corl / naive: {ratio:.2f}x")
    return ratio


def step_times_at_depth(policy: JanusPolicy, args: argparse.Namespace, rows: int, depth: int, steps: int
                        ) -> dict[str, list[float]]:
    """Seconds per image code for both loops with `depth` positions already in the cache: each timed
    step is one full rollout step (generation head, CFG, sampling, the code's embedding, the LLM step),
    the naive one through transformers' forward with a DynamicCache (grown by torch.cat), corl's through
    its DecodeStep on a PreallocatedCache. Both caches are filled (untimed) from one forward over 4
    distinct random prefixes of `depth` tokens: the cache content does not change the cost."""
    model = policy.model
    language_model = model.model.language_model
    config = language_model.config
    generator = torch.Generator().manual_seed(depth)
    ids = torch.randint(0, config.vocab_size, (4, depth), generator=generator).to(policy.device)
    prefix = DynamicCache(config=config)
    with torch.inference_mode():
        state = language_model(input_ids=ids, **{decoding.CACHE_KWARG: prefix}, use_cache=True).last_hidden_state[:, -1]
    which = torch.arange(4, device=policy.device).repeat_interleave(rows // 4)  # [rows]
    mask = torch.ones(rows, depth, dtype=torch.long, device=policy.device)

    @torch.inference_mode()
    def naive() -> float:
        cache = DynamicCache(config=config)
        for index, layer in enumerate(prefix.layers):
            cache.update(layer.keys[which].clone(), layer.values[which].clone(), index)
        grown, hidden, sampler = mask, state[which], torch.Generator().manual_seed(0)
        start = time.perf_counter()
        for step in range(steps):
            token = naive_draw(policy, hidden, args.cfg, sampler)
            position = torch.full((rows, 1), depth + step, device=policy.device)
            hidden, grown = naive_feed(policy, token, grown, position, cache)
        seconds = (time.perf_counter() - start) / steps
        del cache
        return seconds

    @torch.inference_mode()
    def corl() -> float:
        # the CPU settings corl's rollouts run their eager steps with
        with cpu_decoding(policy, rows, decoding_settings(args)):
            return corl_steps()

    def corl_steps() -> float:
        cache = decoding.PreallocatedCache(
            config, rows, depth + steps, dtype=policy.dtype, device=policy.device
        )
        cache.write_prefix(prefix, which)
        step_fn = decoding.DecodeStep(language_model, cache, mask, steps)
        hidden, sampler = state[which], torch.Generator().manual_seed(0)
        start = time.perf_counter()
        for _ in range(steps):
            noise = exponential_noise(rows // 2, policy.image_vocab_size, generator=sampler, device=policy.device)
            token = draw_code_with_noise(model, hidden, noise, cfg_weight=args.cfg, temperature=1.0)  # [images]
            embeds = model.prepare_embeddings_for_image_generation(token[:, None])
            hidden = step_fn(torch.cat([embeds, embeds]))
        seconds = (time.perf_counter() - start) / steps
        del cache, step_fn
        return seconds

    times: dict[str, list[float]] = {"naive": [], "corl": []}
    for repeat in range(args.repeats):
        for key in ("naive", "corl") if repeat % 2 == 0 else ("corl", "naive"):
            times[key].append((naive if key == "naive" else corl)())
    return times


def bench_full_image(policy: JanusPolicy, args: argparse.Namespace, rows: int, prompt_len: int = 16,
                     bins: int = 4, steps: int = 3) -> float:
    """A whole image's rollout time, estimated: the per-code cost grows with the cache (the naive
    loop copies its whole cache every step), so per-code times are measured at the midpoints of `bins`
    equal slices of the image's N codes (midpoint rule: exact when the cost is linear in the depth)
    and summed over the N codes; prefill is left out of both (a few percent at N = 576)."""
    n = policy.num_image_tokens
    depths = [prompt_len + round((k + 0.5) * n / bins) for k in range(bins)]
    per_code: dict[str, list[float]] = {"naive": [], "corl": []}
    print(f"   full image, estimated from {steps} codes at each of the cache depths {depths} "
          f"({rows} rows, median of {args.repeats}):")
    for depth in depths:
        times = step_times_at_depth(policy, args, rows, depth, steps)
        for key, values in per_code.items():
            values.append(statistics.median(times[key]))
        naive, corl = per_code["naive"][-1], per_code["corl"][-1]
        print(f"     depth {depth}: naive {naive:.3f}s, corl {corl:.3f}s per code ({naive / corl:.2f}x); "
              f"{load()}")
    images = rows // 2
    total = {key: n * statistics.fmean(values) for key, values in per_code.items()}
    for key, seconds in total.items():
        print(f"   {key}: {seconds:.1f}s per group of {images} images x {n} codes, "
              f"{images * n / seconds:.1f} image tokens/s (estimated)")
    ratio = total["naive"] / total["corl"]
    print(f"   ratio corl / naive, full image (estimated): {ratio:.2f}x")
    return ratio


def decoding_settings(args: argparse.Namespace) -> DecodingConfig:
    """corl's CPU decoding settings for this run: the defaults, with --single-thread-below if given."""
    settings = DecodingConfig()
    if args.single_thread_below is not None:
        settings = replace(settings, single_thread_below=args.single_thread_below)
    return settings


def with_repeats(args: argparse.Namespace, default: int) -> argparse.Namespace:
    """args with --repeats set to `default` when the user gave none (per model: rounds differ in cost)."""
    return argparse.Namespace(**{**vars(args), "repeats": args.repeats or default})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["shapes", "1b", "all"], default="all")
    parser.add_argument(
        "--repeats", type=int, default=None,
        help="timed rounds per loop (default: 11 for the Shapes model, whose rounds take 0.1 s; 3 for 1b)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="codes per image (default: all for Shapes; 1b: 16 on CPU, 576 on GPU)",
    )
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--compile", action="store_true", help="corl: torch.compile the decode step (GPU)")
    parser.add_argument(
        "--single-thread-below",
        type=int,
        default=None,
        metavar="MACS",
        help="corl: DecodingConfig.single_thread_below (default: the config's, "
        f"{DecodingConfig().single_thread_below} = off); adds a corl-all-threads line where it applies",
    )
    parser.add_argument("--no-breakdown", dest="breakdown", action="store_false", help="skip the 1-code runs")
    parser.add_argument(
        "--full-image",
        action="store_true",
        help="1b: also estimate a whole image's rollout from codes timed at 4 cache depths (CPU: minutes)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    ratios = {}
    if args.model in ("shapes", "all"):
        policy, source = shapes_policy(args.device, dtype)
        steps = min(args.steps or policy.num_image_tokens, policy.num_image_tokens)
        ratios["shapes"] = bench_model("Shapes", policy, source, with_repeats(args, 11), steps)
        del policy
    if args.model in ("1b", "all"):
        policy, source = janus_1b_policy(args.device, dtype)
        args = with_repeats(args, 3)
        default_steps = policy.num_image_tokens if args.device.startswith("cuda") else 16
        steps = min(args.steps or default_steps, policy.num_image_tokens)
        ratios["1b"] = bench_model("Janus-Pro-1B shape", policy, source, args, steps)
        if args.full_image:
            ratios["1b full image"] = bench_full_image(policy, args, 2 * args.prompts * args.group_size)
    print("\n" + ", ".join(f"{name}: corl / naive = {ratio:.2f}x" for name, ratio in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
