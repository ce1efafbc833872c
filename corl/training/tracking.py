"""Observability of a run: per-stage timers, metrics reduced across ranks, the JSONL metrics file (plus
the trackers of train.report_to, through accelerate: corl.training.trackers), and the reward summary
written at the end.

`OUT/metrics.jsonl` layout: the first line is `{"header": {...}}` (run settings that change how numbers
read: stage, image log-prob mode, loss type, batch sizes, ...); then one line per logged step with a
"step" key; `{"event": ...}` lines mark resumes. NaN is written as null (strict JSON). `read_metrics`
returns (header, step rows); a torn last line (a run killed, or a full disk, mid-write) is dropped with a
warning, any other line that is not JSON is an error naming the file and line. A write that fails for
lack of space stops the run with corl.errors.DiskFull naming the file.

Metric names follow TRL where one exists: rewards/{task}/{name}/mean|std, reward/{task}/mean|std,
frac_reward_zero_std, kl, clip_ratio/..., entropy/{task}, grad_norm, learning_rate, loss/{task},
completions/mm2t/mean_length|clipped_ratio; plus reward/{task}/group_std (mean within-group std, TRL's
reward_std), advantages/{task}/abs_mean, reward_masked/{task} (rows whose reward was missing: zero
advantage) and time/{stage} in seconds. `rollout_metrics` is the one place that computes reward
statistics over ranks; the group statistics come from `corl.algos` (within each rank's micro-batch).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from corl.tasks import MM2T, T2I, Task
from corl.training.batches import StepBatch
from corl.training import trackers
from corl.training.checkpoint import write_errors_reported

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


# ---------------------------------------------------------------------------------------- timing


class StageTimer:
    """Wall-clock seconds per named stage, summed until `pop()` (verl-style `time/{stage}` metrics).

    CUDA work is asynchronous, so the timer synchronizes the device at each boundary when asked;
    otherwise a stage would be billed for the previous one's kernels.
    """

    def __init__(self, sync_cuda: bool = False) -> None:
        self.sync_cuda = sync_cuda
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.sync_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync_cuda:
                torch.cuda.synchronize()
            self.seconds[name] += time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        out = dict(self.seconds)
        self.seconds.clear()
        return out


# ------------------------------------------------------------------------------ cross-rank reductions


def nan_stats(values: torch.Tensor) -> tuple[float, float]:
    """(mean, unbiased std) over the non-NaN entries of a 1-D tensor; (nan, 0) when none."""
    valid = values[~torch.isnan(values)].double()
    if valid.numel() == 0:
        return math.nan, 0.0
    std = float(valid.std()) if valid.numel() > 1 else 0.0
    return float(valid.mean()), std


def gather_rows(accelerator: Any, values: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's [n] float tensor (same n on every rank) -> [world * n] on CPU."""
    values = values.float().to(accelerator.device)
    if accelerator.num_processes == 1:
        return values.cpu()
    return accelerator.gather(values).cpu()


def mean_across_ranks(accelerator: Any, metrics: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks. Every rank must hold the same keys (the config decides them)."""
    if accelerator.num_processes == 1 or not metrics:
        return dict(metrics)
    keys = sorted(metrics)
    local = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=accelerator.device)
    reduced = accelerator.reduce(local, reduction="mean").cpu().tolist()
    return dict(zip(keys, reduced))


def sum_across_ranks(accelerator: Any, value: float) -> float:
    if accelerator.num_processes == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(t, reduction="sum").item())


# ---------------------------------------------------------------------------------- rollout metrics


def rollout_metrics(acc: Any, tasks: dict[str, Task], batch: StepBatch, cfg: Any) -> dict[str, float]:
    """Reward, advantage and completion statistics of a rollout batch over every rank (collective; acc is
    the run's accelerate.Accelerator)."""
    out: dict[str, float] = {}
    for task, task_obj in tasks.items():
        batches = batch.task_batches(task)
        totals = gather_rows(acc, torch.cat([b.rewards for b in batches]))  # [world * rows], NaN = masked
        out[f"reward/{task}/mean"], out[f"reward/{task}/std"] = nan_stats(totals)
        out[f"reward_masked/{task}"] = float(torch.isnan(totals).sum())
        first = batches[0].reward_batch
        for name in list(first.values) + list(first.components):
            source = "values" if name in first.values else "components"
            values = [v for b in batches for v in getattr(b.reward_batch, source)[name]]
            gathered = gather_rows(acc, torch.tensor([math.nan if v is None else v for v in values]))
            out[f"rewards/{task}/{name}/mean"], out[f"rewards/{task}/{name}/std"] = nan_stats(gathered)
            failed = sum(b.reward_batch.num_failed.get(name, 0) for b in batches)
            out[f"rewards/{task}/{name}/failed"] = sum_across_ranks(acc, failed)
        advantages = gather_rows(acc, torch.cat([b.advantages.cpu() for b in batches]))
        out[f"advantages/{task}/abs_mean"] = float(advantages.abs().mean())
        cut = float(sum(b.rollout.prompts_cut for b in batches))
        out[f"prompts/{task}/cut"] = sum_across_ranks(acc, cut)
        per_row = [task_obj.completion_rows(b) for b in batches]
        for name in per_row[0]:
            out[f"completions/{task}/{name}"] = float(gather_rows(acc, torch.cat([rows[name] for rows in per_row])).mean())
    if cfg.stage == "unified" and cfg.grpo.unified_mode == "joint_reward":
        joint = torch.cat([b.rewards for b in batch.task_batches(T2I)]) + cfg.grpo.unified_lambda * torch.cat(
            [b.rewards for b in batch.task_batches(MM2T)])
        out["reward/joint/mean"], out["reward/joint/std"] = nan_stats(gather_rows(acc, joint))
    # Group statistics of corl.algos, averaged over micro-batches and ranks.
    num_micro = len(batch.micro_batches)
    groups = {"frac_reward_zero_std": 0.0}
    groups.update({f"frac_reward_zero_std/{t}": 0.0 for t in tasks})
    groups.update({f"reward/{t}/group_std": 0.0 for t in tasks})
    for mb in batch.micro_batches:
        groups["frac_reward_zero_std"] += mb.advantage_stats["frac_reward_zero_std"] / num_micro
        for t in tasks:
            groups[f"frac_reward_zero_std/{t}"] += mb.advantage_stats[f"{t}/frac_reward_zero_std"] / num_micro
            groups[f"reward/{t}/group_std"] += mb.advantage_stats[f"{t}/reward_std"] / num_micro
    # Unified stage: what each task's advantage is made of (corl.algos.advantage_attribution), averaged
    # over the micro-batches where it is defined (a micro-batch without any spread has none).
    for key in sorted(k for k in batch.micro_batches[0].advantage_stats if k.startswith("attrib/")):
        values = [mb.advantage_stats[key] for mb in batch.micro_batches if math.isfinite(mb.advantage_stats[key])]
        groups[key] = sum(values) / len(values) if values else math.nan
    out.update(mean_across_ranks(acc, groups))
    if cut := sum(out.get(f"prompts/{t}/cut", 0) for t in tasks):
        logger.warning("%d prompts were longer than rollout.max_prompt_length=%d tokens and lost the start of "
                       "their text (logged as prompts/*/cut)", int(cut), cfg.rollout.max_prompt_length)
    return out


# ---------------------------------------------------------------------------------- metrics file


def _clean(value: Any) -> Any:
    """JSON-safe value: floats that are NaN/inf become None; tensors become numbers."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_jsonl(path: str | Path, *, warn: bool = True) -> list[tuple[str, dict]]:
    """(line, record) of every line of a JSONL file of objects, blank lines skipped.

    The last line may be torn (a run killed or out of disk space while appending it): it is dropped, with a
    warning naming the file when `warn`. A line before it that is not a JSON object means the file was
    damaged otherwise: ValueError naming the file and the line.
    """
    path = Path(path)
    lines = [(n, line) for n, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").splitlines(), 1)
             if line.strip()]
    records: list[tuple[str, dict]] = []
    for i, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except ValueError as err:  # json.JSONDecodeError is a ValueError
            if i == len(lines) - 1:
                if warn:
                    logger.warning("%s: dropping its last line %d, cut off mid-write (a run killed or out of disk "
                                   "space): %.60r", path, number, line)
                break
            raise ValueError(f"{path}: line {number} is not a JSON object ({err}): the file is damaged; delete or "
                             f"repair that line (every line is one JSON object), then run again") from None
        records.append((line, record))
    return records


def read_metrics(path: str | Path, *, warn: bool = True) -> tuple[dict, list[dict]]:
    """(header, step rows) of a metrics.jsonl file (a torn last line is dropped: see `read_jsonl`)."""
    header: dict = {}
    rows: list[dict] = []
    for _, record in read_jsonl(path, warn=warn):
        if "header" in record:
            header = record["header"]
        elif "step" in record and "event" not in record:
            rows.append(record)
    return header, rows


class MetricsLogger:
    """Writes metric rows to OUT/metrics.jsonl (main process only) and sends them, and the step's samples,
    to the accelerator's trackers (train.report_to: corl.training.trackers).

    resume_step: keep the rows of an earlier run up to this step (a run killed after logging step k+1 but
    before checkpointing it would otherwise leave a row the resumed run writes again).
    """

    def __init__(
        self,
        out_dir: Path,
        header: dict,
        *,
        is_main: bool,
        accelerator: Any = None,
        resume_step: int | None = None,
        run_config: dict | None = None,
    ) -> None:
        self.path = out_dir / METRICS_FILE
        self.is_main = is_main
        self.history: list[dict] = []
        self.accelerator = accelerator if is_main else None  # only the main process reports
        if not is_main:
            return
        with write_errors_reported(self.path):
            if resume_step is not None and self.path.is_file():
                old_header, rows = read_metrics(self.path)
                self.history = [r for r in rows if r["step"] <= resume_step]
                lines = [{"header": old_header or header}, *self.history,
                         {"event": "resumed", "at_step": resume_step}]
                tmp = self.path.with_suffix(".jsonl.tmp")
                try:
                    tmp.write_text("".join(json.dumps(line) + "\n" for line in lines))
                except BaseException:
                    tmp.unlink(missing_ok=True)  # the old file stays whole
                    raise
                os.replace(tmp, self.path)
            else:
                if self.path.is_file():  # a run killed before its first checkpoint, restarted: keep its rows aside
                    n = 1
                    while (aside := self.path.with_name(f"metrics.restarted-{n}.jsonl")).exists():
                        n += 1
                    os.replace(self.path, aside)
                    logger.warning("%s: restarting a run that had no checkpoint; its metrics moved to %s",
                                   self.path.parent, aside.name)
                self.path.write_text(json.dumps({"header": {k: _clean(v) for k, v in header.items()}}) + "\n")
        if self.accelerator is not None:
            trackers.start_trackers(self.accelerator, out_dir, run_config or {})

    def log(self, row: dict[str, Any]) -> None:
        if not self.is_main:
            return
        row = {k: _clean(v) for k, v in row.items()}
        self.history.append(row)
        with write_errors_reported(self.path), self.path.open("a") as f:  # a full disk: DiskFull
            f.write(json.dumps(row) + "\n")
        if self.accelerator is not None:
            trackers.log_scalars(self.accelerator, row, int(row["step"]))

    def log_samples(self, paths: Sequence[Path], step: int) -> None:
        """The sample files of a step (corl.training.samples.write_samples) to the trackers."""
        if self.accelerator is not None:
            trackers.log_samples(self.accelerator, paths, step)

    def close(self) -> None:
        if self.accelerator is not None:
            trackers.finish_trackers(self.accelerator)


# ------------------------------------------------------------------------------------------ summary


def reward_summary(rows: Sequence[dict], tasks: Sequence[str], fraction: float = 0.1) -> dict[str, dict]:
    """Per task: mean of reward/{task}/mean over the first and the last `fraction` of logged steps
    (at least one step each), and their difference."""
    out: dict[str, dict] = {}
    for task in list(tasks) + (["joint"] if any("reward/joint/mean" in r for r in rows) else []):
        series = [(r["step"], r.get(f"reward/{task}/mean")) for r in rows]
        series = [(s, v) for s, v in series if v is not None]
        if not series:
            out[task] = {"first": None, "last": None, "change": None, "steps": 0}
            continue
        k = max(1, math.ceil(fraction * len(series)))
        first = sum(v for _, v in series[:k]) / k
        last = sum(v for _, v in series[-k:]) / k
        out[task] = {"first": first, "last": last, "change": last - first, "steps": len(series),
                     "window": k}
    return out
