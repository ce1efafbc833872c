"""Supervised training of the Shapes Janus model on both tasks (teacher forcing), after the VQ is trained.

Examples, drawn from a seeded stream of fresh Shapes scenes (the test split's rows are excluded):
- t2i: the generation prompt of `corl.policy.prompts.encode_generation` (THE prompt format of RL) ->
  the 36 VQ codes of the scene's render. Loss: cross-entropy of the generation head on every code,
  through `corl.policy.scoring.image_token_logits` (the logit at position t predicts code t + 1; the
  same function scores image log-probs at RL time, so SFT and RL cannot disagree on alignment).
  A share `uncond_fraction` of t2i rows gets the CFG unconditional prompt instead
  (`corl.policy.logits.unconditional_prompt`: every prompt token but BOS and the image-start tag
  replaced by pad, same attention mask), so classifier-free guidance has an unconditional model.
- mm2t: the understanding prompt of `encode_understanding` (image + question + answer-format
  instruction) -> "<think>I see ...</think><answer>...</answer>" then EOS. Loss: cross-entropy of the
  text head on the completion tokens only (EOS included), through `scoring.text_token_logits`.
Both prompts are worded in the policy's own `PromptStyle` (`policy.style`), as its rollouts are.

MC answers: a share `mc_option_text` of MC targets answer with the option's text ("<answer>blue</answer>",
which R_acc and the evaluation accept: the option text maps to its letter) instead of the letter. The
letter needs a lookup (perceived color -> the option line naming it -> its letter) that this 3-layer model
does not learn within the SFT budget: its letters are at chance. The option text only needs perception, as
open-ended answers do. So the base model mostly guesses letters (greedy) but sometimes names the option
(sampling), and GRPO can find that naming pays: the Shapes world's MC gain comes from that switch, not
from learning the lookup.

Format reward room: the completion is off-format (the bare "<answer>...</answer>", no think block)
with probability `off_format_counting` for counting questions ("How many ...") and `off_format_other`
otherwise. With the defaults (0.6 / 0.1) greedy decoding answers counting questions off-format and the
rest on-format, so the base model's format rate is neither 0 nor 1, and sampling at temperature 1
still produces both forms for every question: GRPO's format reward has signal.

"Just enough to be mediocre" is a step budget per task (`t2i_steps`, `mm2t_steps`): the loop runs the
longer of the two, each task contributing its loss only within its own budget.

Choices taken: AdamW (betas 0.9 / 0.95, weight decay 0.01 on matrices), linear warmup then cosine decay
to 10%; everything but the VQ model trains (the LLM, its text head, the understanding encoder and
aligner, the generation embeddings, aligner and head all start random). Prompts are tokenized once per
pool example and left-padded per batch; batches are drawn with a seeded torch.Generator.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from corl.basemodel.vq_training import encode_codes, images_to_pixels, warmup_cosine_factor
from corl.config import DEFAULT_CFG_WEIGHT
from corl.policy.logits import cfg_logits, unconditional_prompt
from corl.policy.policy import JanusPolicy
from corl.policy.prompts import encode_generation, encode_understanding
from corl.policy.scoring import image_token_logits, text_token_logits
from corl.shapes.captions import caption_for, think_text
from corl.shapes.questions import QUESTION_KINDS, make_question, parse_mc_options
from corl.shapes.render import render_scene
from corl.shapes.scene import Scene, sample_scene

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SFTConfig:
    """Knobs of supervised training (defaults: the shipped Shapes base model)."""

    t2i_steps: int = 300  # steps with a t2i loss
    mm2t_steps: int = 300  # steps with an mm2t loss
    t2i_batch_size: int = 16
    mm2t_batch_size: int = 16
    lr: float = 1.5e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    uncond_fraction: float = 0.1  # t2i rows trained as CFG's unconditional branch
    t2i_label_smoothing: float = 0.005  # keeps both CFG branches' tails at the same floor (see t2i_loss)
    t2i_guided_weight: float = 1.0  # weight of the guided (CFG) cross-entropy (see t2i_loss); 0: off
    # the CFG weight the guided term trains for (the rollouts' and evaluation's)
    guidance: float = DEFAULT_CFG_WEIGHT
    off_format_counting: float = 0.6  # P(no <think> block) for "How many ..." questions
    off_format_other: float = 0.1  # P(no <think> block) for every other question
    mc_option_text: float = 0.3  # P(an MC target answers with the option's text instead of its letter)
    t2i_pool_size: int = 2400  # distinct (caption, scene) t2i examples
    mm2t_pool_size: int = 3200  # distinct (scene, question) mm2t examples
    seed: int = 0

    @property
    def steps(self) -> int:
        return max(self.t2i_steps, self.mm2t_steps)


# ---- targets ---------------------------------------------------------------------------------------


def is_counting_question(question: str) -> bool:
    return question.lstrip().lower().startswith("how many")


def completion_for(scene: Scene, solution: str, on_format: bool) -> str:
    """The SFT target after the prompt (EOS is appended as a token, not as text)."""
    return f"<think>{think_text(scene)}</think>{solution}" if on_format else solution


def option_text_answer(question: str, solution: str) -> str:
    """'<answer>B</answer>' of an MC question -> '<answer>blue</answer>' (the text of option B)."""
    letter = solution.removeprefix("<answer>").removesuffix("</answer>").strip()
    return f"<answer>{parse_mc_options(question)[letter]}</answer>"


# ---- example pools ---------------------------------------------------------------------------------


@dataclass
class T2IPool:
    prompt_ids: list[list[int]]  # unpadded generation prompts (BOS ... image-start)
    codes: torch.Tensor  # [n, N] VQ codes of the renders
    captions: list[str]


@dataclass
class MM2TPool:
    prompt_ids: list[list[int]]  # unpadded understanding prompts (with image placeholders)
    pixel_values: torch.Tensor  # [n, 3, H, W]
    completion_ids: list[list[int]]  # completion tokens + EOS
    on_format: list[bool]
    questions: list[str]


def _unpadded(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


def sample_t2i_examples(
    n: int, seed: int, exclude: set[tuple[str, str]] = frozenset()
) -> list[tuple[str, Scene]]:
    """n (caption, scene) pairs from a seeded stream, none of them in `exclude` ((caption, scene JSON))."""
    rng = random.Random(f"corl-base-sft-t2i:{seed}")
    out: list[tuple[str, Scene]] = []
    skipped = 0
    while len(out) < n:
        scene = sample_scene(rng)
        caption = caption_for(scene, rng)
        if (caption, scene.to_json()) in exclude:
            skipped += 1
            continue
        out.append((caption, scene))
    if skipped:
        logger.info("t2i pool: skipped %d samples that are test rows", skipped)
    return out


QuestionMaker = Callable[[Scene, random.Random, str], tuple[str, str]]  # (scene, rng, kind) -> (question, solution)


def sample_mm2t_examples(
    n: int, seed: int, exclude: set[tuple[str, str]] = frozenset(), make: QuestionMaker | None = None
) -> list[tuple[Scene, str, str]]:
    """n (scene, question, solution) triples (MC and OE alternating), none with a (scene JSON, question)
    pair in `exclude`; `make` asks the question (default: the Shapes templates' own mix)."""
    make = make or make_question
    rng = random.Random(f"corl-base-sft-mm2t:{seed}")
    out: list[tuple[Scene, str, str]] = []
    skipped = 0
    while len(out) < n:
        scene = sample_scene(rng)
        question, solution = make(scene, rng, QUESTION_KINDS[len(out) % len(QUESTION_KINDS)])
        if (scene.to_json(), question) in exclude:
            skipped += 1
            continue
        out.append((scene, question, solution))
    if skipped:
        logger.info("mm2t pool: skipped %d samples that are test rows", skipped)
    return out


def build_t2i_pool(policy: JanusPolicy, examples: Sequence[tuple[str, Scene]], image_size: int,
                   chunk: int = 256) -> T2IPool:
    """Tokenize the prompts and VQ-encode the renders (with the model's own, trained VQ)."""
    captions = [c for c, _ in examples]
    prompt_ids: list[list[int]] = []
    codes = []
    vq = policy.model.model.vqmodel
    for start in range(0, len(examples), chunk):
        part = examples[start : start + chunk]
        enc = encode_generation(policy.processor, [c for c, _ in part], policy.style)
        prompt_ids.extend(_unpadded(enc.input_ids, enc.attention_mask))
        pixels = images_to_pixels([render_scene(s, image_size) for _, s in part])
        codes.append(encode_codes(vq, pixels))
    return T2IPool(prompt_ids, torch.cat(codes), captions)


def build_mm2t_pool(policy: JanusPolicy, examples: Sequence[tuple[Scene, str, str]], image_size: int,
                    config: SFTConfig, chunk: int = 256) -> MM2TPool:
    """Tokenize prompts and completions, preprocess the renders; on/off-format drawn per example."""
    rng = random.Random(f"corl-base-sft-format:{config.seed}")
    tokenizer = policy.processor.tokenizer
    eos = policy.tokens.eos_id
    prompt_ids: list[list[int]] = []
    pixel_values = []
    completion_ids: list[list[int]] = []
    on_format: list[bool] = []
    for start in range(0, len(examples), chunk):
        part = examples[start : start + chunk]
        images = [render_scene(s, image_size) for s, _, _ in part]
        enc = encode_understanding(policy.processor, images, [q for _, q, _ in part], policy.style)
        prompt_ids.extend(_unpadded(enc.input_ids, enc.attention_mask))
        pixel_values.append(enc.pixel_values)
        for scene, question, solution in part:
            p_off = config.off_format_counting if is_counting_question(question) else config.off_format_other
            formatted = rng.random() >= p_off
            if parse_mc_options(question) and rng.random() < config.mc_option_text:
                solution = option_text_answer(question, solution)
            text = completion_for(scene, solution, formatted)
            completion_ids.append(tokenizer(text, add_special_tokens=False)["input_ids"] + [eos])
            on_format.append(formatted)
    return MM2TPool(prompt_ids, torch.cat(pixel_values), completion_ids, on_format, [q for _, q, _ in examples])


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids -> (ids [B, L], mask [B, L]) left-padded to the longest row."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, length - len(row) :] = 1
    return ids, mask


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids -> (ids [B, C], mask [B, C]) right-padded to the longest row."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


# ---- losses ----------------------------------------------------------------------------------------


def t2i_loss(policy: JanusPolicy, pool: T2IPool, rows: torch.Tensor, uncond: torch.Tensor,
             label_smoothing: float = 0.0, guided_weight: float = 0.0,
             guidance: float = DEFAULT_CFG_WEIGHT) -> torch.Tensor:
    """Cross-entropy over the N codes of the selected rows (mean per code); `uncond` [b] bool marks rows
    trained with the unconditional (pad) prompt.

    guided_weight > 0 adds the cross-entropy of the *guided* distribution softmax(u + w (c - u)) (w =
    `guidance`, u / c the unconditional / conditional generation-head logits, as the rollout samples) on
    the conditional rows. Why: guidance multiplies every disagreement between the two branches by w - 1,
    and a small model's branches disagree most where it matters least, on codes both deem nearly
    impossible: measured before this term, after the last object of an image both branches gave the
    white code p = 0.98-0.99, but guided at w = 5 only 0.6-0.8, so CFG-5 images were full of stray
    objects (5% pass rate against 68% without guidance). Training the guided distribution on the data
    makes the branches agree where they should. Label smoothing keeps both branches' tails at one floor.
    """
    ids, mask = left_pad([pool.prompt_ids[i] for i in rows.tolist()], policy.tokens.pad_id)  # [b, P]
    blank = unconditional_prompt(ids, bos_id=policy.tokens.bos_id, boi_id=policy.tokens.boi_id,
                                 pad_id=policy.tokens.pad_id)
    ids = torch.where(uncond[:, None], blank, ids)
    codes = pool.codes[rows]  # [b, N]
    if guided_weight <= 0:
        logits = image_token_logits(policy, ids, mask, codes, cfg_weight=None)  # [b, N, V_img]
        return F.cross_entropy(logits.flatten(0, 1), codes.flatten(), label_smoothing=label_smoothing)
    both = image_token_logits(policy, torch.cat([ids, blank]), torch.cat([mask, mask]), torch.cat([codes, codes]),
                              cfg_weight=None)  # [2b, N, V_img]: rows as given, then their unconditional twins
    cond, blank_logits = both[: len(rows)], both[len(rows) :]
    loss = F.cross_entropy(cond.flatten(0, 1), codes.flatten(), label_smoothing=label_smoothing)
    keep = ~uncond
    if keep.any():
        guided = cfg_logits(cond[keep], blank_logits[keep], guidance)  # [k, N, V_img]
        loss = loss + guided_weight * F.cross_entropy(guided.flatten(0, 1), codes[keep].flatten())
    return loss


def mm2t_loss(policy: JanusPolicy, pool: MM2TPool, rows: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the completion tokens (EOS included) of the selected rows."""
    pad = policy.tokens.pad_id
    ids, mask = left_pad([pool.prompt_ids[i] for i in rows.tolist()], pad)  # [b, P]
    completion, completion_mask = right_pad([pool.completion_ids[i] for i in rows.tolist()], pad)  # [b, C]
    logits = text_token_logits(policy, ids, mask, pool.pixel_values[rows], completion, completion_mask)
    losses = F.cross_entropy(logits.float().flatten(0, 1), completion.flatten(), reduction="none")
    weights = completion_mask.flatten().float()
    return (losses * weights).sum() / weights.sum()


# ---- training ---------------------------------------------------------------------------------------


def sft_parameters(policy: JanusPolicy) -> list[torch.nn.Parameter]:
    """Everything but the VQ model trains; the VQ model is frozen (its codes are the targets)."""
    model = policy.model
    model.requires_grad_(True)
    model.model.vqmodel.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def sft_optimizer(params: Iterable[torch.nn.Parameter], config: SFTConfig) -> torch.optim.Optimizer:
    """AdamW at config.lr, betas (0.9, 0.95), config.weight_decay on matrices only."""
    params = list(params)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.95),
    )


def train_sft(policy: JanusPolicy, t2i: T2IPool, mm2t: MM2TPool, config: SFTConfig,
              callback: Callable[[int, JanusPolicy], None] | None = None) -> dict:
    """Run the SFT loop in place (module docstring); returns loss summaries and timing.

    callback(step, policy), if given, runs after every optimizer step (model in train mode; a callback
    that evaluates should switch to eval mode and back, and must not touch the global RNG's use here).
    """
    generator = torch.Generator().manual_seed(config.seed)
    params = sft_parameters(policy)
    optimizer = sft_optimizer(params, config)
    policy.model.train()
    policy.model.model.vqmodel.eval()
    t2i_hist: list[float] = []
    mm2t_hist: list[float] = []
    start = time.perf_counter()
    for step in tqdm(range(config.steps), desc="SFT", unit="step", mininterval=5):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * warmup_cosine_factor(step, config.warmup_steps, config.steps)
        # Draw both batches every step (even past a task's budget) so the random stream, and so each
        # task's data, does not depend on the other task's budget.
        t2i_rows = torch.randint(0, len(t2i.captions), (config.t2i_batch_size,), generator=generator)
        uncond = torch.rand(config.t2i_batch_size, generator=generator) < config.uncond_fraction
        mm2t_rows = torch.randint(0, len(mm2t.questions), (config.mm2t_batch_size,), generator=generator)
        loss = torch.zeros(())
        if step < config.t2i_steps:
            loss_t2i = t2i_loss(policy, t2i, t2i_rows, uncond, config.t2i_label_smoothing,
                                config.t2i_guided_weight, config.guidance)
            loss = loss + loss_t2i
            t2i_hist.append(loss_t2i.item())
        if step < config.mm2t_steps:
            loss_mm2t = mm2t_loss(policy, mm2t, mm2t_rows)
            loss = loss + loss_mm2t
            mm2t_hist.append(loss_mm2t.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if callback is not None:
            callback(step + 1, policy)
        if (step + 1) % 50 == 0:
            logger.info("SFT step %d: t2i loss %.3f, mm2t loss %.3f", step + 1,
                        np.mean(t2i_hist[-50:]) if t2i_hist else float("nan"),
                        np.mean(mm2t_hist[-50:]) if mm2t_hist else float("nan"))
    policy.model.eval()
    policy.model.requires_grad_(False)

    def tail(hist: list[float]) -> float | None:
        return round(float(np.mean(hist[-20:])), 4) if hist else None

    return {
        "steps": config.steps,
        "t2i_steps": config.t2i_steps,
        "mm2t_steps": config.mm2t_steps,
        "final_t2i_loss": tail(t2i_hist),
        "final_mm2t_loss": tail(mm2t_hist),
        "on_format_share_of_targets": round(float(np.mean(mm2t.on_format)), 4),
        "seconds": round(time.perf_counter() - start, 1),
    }
