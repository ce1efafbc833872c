"""The CoRL trainer: GRPO on a unified multimodal model (Janus-Pro), one loop for all four stages.

    train(cfg, out_dir) -> TrainResult

One optimizer step, read top to bottom in `train`:
  1. collect_batch  (no grad; once every grpo.num_iterations steps)
     for each of the gradient_accumulation_steps micro-batches of B dataset rows of this rank:
       image rollout   t2i:  B captions x G images, classifier-free guidance, exactly N codes each
       text rollout    mm2t: B (real image, question) x G answers
       rewards         RewardSet per task; a missing (None / NaN) reward masks its row
       advantages      unified stage: corl.algos.unified_advantages (joint_reward | joint_advantage |
                       separate, lambda); refined stages: corl.algos.group_advantages
       log-probs       pi_old at rollout time (num_iterations > 1) and pi_ref (beta > 0), no grad
  2. optimize: per micro-batch one forward of the stage's tasks through the (DDP-wrapped) PolicyLogps module,
     loss = loss_t2i + loss_mm2t (corl.algos.policy_loss, clipped surrogate + beta * k3 KL), backward;
     then gradient clipping, AdamW step, schedule step.
  3. metrics (reduced over ranks) -> OUT/metrics.jsonl, samples every train.sample_steps, checkpoints.

Stages: unified trains both tasks on the same rows (row i: image i of the caption and answer i of the
question, paired by generation index for the joint modes); t2i trains generation only; mc / oe train
understanding only. The tasks themselves (rollout, reward inputs, log-probs) are `corl.tasks` objects;
this loop never branches on which task it holds. Choices taken (the tasks' own are in `corl.tasks`):
- Groups never cross ranks: each rank scores and normalizes its own groups; metrics are gathered.
  scale_rewards="batch" therefore uses the std of the rank's micro-batch.
- num_iterations = k > 1 reuses one rollout batch for k optimizer steps with pi_old fixed at rollout time
  (TRL); checkpoints fall on rollout-batch boundaries (the buffer is not saved).
- Each rank draws different rows (EpochSampler with rank and world size, micro-batches counted as
  extra ranks) and different rollout seeds (a function of seed, data step, rank, micro-batch, task), so
  a resumed run redraws exactly the samples an uninterrupted run would have drawn.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from corl.algos import chunk_weight, group_advantages, policy_loss, unified_advantages
from corl.config import CorlConfig, dump_yaml, to_dict
from corl.data import EpochSampler, collate_rows, strata_of
from corl.errors import RunFailed
from corl.policy.policy import JanusPolicy
from corl.tasks import MM2T, T2I, Task, tasks_of
from corl.training import checkpoint as ckpt
from corl.training import sharding
from corl.training.batches import MicroBatch, StepBatch
from corl.training.assets import check_assets
from corl.training.evaluation import ShapesEvaluator
from corl.training.memory_plan import check_fits
from corl.training.run_lock import LOCK_FILE, RunInUse, RunLock
from corl.training.samples import write_samples
from corl.training.setup import (
    Reference,
    TrainablePolicy,
    build_accelerator,
    build_optimizer,
    build_reference,
    build_rewards,
    build_scheduler,
    check_reward_names,
    load_trainable_policy,
    load_training_data,
    training_device,
)
from corl.training.tracking import (
    METRICS_FILE,
    MetricsLogger,
    StageTimer,
    mean_across_ranks,
    read_jsonl,
    read_metrics,
    reward_summary,
    rollout_metrics,
    sum_across_ranks,
)

logger = logging.getLogger(__name__)

MAX_STEPS_WITHOUT_REWARDS = 3  # consecutive rollout batches in which a task has no usable reward at all


@dataclass
class TrainResult:
    """What a finished (or deliberately stopped) run leaves behind."""

    out_dir: Path
    final_checkpoint: Path | None  # save_pretrained weights + processor: the next stage's model.name_or_path
    steps: int  # optimizer steps done
    summary: dict  # also in OUT/summary.json (empty when stopped early)
    stopped_early: bool = False


# ------------------------------------------------------------------------------------ the forward


class PolicyLogps(torch.nn.Module):
    """Per-token log-probs (and entropies) of the stage's tasks behind one `forward`.

    DDP wraps this module (FSDP2 shards it, corl.training.sharding): gradient synchronization only sees
    passes that go through its forward, and the scoring code calls Janus' sub-modules directly, so the
    wrapper must sit above it. Both tasks of a unified micro-batch go through one forward (one backward per forward).
    """

    def __init__(self, policy: JanusPolicy, tasks: dict[str, Task]) -> None:
        super().__init__()
        self.janus = policy.model
        self._policy = (policy,)  # not a module: kept in a tuple so it is not registered twice
        self._tasks = tasks

    def forward(self, **inputs: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """inputs: task name -> its `score_inputs`. Returns task name -> (logps, entropy), each [R, T]."""
        policy = self._policy[0]
        return {name: self._tasks[name].logps(policy, tensors, return_entropy=True) for name, tensors in inputs.items()}


def row_chunks(rows: int, size: int) -> list[slice]:
    """Slices of `size` rows covering range(rows) (one slice of all when size is 0 or >= rows)."""
    size = rows if size <= 0 else size
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def score_inputs(tasks: dict[str, Task], micro_batch: MicroBatch) -> dict[str, dict[str, torch.Tensor]]:
    """What PolicyLogps.forward takes for a micro-batch: each task's tensors, in the stage's task order."""
    return {name: tasks[name].score_inputs(batch) for name, batch in micro_batch.tasks.items()}


# ----------------------------------------------------------------------------------------- the run


@dataclass
class Run:
    """Everything the loop's stages share, built once by `setup_run`."""

    cfg: CorlConfig
    out_dir: Path
    accelerator: Any
    trainable: TrainablePolicy
    module: Any  # PolicyLogps, wrapped by accelerate (DDP, ...) when distributed
    reference: Reference | None
    optimizer: Any
    scheduler: Any
    dataset: Any  # datasets.Dataset of training rows
    samplers: list  # one EpochSampler per micro-batch index
    rewards: dict  # task -> RewardSet
    tasks: dict[str, Task]  # the stage's tasks by name, in running order
    total_steps: int
    timer: StageTimer
    rollout_log: Any = None  # open file of OUT/rollouts/rank{R}.jsonl when train.log_rollouts
    lock: RunLock | None = None  # the main process's lock on out_dir (corl.training.run_lock)

    @property
    def policy(self) -> JanusPolicy:
        return self.trainable.policy

    @property
    def fsdp2(self) -> bool:
        """corl shards the module itself (train.sharding=fsdp2, corl.training.sharding)."""
        return self.cfg.train.sharding == "fsdp2"

    @property
    def steps_per_epoch(self) -> int:
        return self.samplers[0].steps_per_epoch


def resolve_resume(out_dir: Path, resume: str | Path | bool | None, *, lora: bool = False) -> Path | None:
    """None: fresh run. True / 'auto' / 'latest': the newest checkpoint in out_dir (a fresh run if there is
    none). A path: that checkpoint, or the newest checkpoint inside that output directory.

    The checkpoint found is checked before anything loads (ckpt.check_checkpoint; lora: this run loads
    adapters rather than full weights): a damaged newest one is reported with the earlier checkpoint to
    use instead, never skipped for it silently."""
    if resume is None or resume is False:
        return None
    if resume is True or str(resume) in ("auto", "latest"):
        found = ckpt.newest_checkpoint_dir(out_dir)
        if found is None:
            logger.info("--resume: no checkpoint in %s yet, starting from scratch", out_dir)
            return None
    else:
        path = Path(resume)
        if not path.exists():
            raise FileNotFoundError(f"--resume-from {path}: no such file or directory; give a checkpoint (OUT/checkpoint-N) "
                                    f"or the output folder that holds it")
        if path.is_dir() and ((path / ckpt.STATE_FILE).is_file() or ckpt.checkpoint_step(path) is not None):
            found = path
        else:
            found = ckpt.newest_checkpoint_dir(path) if path.is_dir() else None
            if found is None:
                raise FileNotFoundError(f"--resume-from {path}: not a checkpoint directory (no {ckpt.STATE_FILE}) and "
                                        f"holds no checkpoint-N")
    ckpt.check_checkpoint(found, lora=lora)
    return found


def config_changes(saved: dict, now: dict, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (saved value, new value) for every setting that differs between two config dicts."""
    changes: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(saved) | set(now)):
        old, new = saved.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes.update(config_changes(old, new, f"{prefix}{key}."))
        elif old != new:
            changes[f"{prefix}{key}"] = (old, new)
    return changes


def check_config_change(cfg: CorlConfig, out_dir: Path, resume_dir: Path | None, allow: bool,
                        record: bool = True) -> None:
    """A resume with another config than the run's is refused, unless allowed; an allowed change is
    recorded (when `record`: the main process) in OUT/config_changes.jsonl with the checkpoint it resumes
    from. Every rank checks, so a refusal cannot leave the others waiting."""
    import yaml

    saved_path = out_dir / "config.yaml"
    if resume_dir is None or not saved_path.is_file():
        return
    try:
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        saved = err
    if not isinstance(saved, dict):
        raise ValueError(f"{saved_path} is damaged (not a YAML mapping): restore it, or start afresh with a new "
                         "--out")
    changes = config_changes(saved, to_dict(cfg))
    if not changes:
        return
    listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
    if "stage" in changes and allow:  # never allowed: the checkpoint's tasks and optimizer are another stage's
        raise ValueError(f"the run in {out_dir} is stage {changes['stage'][0]}, this config is stage "
                         f"{changes['stage'][1]}: choose a new --out")
    if not allow:
        raise ValueError(f"--resume with a changed config ({listed}); resume with the run's own config "
                         f"({saved_path}) or pass --allow-config-change to continue with the new one")
    if not record:
        return
    logger.warning("resuming with a changed config: %s", listed)
    entry = {"resumed_from": str(resume_dir), "changes": {k: [old, new] for k, (old, new) in changes.items()}}
    with open(out_dir / "config_changes.jsonl", "a") as handle:
        handle.write(json.dumps(entry, default=str) + "\n")


def setup_run(cfg: CorlConfig, out_dir: Path, resume_dir: Path | None, resume_requested: bool = False,
              allow_config_change: bool = False) -> tuple[Run, ckpt.TrainerState | None]:
    accelerator, param_dtype = build_accelerator(cfg, out_dir)
    created = not out_dir.exists()
    lock = lock_output(accelerator, out_dir)  # a second live run into this folder stops here, naming the first
    try:
        check_config_change(cfg, out_dir, resume_dir, allow_config_change, record=accelerator.is_main_process)
        return _setup_locked(cfg, out_dir, resume_dir, resume_requested, accelerator, param_dtype, lock)
    except BaseException:
        if lock is not None:  # a refused or failed start leaves no trace of itself
            lock.release()
            if created:
                (out_dir / LOCK_FILE).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    out_dir.rmdir()  # only if nothing else was written
        raise


def _setup_locked(cfg: CorlConfig, out_dir: Path, resume_dir: Path | None, resume_requested: bool,
                  accelerator: Any, param_dtype: torch.dtype,
                  lock: RunLock | None) -> tuple[Run, ckpt.TrainerState | None]:
    from accelerate.utils import set_seed

    device = training_device(cfg, accelerator)
    check_assets(cfg)  # every missing download at once, before anything is loaded or written
    check_reward_names(cfg)
    if cfg.train.memory_check:
        check_fits(cfg, device, accelerator.num_processes)
    set_seed(cfg.seed)  # the same on every rank: new parameters (LoRA) start equal everywhere
    # Every rank checks (before anything is written), so a refusal cannot leave the others waiting.
    # A resume request on a run killed before its first checkpoint starts over (the old metrics file is
    # kept aside by MetricsLogger); without one, an existing run is never overwritten.
    if resume_dir is None and not resume_requested and (
            ckpt.list_checkpoints(out_dir) or (out_dir / "metrics.jsonl").exists()):
        raise ValueError(f"{out_dir} already holds a run; pass --resume to continue it or choose a new --out")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_tmp(out_dir)
        dump_yaml(cfg, out_dir / "config.yaml")
    accelerator.wait_for_everyone()

    loaded = load_training_data(cfg, accelerator)  # a bad dataset is named before a long model load
    trainable = load_trainable_policy(cfg, device, param_dtype, weights_from=resume_dir)
    reference = build_reference(cfg, trainable, device, param_dtype)
    accumulation = cfg.optim.gradient_accumulation_steps
    # Micro-batch m of rank r is "rank" r * accumulation + m of a world of world_size * accumulation:
    # every (rank, micro-batch) of a step draws different rows.
    strata = strata_of(loaded.dataset, cfg.data.stratify_by) if cfg.data.stratify_by else None
    samplers = [
        EpochSampler(len(loaded.dataset), cfg.train.per_device_batch_size, seed=cfg.seed,
                     world_size=accelerator.num_processes * accumulation,
                     rank=accelerator.process_index * accumulation + m, strata=strata)
        for m in range(accumulation)
    ]
    k = cfg.grpo.num_iterations
    total_steps = cfg.train.max_steps or max(1, int(cfg.train.num_epochs * samplers[0].steps_per_epoch)) * k
    rewards = build_rewards(cfg, trainable.policy, device)
    tasks = tasks_of(cfg)
    module = PolicyLogps(trainable.policy, tasks)
    fsdp2 = cfg.train.sharding == "fsdp2"
    if fsdp2:
        compute_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else param_dtype
        sharding.shard(module, trainable.policy.model.model.language_model.layers, param_dtype, compute_dtype)
        # fully_shard replaced the parameters by sharded ones: train those
        trainable.parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg, trainable.parameters)
    scheduler = build_scheduler(cfg, optimizer, total_steps)
    if fsdp2:
        optimizer = accelerator.prepare(optimizer)  # the module is sharded already (no DDP wrapper)
    else:
        module, optimizer = accelerator.prepare(module, optimizer)  # the scheduler is stepped by hand, once a step

    state = None
    if resume_dir is not None:
        state = ckpt.load_training_state(resume_dir, accelerator=accelerator, trainable=trainable,
                                         optimizer=optimizer, scheduler=scheduler,
                                         sharded_module=module if fsdp2 else None)
        if state.stage != cfg.stage:
            raise ValueError(f"checkpoint {resume_dir} is from stage {state.stage}, this run is {cfg.stage}")
        if state.total_steps != total_steps:
            logger.warning("the run was planned for %d steps, now %d: the schedule continues from step %d",
                           state.total_steps, total_steps, state.step)
        logger.info("resumed from %s at step %d", resume_dir, state.step)
    run = Run(cfg, out_dir, accelerator, trainable, module, reference, optimizer, scheduler, loaded.dataset,
              samplers, rewards, tasks, total_steps, StageTimer(sync_cuda=device.type == "cuda"), lock=lock)
    if cfg.train.log_rollouts:
        path = out_dir / "rollouts" / f"rank{accelerator.process_index}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if state and path.is_file():  # drop lines a killed run wrote after its last checkpoint (or cut off)
            kept = [line for line, record in read_jsonl(path) if record.get("step", 0) <= state.step]
        path.write_text("".join(line + "\n" for line in kept))
        run.rollout_log = path.open("a")
    return run, state


def check_rewards_exist(run: Run, batch: StepBatch, rewardless: dict[str, int]) -> None:
    """Count, per task, consecutive rollout batches whose every reward is missing (None / NaN) on every rank;
    stop with RunFailed after MAX_STEPS_WITHOUT_REWARDS of them (such steps have zero advantages: nothing
    is learned, while the run would look healthy)."""
    for task in run.tasks:
        usable = sum(int((~torch.isnan(b.rewards)).sum()) for b in batch.task_batches(task))
        rewardless[task] = rewardless[task] + 1 if sum_across_ranks(run.accelerator, usable) == 0 else 0
        if rewardless[task] >= MAX_STEPS_WITHOUT_REWARDS:
            names = ", ".join(name for name, _, _ in run.rewards[task].rewards)
            raise RunFailed(f"no usable {task} reward in {rewardless[task]} rollout batches in a row (rewards: "
                            f"{names}): every one was missing or NaN; check the reward functions and their inputs")


def lock_output(accelerator: Any, out_dir: Path) -> RunLock | None:
    """The main process locks out_dir; every rank raises RunInUse together when another run holds it."""
    lock, refusal = None, [None]
    if accelerator.is_main_process:
        try:
            lock = RunLock.acquire(out_dir)
        except RunInUse as err:
            refusal = [str(err)]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(refusal)
    if refusal[0] is not None:
        raise RunInUse(refusal[0])
    return lock


@contextlib.contextmanager
def full_parameters(run: Run):
    """Rollouts call Janus' sub-modules directly: under FSDP2 the parameters are gathered first."""
    if run.fsdp2:
        with sharding.gathered(run.module):
            yield
    else:
        yield


# ---------------------------------------------------------------------------------- 1. collecting


def rollout_seed(cfg: CorlConfig, data_step: int, rank: int, micro: int, task: Task) -> int:
    """A sampling seed that differs across ranks, micro-batches, tasks and steps, and is reproducible."""
    entropy = [cfg.seed, data_step, rank, micro, task.seed_index]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


def score_rewards(run: Run, micro_batch: MicroBatch) -> None:
    """Fill reward_batch and rewards ([R], NaN = masked) of every task of the micro-batch."""
    group = run.cfg.rollout.num_generations
    # Dataset columns expanded to one value per generated row (row r belongs to prompt r // G).
    columns = {name: [v for v in values for _ in range(group)] for name, values in micro_batch.rows.items()}
    for task, batch in micro_batch.tasks.items():
        prompts, completions = run.tasks[task].reward_inputs(batch)
        batch.reward_batch = run.rewards[task](prompts, completions, **columns)
        batch.rewards = torch.tensor([math.nan if v is None else v for v in batch.reward_batch.total],
                                     dtype=torch.float32)


def assign_advantages(run: Run, micro_batch: MicroBatch) -> None:
    """Group-relative advantages [R] per task; masked rows get exactly 0 (corl.algos)."""
    g = run.cfg.grpo
    group = run.cfg.rollout.num_generations
    device = run.policy.device
    if run.cfg.stage == "unified":
        t2i, mm2t = micro_batch.tasks[T2I], micro_batch.tasks[MM2T]
        adv_t2i, adv_mm2t, stats = unified_advantages(
            t2i.rewards, mm2t.rewards, group, mode=g.unified_mode, lam=g.unified_lambda, scale_rewards=g.scale_rewards,
            task_scale=g.unified_task_scale,
        )
        t2i.advantages, mm2t.advantages = adv_t2i.to(device), adv_mm2t.to(device)
        joint = "joint/" if g.unified_mode == "joint_reward" else None
        stats["frac_reward_zero_std"] = (
            stats[f"{joint}frac_reward_zero_std"] if joint
            else (stats["t2i/frac_reward_zero_std"] + stats["mm2t/frac_reward_zero_std"]) / 2
        )
    else:
        (task, batch), = micro_batch.tasks.items()
        advantages, raw = group_advantages(batch.rewards, group, scale_rewards=g.scale_rewards)
        batch.advantages = advantages.to(device)
        stats = {f"{task}/{k}": v for k, v in raw.items()}
        stats["frac_reward_zero_std"] = raw["frac_reward_zero_std"]
    micro_batch.advantage_stats = stats


def reference_and_old_logps(run: Run, micro_batch: MicroBatch) -> None:
    """pi_old at rollout time (only when num_iterations > 1; else the loss uses the detached current
    log-probs) and pi_ref (only when beta > 0)."""
    for name, batch in micro_batch.tasks.items():
        task = run.tasks[name]
        if run.cfg.grpo.num_iterations > 1:
            batch.old_logps = task.logps(run.policy, task.score_inputs(batch))
        if run.reference is not None:
            with run.reference.active() as ref_policy:
                batch.ref_logps = task.logps(ref_policy, task.score_inputs(batch))


@torch.no_grad()
def collect_batch(run: Run, data_step: int) -> StepBatch:
    """Rollouts, rewards, advantages and no-grad log-probs of every micro-batch of one data step."""
    epoch, step_in_epoch = divmod(data_step, run.steps_per_epoch)
    rank, timer = run.accelerator.process_index, run.timer
    micro_batches = []
    # Rollouts run under the update's autocast (bf16 compute over fp32 weights keeps its KV caches in bf16).
    with full_parameters(run):
        for micro, sampler in enumerate(run.samplers):
            indices = sampler.indices(epoch, step_in_epoch)
            micro_batch = MicroBatch(indices, collate_rows(run.dataset, indices))
            for name, task in run.tasks.items():
                with timer(task.timer_name), run.accelerator.autocast():
                    seed = rollout_seed(run.cfg, data_step, rank, micro, task)
                    micro_batch.tasks[name] = task.rollout(run.policy, micro_batch.rows, seed)
            with timer("rewards"):
                score_rewards(run, micro_batch)
            assign_advantages(run, micro_batch)
            with timer("logps"), run.accelerator.autocast():  # the same precision as the update's forward
                reference_and_old_logps(run, micro_batch)
            micro_batches.append(micro_batch)
    batch = StepBatch(data_step, epoch, micro_batches)
    for task in run.tasks:  # dapo's normalizer: valid completion tokens of the whole step, every rank
        local = sum(float(b.completion_mask.sum()) for b in batch.task_batches(task))
        batch.num_tokens[task] = sum_across_ranks(run.accelerator, local)
    return batch


# ---------------------------------------------------------------------------------- 2. optimizing


def optimize(run: Run, batch: StepBatch) -> dict[str, float]:
    """One optimizer step over the micro-batches of `batch`; returns this rank's update metrics."""
    cfg, accelerator = run.cfg, run.accelerator
    g = cfg.grpo
    max_length = {name: task.max_completion_length(run.policy) for name, task in run.tasks.items()}
    sums: dict[str, float] = defaultdict(float)
    num_micro = len(batch.micro_batches)
    model = run.policy.model
    if cfg.model.gradient_checkpointing:
        model.train()  # transformers only checkpoints in training mode; dropout is off anyway
    for i, micro_batch in enumerate(batch.micro_batches):
        inputs = score_inputs(run.tasks, micro_batch)  # task -> tensors of all R rows
        chunks = row_chunks(micro_batch.num_rows, cfg.train.update_batch_size)
        for j, rows in enumerate(chunks):
            # Gradients are all-reduced once, on the last chunk of the last micro-batch.
            last = i == num_micro - 1 and j == len(chunks) - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(run.module):
                with accelerator.autocast():
                    out = run.module(**{name: {k: v[rows] for k, v in x.items()} for name, x in inputs.items()})
                loss = 0.0
                for task, (logps, entropy) in out.items():
                    b = micro_batch.tasks[task]
                    mask = b.completion_mask[rows]  # [n, T]
                    task_loss, stats = policy_loss(
                        logps, None if b.old_logps is None else b.old_logps[rows], b.advantages[rows], mask,
                        loss_type=g.loss_type, epsilon=g.epsilon, epsilon_high=g.epsilon_high, beta=g.beta,
                        ref_per_token_logps=None if b.ref_logps is None else b.ref_logps[rows],
                        max_completion_length=max_length[task], num_items_in_batch=batch.num_tokens[task],
                        num_processes=accelerator.num_processes, gradient_accumulation_steps=num_micro,
                    )
                    share = 1.0  # this chunk's share of the micro-batch's tokens (the token-mean metrics)
                    if len(chunks) > 1:
                        # num_items_in_batch is always given: dapo's normaliser is global
                        task_loss = task_loss * chunk_weight(g.loss_type, mask, b.completion_mask, True)
                        share = float(mask.sum()) / max(float(b.completion_mask.sum()), 1.0)
                    loss = loss + task_loss
                    # Each micro-batch loss is already divided by the accumulation: their sum is the step loss.
                    sums[f"loss/{task}"] += float(task_loss.detach())
                    if share == 0.0:  # no valid token in this chunk: nothing for the token means
                        continue
                    sums[f"entropy/{task}"] += float(entropy.detach()[mask.bool()].mean()) * share / num_micro
                    for name in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "kl"):
                        if name in stats:
                            sums[f"{name}/{task}"] += float(stats[name]) * share / num_micro
                accelerator.backward(loss)
    model.eval()

    max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm > 0 else float("inf")
    grad_norm = accelerator.clip_grad_norm_(run.trainable.parameters, max_norm)
    if hasattr(grad_norm, "full_tensor"):  # sharded gradients give a DTensor norm
        grad_norm = grad_norm.full_tensor()
    if not math.isfinite(float(grad_norm)):  # an AdamW step on it would make every weight NaN
        run.optimizer.zero_grad(set_to_none=True)
        raise RunFailed(f"the gradient norm is {float(grad_norm)} at data step {batch.data_step}: the weights were "
                        f"not updated and the last checkpoint is intact; lower optim.learning_rate or check the "
                        f"rewards and precision")
    learning_rate = run.scheduler.get_last_lr()[0]  # the rate this update uses
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)

    metrics = dict(sums)
    metrics["loss"] = sum(v for k, v in sums.items() if k.startswith("loss/"))
    for name in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "kl"):
        per_task = [sums[f"{name}/{t}"] for t in run.tasks if f"{name}/{t}" in sums]
        if per_task:
            metrics[name] = sum(per_task) / len(per_task)
    metrics = mean_across_ranks(accelerator, metrics)
    metrics["grad_norm"] = float(grad_norm)
    metrics["learning_rate"] = learning_rate
    return metrics


# ------------------------------------------------------------------------------------- 3. metrics


def log_rollouts(run: Run, batch: StepBatch, step: int) -> None:
    """One line per micro-batch to OUT/rollouts/rank{R}.jsonl (train.log_rollouts)."""
    for micro, mb in enumerate(batch.micro_batches):
        line: dict[str, Any] = {"step": step, "data_step": batch.data_step, "micro_batch": micro, "indices": mb.indices}
        for task, b in mb.tasks.items():
            digest = hashlib.sha256(b.completion_ids.cpu().numpy().tobytes()).hexdigest()[:16]
            line[task] = {"seed": b.seed, "completions_sha256": digest,
                          "rewards": [None if math.isnan(v) else v for v in b.rewards.tolist()]}
            texts = getattr(b.rollout, "texts", None)  # answers are logged; images are not
            if texts is not None:
                line[task]["texts"] = texts
        run.rollout_log.write(json.dumps(line) + "\n")
    run.rollout_log.flush()


def parameter_digest(parameters: list[torch.nn.Parameter]) -> str:
    """sha256 of the trained parameters' bytes: equal on every rank iff DDP kept them in sync."""
    h = hashlib.sha256()
    for p in parameters:
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def run_header(run: Run, resume_dir: Path | None) -> dict[str, Any]:
    cfg, acc = run.cfg, run.accelerator
    return {
        "stage": cfg.stage,
        "tasks": list(run.tasks),
        "image_logps": cfg.rollout.image_logps,
        "image_logps_cfg_weight": run.tasks[T2I].scored_cfg_weight if T2I in run.tasks else None,
        "rollout_cfg_weight": cfg.rollout.cfg_weight,
        "loss_type": cfg.grpo.loss_type,
        "unified_mode": cfg.grpo.unified_mode if cfg.stage == "unified" else None,
        "beta": cfg.grpo.beta,
        "reference": None if run.reference is None else ("adapters_off" if run.trainable.uses_lora else "frozen_copy"),
        "num_generations": cfg.rollout.num_generations,
        "world_size": acc.num_processes,
        "distributed_type": str(acc.distributed_type),
        "per_device_batch_size": cfg.train.per_device_batch_size,
        "gradient_accumulation_steps": cfg.optim.gradient_accumulation_steps,
        "global_batch_prompts": cfg.train.per_device_batch_size * cfg.optim.gradient_accumulation_steps * acc.num_processes,
        "num_iterations": cfg.grpo.num_iterations,
        "total_steps": run.total_steps,
        "model": cfg.model.name_or_path,
        "lora_r": cfg.model.lora_r,
        "mixed_precision": str(acc.mixed_precision),
        "param_dtype": str(run.policy.dtype),
        "resumed_from": str(resume_dir) if resume_dir else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


# ---------------------------------------------------------------------------------------- the loop


def train(cfg: CorlConfig, out_dir: str | Path, resume: str | Path | bool | None = None, *,
          stop_after_step: int | None = None, allow_config_change: bool = False) -> TrainResult:
    """Run the stage `cfg.stage` into `out_dir` and return where its weights are.

    resume: None (fresh; out_dir must not hold a run), True / "auto" (newest checkpoint in out_dir, or
    fresh), or a checkpoint / output directory path. stop_after_step: stop as if killed right after this
    optimizer step's checkpoint is written (tests, time-boxed jobs); the run can be resumed.
    allow_config_change: resume with a config that differs from the run's (recorded); refused otherwise.
    Chaining stages: `cfg2.model.name_or_path = str(result.final_checkpoint)`.
    A damaged checkpoint or metrics file is a ValueError naming it; a full disk stops the run with
    corl.errors.DiskFull naming the file (the checkpoints written before it are intact).
    """
    out_dir = Path(out_dir)
    with ckpt.write_errors_reported(out_dir):  # a full disk anywhere in the run: one line naming the file
        return _train(cfg, out_dir, resume, stop_after_step=stop_after_step, allow_config_change=allow_config_change)


def _train(cfg: CorlConfig, out_dir: Path, resume: str | Path | bool | None, *, stop_after_step: int | None,
           allow_config_change: bool) -> TrainResult:
    resume_dir = resolve_resume(out_dir, resume, lora=cfg.model.lora_r > 0)
    if resume_dir is not None and (out_dir / METRICS_FILE).is_file():
        read_metrics(out_dir / METRICS_FILE, warn=False)  # a damaged file stops here, before the model loads
    run, state = setup_run(cfg, out_dir, resume_dir, resume_requested=resume not in (None, False),
                           allow_config_change=allow_config_change)
    acc, k = run.accelerator, cfg.grpo.num_iterations
    start = state.step if state else 0
    header = run_header(run, resume_dir)
    logger.info("stage %s: tasks %s, %d steps, image tokens scored %s (cfg weight %s), world size %d",
                cfg.stage, "+".join(run.tasks), run.total_steps,
                "with CFG" if cfg.rollout.image_logps == "cfg" else "conditional only",
                header["image_logps_cfg_weight"], acc.num_processes)
    metrics_log: MetricsLogger | None = None
    progress = tqdm(total=run.total_steps, initial=start, desc=f"corl {cfg.stage}", disable=not acc.is_main_process,
                    dynamic_ncols=True)
    try:
        metrics_log = MetricsLogger(out_dir, header, is_main=acc.is_main_process, accelerator=acc,
                                    resume_step=start if state else None, run_config=to_dict(cfg))
        evaluator = ShapesEvaluator(cfg, acc, out_dir)
        batch: StepBatch | None = None
        batch_metrics: dict[str, float] = {}
        rewardless = dict.fromkeys(run.tasks, 0)  # task -> consecutive rollout batches with no usable reward
        last_saved = start if state else -1
        final_checkpoint = resume_dir
        for step in range(start, run.total_steps):
            step_start = time.perf_counter()
            done = step + 1  # optimizer steps done after this one

            # 1. A new rollout batch every num_iterations steps (or right after a mid-batch resume).
            if batch is None or step % k == 0:
                if step % k != 0:
                    logger.warning("resumed inside a rollout batch (step %d, num_iterations %d): regenerating it", step, k)
                batch = collect_batch(run, data_step=step // k)
                batch_metrics = rollout_metrics(acc, run.tasks, batch, cfg)
                check_rewards_exist(run, batch, rewardless)
                if run.rollout_log is not None:
                    log_rollouts(run, batch, done)

            # 2. Update.
            with run.timer("update"):
                update_metrics = optimize(run, batch)

            # 3. Metrics, samples, checkpoints.
            times = {f"time/{name}": seconds for name, seconds in run.timer.pop().items()}
            times["time/step"] = time.perf_counter() - step_start
            row = {"step": done, "epoch": done / k / run.steps_per_epoch, **batch_metrics, **update_metrics,
                   **mean_across_ranks(acc, times)}
            evaluated = evaluator.due(done)
            if evaluated:
                row.update(evaluator(run.policy, done))
            if done % cfg.train.logging_steps == 0 or done == run.total_steps or evaluated:
                metrics_log.log(row)
            progress.update(1)
            progress.set_postfix({f"R_{t}": f"{row[f'reward/{t}/mean']:.3f}" for t in run.tasks}
                                 | ({"kl": f"{row['kl']:.4f}"} if "kl" in row else {}))
            if cfg.train.sample_steps and done % cfg.train.sample_steps == 0 and acc.is_main_process:
                metrics_log.log_samples(write_samples(batch.micro_batches[0], out_dir, done), done)

            at_boundary = done % k == 0
            due = cfg.train.save_steps > 0 and done // cfg.train.save_steps > max(last_saved, 0) // cfg.train.save_steps
            stopping = stop_after_step is not None and done >= stop_after_step
            if (due and at_boundary) or done == run.total_steps or stopping:
                final_checkpoint = save(run, done)
                last_saved = done
            if stopping:
                logger.info("stopped after step %d as asked (stop_after_step)", done)
                return TrainResult(out_dir, final_checkpoint, done, {}, stopped_early=True)
        progress.close()
        if last_saved != run.total_steps:  # resumed at the end: nothing left to run, the checkpoint exists
            final_checkpoint = ckpt.latest_checkpoint(out_dir)
        summary = finish(run, metrics_log, final_checkpoint)
        return TrainResult(out_dir, final_checkpoint, run.total_steps, summary)
    finally:  # every exit (finished, stopped, or an error) closes what the run opened
        progress.close()
        if metrics_log is not None:
            metrics_log.close()
        if run.rollout_log is not None:
            run.rollout_log.close()
        if run.lock is not None:
            run.lock.release()


def save(run: Run, step: int) -> Path:
    epoch, step_in_epoch = divmod(math.ceil(step / run.cfg.grpo.num_iterations), run.steps_per_epoch)
    state = ckpt.TrainerState(
        step=step, data_step=math.ceil(step / run.cfg.grpo.num_iterations), sampler_epoch=epoch,
        sampler_step_in_epoch=step_in_epoch, steps_per_epoch=run.steps_per_epoch, total_steps=run.total_steps,
        seed=run.cfg.seed, stage=run.cfg.stage, world_size=run.accelerator.num_processes,
        gradient_accumulation_steps=run.cfg.optim.gradient_accumulation_steps,
        num_iterations=run.cfg.grpo.num_iterations, lora=run.trainable.uses_lora,
        model_source=run.cfg.model.name_or_path,
    )
    scaling = run.cfg.model.lora_alpha / run.cfg.model.lora_r if run.trainable.uses_lora else None
    return ckpt.save_checkpoint(
        run.out_dir, state, accelerator=run.accelerator, wrapped_module=run.module, trainable=run.trainable,
        optimizer=run.optimizer, scheduler=run.scheduler, keep_last=run.cfg.train.save_total_limit,
        lora_scaling=scaling, fsdp2=run.fsdp2,
    )


def finish(run: Run, metrics_log: MetricsLogger, final_checkpoint: Path | None) -> dict:
    """Check the ranks agree, write OUT/summary.json and print the reward change per task."""
    from accelerate.utils import gather_object

    digests = None
    if not run.fsdp2:  # each rank holds the whole trained parameters: they must be equal
        digests = gather_object([parameter_digest(run.trainable.parameters)])
        if len(set(digests)) > 1:
            logger.error("trained parameters differ across ranks: %s", digests)
    summary = {
        "stage": run.cfg.stage,
        "steps": run.total_steps,
        "final_checkpoint": str(final_checkpoint) if final_checkpoint else None,
        "reward": reward_summary(metrics_log.history, run.tasks),
        "world_size": run.accelerator.num_processes,
        "parameter_sha256_per_rank": digests,
        "ranks_in_sync": None if digests is None else len(set(digests)) == 1,
    }
    if run.accelerator.is_main_process:
        (run.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        for task, s in summary["reward"].items():
            if s["steps"]:
                print(f"reward/{task}: first {s['window']} logged step(s) {s['first']:.4f} -> last {s['window']} "
                      f"{s['last']:.4f} ({s['change']:+.4f})")
        print(f"final checkpoint: {final_checkpoint}")
    return summary
