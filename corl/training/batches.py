"""The records that carry one optimizer step's data through the trainer (a task's own rollouts travel in
`corl.tasks.TaskBatch`).

    rows --rollout--> TaskBatch (per task) --rewards--> .rewards --advantages--> .advantages
         --no-grad log-probs--> .old_logps / .ref_logps --loss--> gradients

Shapes: B = prompts (dataset rows) per micro-batch, G = generations per prompt, R = B * G rows,
prompt-major (row r belongs to prompt r // G), N = image tokens per image, C = text completion length
(longest answer of the micro-batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corl.tasks import TaskBatch


@dataclass
class MicroBatch:
    """B dataset rows of one rank and their rollouts for the stage's tasks."""

    indices: list[int]  # B row indices into the training dataset
    rows: dict[str, list[Any]]  # B values per dataset column (images as RGB PIL)
    tasks: dict[str, TaskBatch] = field(default_factory=dict)  # "t2i" / "mm2t" -> its rollouts
    advantage_stats: dict[str, float] = field(default_factory=dict)  # from corl.algos, for the metrics

    @property
    def num_rows(self) -> int:
        """R = B x G: every task of the micro-batch has one completion per row."""
        return next(iter(self.tasks.values())).num_rows


@dataclass
class StepBatch:
    """Everything one rank generated for one data step: `gradient_accumulation_steps` micro-batches.

    With grpo.num_iterations = k the same StepBatch feeds k optimizer steps (TRL's reuse of one
    generation batch), its old_logps fixed at rollout time.
    """

    data_step: int  # how many rollout batches came before this one (the sampler position)
    epoch: int  # sampler epoch of this data step
    micro_batches: list[MicroBatch]
    num_tokens: dict[str, float] = field(default_factory=dict)  # valid completion tokens per task, summed
    # over the micro-batches and every rank: dapo's num_items_in_batch

    def task_batches(self, task: str) -> list[TaskBatch]:
        return [mb.tasks[task] for mb in self.micro_batches if task in mb.tasks]
