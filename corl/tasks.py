"""The two tasks CoRL trains, as objects: text-to-image (t2i) and image-to-text understanding (mm2t).

The trainer drives both through one interface and never asks which task it holds:

    task.rollout(policy, rows, seed)          dataset rows -> TaskBatch (B prompts x G completions)
    task.reward_inputs(batch)                 -> (prompts, completions) for the task's RewardSet
    task.score_inputs(batch)                  -> the tensors `task.logps` scores (they pass through DDP)
    task.logps(policy, inputs, ...)           -> per-token log-probs [R, T] (and entropies)
    task.max_completion_length                T of the loss's dr_grpo normalizer
    task.completion_rows(batch)               per-row completion statistics for the metrics

Shapes: B = prompts (dataset rows) per micro-batch, G = generations per prompt, R = B * G rows,
prompt-major (row r belongs to prompt r // G), N = image tokens per image, C = text completion length
(longest answer of the micro-batch).

Choices taken:
- Images are never "truncated": an image always has exactly N codes and its completion_mask is all ones
  (checked on every rollout), so image rewards always reach the loss. (Treating "reached the maximum
  length" as truncation would zero every image reward.)
- Image tokens are scored with the CFG-guided distribution they were sampled from (rollout.image_logps =
  cfg) or the conditional branch only (= cond): an explicit choice, written to the metrics header.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from corl.config import CorlConfig
from corl.generation.records import ImageRollout, TextRollout
from corl.generation.rollout import rollout_images, rollout_text
from corl.policy.policy import JanusPolicy
from corl.policy.scoring import image_token_logps, text_token_logps
from corl.rewards import RewardBatch

T2I = "t2i"
MM2T = "mm2t"
TASKS_OF_STAGE: dict[str, tuple[str, ...]] = {
    "unified": (T2I, MM2T),  # one row feeds both tasks: caption -> images, (image, question) -> answers
    "t2i": (T2I,),
    "mc": (MM2T,),
    "oe": (MM2T,),
    "mm2t": (MM2T,),  # understanding only, mc and oe rows mixed (pilot study)
}


@dataclass
class TaskBatch:
    """One task's rollouts of one micro-batch and everything the loss needs about them.

    Fields filled by a later stage of the step start as None, so reading one before it exists fails
    loudly instead of reading a default.
    """

    task: str  # "t2i" or "mm2t"
    rollout: ImageRollout | TextRollout  # the sampled completions with their prompts
    completion_ids: torch.Tensor  # [R, T] long: image codes (T = N) or answer tokens (T = C)
    completion_mask: torch.Tensor  # [R, T] long; images: all ones (never truncated)
    seed: int  # the rollout's sampling seed (a function of run seed, data step, rank, micro-batch, task)
    reward_batch: RewardBatch | None = None  # per-reward values, components and weighted totals
    rewards: torch.Tensor | None = None  # [R] float32 weighted totals, NaN = masked row
    advantages: torch.Tensor | None = None  # [R] float32, exactly 0 on masked rows
    old_logps: torch.Tensor | None = None  # [R, T] float32 at rollout time (num_iterations > 1 only)
    ref_logps: torch.Tensor | None = None  # [R, T] float32 under the reference policy (beta > 0 only)

    @property
    def num_rows(self) -> int:
        return self.completion_ids.shape[0]


class Task:
    """What the trainer needs of a task; built from the run's config by `tasks_of`."""

    name: str
    seed_index: int  # part of each rollout's seed, so the two tasks of a step draw differently
    timer_name: str  # the time/{name} metric of its rollout

    def __init__(self, cfg: CorlConfig) -> None:
        self.cfg = cfg

    def rollout(self, policy: JanusPolicy, rows: dict[str, list], seed: int) -> TaskBatch:
        raise NotImplementedError

    def reward_inputs(self, batch: TaskBatch) -> tuple[Sequence[Any], Sequence[Any]]:
        raise NotImplementedError

    def score_inputs(self, batch: TaskBatch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def logps(self, policy: JanusPolicy, inputs: dict[str, torch.Tensor], *, return_entropy: bool = False):
        """Per-token log-probs [R, T] float32 of the sampled tokens in `inputs` (`score_inputs`); with
        return_entropy also the per-token entropies [R, T] (no grad)."""
        raise NotImplementedError

    def max_completion_length(self, policy: JanusPolicy) -> int:
        raise NotImplementedError

    def completion_rows(self, batch: TaskBatch) -> dict[str, torch.Tensor]:
        """Per-row [R] float statistics of the completions, logged as completions/{task}/{name} means."""
        return {}


class TextToImage(Task):
    """Generation: B captions x G images with classifier-free guidance; completions are the N VQ codes."""

    name, seed_index, timer_name = T2I, 0, "image_rollout"

    @property
    def scored_cfg_weight(self) -> float | None:
        """rollout.image_logps: 'cfg' scores the guided distribution (weight w), 'cond' the conditional."""
        return self.cfg.rollout.cfg_weight if self.cfg.rollout.image_logps == "cfg" else None

    def rollout(self, policy: JanusPolicy, rows: dict[str, list], seed: int) -> TaskBatch:
        r = self.cfg.rollout
        rollout = rollout_images(
            policy, rows["prompt"], group_size=r.num_generations, cfg_weight=r.cfg_weight,
            temperature=r.temperature, top_k=r.top_k or None, seed=seed, max_rows=r.max_rows or None,
            compile_decode=r.compile_decode, decoding=r.decoding, max_prompt_length=r.max_prompt_length,
        )
        if rollout.image_tokens.shape[1] != policy.num_image_tokens:
            raise RuntimeError(f"an image rollout returned {rollout.image_tokens.shape[1]} of "
                               f"{policy.num_image_tokens} codes")
        mask = torch.ones_like(rollout.image_tokens)  # [R, N]: every image is complete by construction
        return TaskBatch(T2I, rollout, rollout.image_tokens, mask, seed)

    def reward_inputs(self, batch: TaskBatch) -> tuple[Sequence[Any], Sequence[Any]]:
        return batch.rollout.captions, batch.rollout.images

    def score_inputs(self, batch: TaskBatch) -> dict[str, torch.Tensor]:
        r = batch.rollout
        return {"prompt_ids": r.prompt_ids, "prompt_mask": r.prompt_mask, "image_tokens": r.image_tokens}

    def logps(self, policy: JanusPolicy, inputs: dict[str, torch.Tensor], *, return_entropy: bool = False):
        return image_token_logps(
            policy, inputs["prompt_ids"], inputs["prompt_mask"], inputs["image_tokens"], self.scored_cfg_weight,
            temperature=self.cfg.rollout.temperature, return_entropy=return_entropy,
            logits_chunk_mb=self.cfg.train.logits_chunk_mb,
        )

    def max_completion_length(self, policy: JanusPolicy) -> int:
        return policy.num_image_tokens


class ImageToText(Task):
    """Understanding: B (real image, question) x G answers; completions end at EOS or the length cap."""

    name, seed_index, timer_name = MM2T, 1, "text_rollout"

    def rollout(self, policy: JanusPolicy, rows: dict[str, list], seed: int) -> TaskBatch:
        r = self.cfg.rollout
        rollout = rollout_text(
            policy, rows["image"], rows["question"], group_size=r.num_generations,
            max_new_tokens=r.max_completion_length, temperature=r.temperature, top_k=r.top_k or None,
            top_p=r.top_p if r.top_p < 1.0 else None, seed=seed, max_rows=r.max_rows or None,
            compile_decode=r.compile_decode, decoding=r.decoding, max_prompt_length=r.max_prompt_length,
        )
        return TaskBatch(MM2T, rollout, rollout.completion_ids, rollout.completion_mask, seed)

    def reward_inputs(self, batch: TaskBatch) -> tuple[Sequence[Any], Sequence[Any]]:
        return batch.rollout.questions, batch.rollout.texts

    def score_inputs(self, batch: TaskBatch) -> dict[str, torch.Tensor]:
        r = batch.rollout
        return {"prompt_ids": r.prompt_ids, "prompt_mask": r.prompt_mask, "pixel_values": r.pixel_values,
                "completion_ids": r.completion_ids, "completion_mask": r.completion_mask}

    def logps(self, policy: JanusPolicy, inputs: dict[str, torch.Tensor], *, return_entropy: bool = False):
        return text_token_logps(
            policy, inputs["prompt_ids"], inputs["prompt_mask"], inputs["pixel_values"], inputs["completion_ids"],
            inputs["completion_mask"], temperature=self.cfg.rollout.temperature, return_entropy=return_entropy,
            logits_chunk_mb=self.cfg.train.logits_chunk_mb, share_prompts=self.cfg.train.share_prompts,
        )

    def max_completion_length(self, policy: JanusPolicy) -> int:
        return self.cfg.rollout.max_completion_length

    def completion_rows(self, batch: TaskBatch) -> dict[str, torch.Tensor]:
        return {"mean_length": batch.completion_mask.sum(dim=1).float().cpu(),
                "clipped_ratio": batch.rollout.is_truncated.float().cpu()}


TASK_CLASSES: dict[str, type[Task]] = {T2I: TextToImage, MM2T: ImageToText}


def tasks_of(cfg: CorlConfig) -> dict[str, Task]:
    """The stage's tasks by name, in the order the trainer runs them (t2i before mm2t)."""
    return {name: TASK_CLASSES[name](cfg) for name in TASKS_OF_STAGE[cfg.stage]}
