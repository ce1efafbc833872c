"""`corl generate` and `corl answer`: try a checkpoint from the command line.

Heavy imports (torch, transformers) happen inside the command functions, so registering the parsers
keeps `corl --help` fast. Without --model both use the Shapes base checkpoint
(`corl.policy.default_model_path()`).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from corl.cli.argtypes import add_threads_argument, finite_float, nonempty_text, positive_float, positive_int
from corl.config import DEFAULT_CFG_WEIGHT

logger = logging.getLogger(__name__)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="checkpoint directory or hub id (default: the Shapes base model, "
        "$CORL_SHAPES_BASE or ~/.cache/corl/shapes-base)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype", default="auto", help="auto | fp32 | bf16 | fp16 (auto: bf16 on CUDA, else fp32)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--temperature", type=positive_float, default=1.0, help="sampling temperature")
    add_threads_argument(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    generate = subparsers.add_parser(
        "generate",
        help="generate images from a text prompt",
        description="Text-to-image with classifier-free guidance.",
    )
    generate.add_argument("--prompt", required=True, type=nonempty_text, help="the caption to draw")
    generate.add_argument("-n", "--images-per-prompt", type=positive_int, default=4,
                          help="images to draw (default 4)")
    generate.add_argument("--raw", action="store_true",
                          help="tile the images at their own size, edge to edge, without the caption")
    generate.add_argument("--out", type=Path, default=Path("grid.png"), help="output image grid (PNG)")
    generate.add_argument("--cfg", type=finite_float, default=DEFAULT_CFG_WEIGHT,
                          help=f"classifier-free guidance weight (1 = none; default {DEFAULT_CFG_WEIGHT:g})")
    generate.add_argument("--top-k", type=positive_int, default=None, help="sample only among the k most likely codes")
    _add_model_arguments(generate)
    generate.set_defaults(func=run_generate, _parser=generate)

    answer = subparsers.add_parser(
        "answer",
        help="answer a question about an image",
        description="Image understanding: image + question -> text.",
    )
    answer.add_argument("--image", type=Path, required=True, help="image file")
    answer.add_argument("--question", required=True, type=nonempty_text, help="the question")
    mode = answer.add_mutually_exclusive_group()
    mode.add_argument(
        "--greedy", dest="greedy", action="store_true", default=True, help="greedy decoding (default)"
    )
    mode.add_argument(
        "--sample", dest="greedy", action="store_false", help="sample with --temperature and --seed"
    )
    answer.add_argument("--max-new-tokens", type=positive_int, default=256, help="answer length limit in tokens")
    answer.add_argument("--raw", action="store_true",
                        help="print the whole completion (reasoning and tags), not only the answer")
    answer.add_argument(
        "--no-format", action="store_true", help="leave out the <think>/<answer> format instruction"
    )
    _add_model_arguments(answer)
    answer.set_defaults(func=run_answer, _parser=answer)


def _load(args):
    from corl.policy.loading import load_policy

    return load_policy(args.model, dtype=args.dtype, device=args.device)


def prompt_budget(policy, new_tokens: int, flag: str) -> int:
    """Prompt tokens that leave room for `new_tokens` within the model's positions."""
    positions = policy.model.config.text_config.max_position_embeddings
    if new_tokens >= positions:
        raise ValueError(f"{flag} ({new_tokens}) leaves no room for a prompt in the model's {positions} positions")
    return positions - new_tokens


def _warn_if_cut(rollout, what: str, limit: int) -> None:
    if rollout.prompts_cut:
        logger.warning("the %s was too long for the model: its start was cut to fit %d prompt tokens", what, limit)


def run_generate(args: argparse.Namespace) -> int:
    from corl.eval.grading import captioned_grid, image_grid
    from corl.generation.rollout import rollout_images

    policy = _load(args)
    limit = prompt_budget(policy, policy.num_image_tokens, "the image's tokens")
    rollout = rollout_images(
        policy, [args.prompt], group_size=args.images_per_prompt, cfg_weight=args.cfg, seed=args.seed,
        temperature=args.temperature, top_k=args.top_k, max_prompt_length=limit,
    )
    _warn_if_cut(rollout, "prompt", limit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.raw:  # the model's own pixels, tiled edge to edge
        image_grid(rollout.images, cols=math.ceil(math.sqrt(len(rollout.images)))).save(args.out)
    else:
        captioned_grid(rollout.images, args.prompt).save(args.out)
    print(f"wrote {len(rollout.images)} images of {rollout.images[0].size[0]}px to {args.out}")
    return 0


def run_answer(args: argparse.Namespace) -> int:
    from corl.data.images import to_rgb_image
    from corl.generation.rollout import rollout_text
    from corl.rewards.accuracy import answer_span
    from corl.policy.prompts import PromptStyle

    if not args.image.is_file():
        raise FileNotFoundError(f"no image file {args.image}")
    # Decoded before the model loads: an empty, truncated, garbage or oversized file is a one-line
    # ValueError naming it (ImageDecodeError), not a PIL traceback after a long model load.
    image = to_rgb_image(args.image)
    policy = _load(args)
    style = PromptStyle(answer_format=None) if args.no_format else policy.style
    limit = prompt_budget(policy, args.max_new_tokens, "--max-new-tokens")
    rollout = rollout_text(
        policy, [image], [args.question], greedy=args.greedy, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, seed=args.seed, style=style, max_prompt_length=limit,
    )
    _warn_if_cut(rollout, "question", limit)
    completion = rollout.texts[0]
    print(completion if args.raw else (answer_span(completion, require_answer_tag=False) or completion).strip())
    return 0
