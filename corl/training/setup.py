"""Building what a training run needs from a `CorlConfig`: the accelerator, the trainable policy (full
weights or LoRA), the reference policy, the optimizer and schedule, the training rows and the rewards.

Choices taken:
- Dropout is switched off in the whole model (as TRL's GRPO does by default): rollout-time and update-time
  log-probs must come from the same function, or the ratio pi_theta / pi_old is not 1 on the first
  iteration. Janus configs have zero dropout anyway; this makes it a guarantee.
- Precision: `model.dtype` is the parameter dtype, `train.precision` the compute dtype. fp32 parameters
  with bf16 compute use autocast (accelerate's mixed_precision="bf16"), keeping fp32 master weights;
  bf16 parameters train in pure bf16 (a warning says that small updates are lost to rounding).
- Reference policy (only when grpo.beta > 0): under LoRA the same model with its adapters switched off
  (no second copy); otherwise a frozen copy loaded from `model.name_or_path`, the policy's starting point
  (also when resuming, where the trained weights come from the checkpoint instead).
- LoRA (peft, `model.lora_r > 0`) goes on the `lora_target_modules` linear layers inside the trained
  modules only (the vision encoder also has q/k/v projections; they stay frozen and adapter-free).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from corl.config import VISUAL_CYCLE_REWARDS, CorlConfig, deep_merge, resolved_precision
from corl.policy import JanusPolicy, load_policy, trainable_parameters
from corl.policy.policy import PARAMETER_GROUPS
from corl.rewards import RewardSet
from corl.tasks import MM2T, T2I, TASKS_OF_STAGE
from corl.training.trackers import tracker_names

logger = logging.getLogger(__name__)



# ------------------------------------------------------------------------------------------ devices


def resolve_dtypes(cfg: CorlConfig, device_type: str) -> tuple[torch.dtype, str]:
    """(parameter dtype, accelerate mixed_precision) from model.dtype and train.precision."""
    on_cuda = device_type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    param, compute = resolved_precision(cfg, on_cuda)
    mixed = "bf16" if (param == "fp32" and compute == "bf16") else "no"
    return (torch.bfloat16 if param == "bf16" else torch.float32), mixed


def build_accelerator(cfg: CorlConfig, out_dir: Path | None = None) -> tuple[Any, torch.dtype]:
    """An `accelerate.Accelerator` for this run (one process, or whatever `accelerate launch` set up), and
    the parameter dtype.

    Its trackers are train.report_to (corl.training.trackers), checked before anything loads; file-based
    ones (TensorBoard) write under out_dir/tensorboard.

    Gradient accumulation is done by the trainer (corl.algos.policy_loss divides by the number of
    micro-batches itself), so the accelerator is built with gradient_accumulation_steps=1.
    find_unused_parameters: a trained parameter can be unused in a stage (the text head in t2i).
    gradient_as_bucket_view: DDP's gradients are views into its all-reduce buckets (one copy, not two).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    device_type = "cpu" if cfg.model.device == "cpu" else ("cuda" if torch.cuda.is_available() else "cpu")
    param_dtype, mixed = resolve_dtypes(cfg, device_type)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # accelerate keeps one process-wide state; a single process may run several stages (the demo)
        # with different precisions, so each run starts from a clean one. Never under a launcher.
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    if launch_asks_for("FSDP"):
        raise ValueError("the launch config asks accelerate for FSDP, but corl shards the model itself: launch "
                         "with recipes/accelerate/ddp.yaml (or ddp-multinode.yaml) and set train.sharding=fsdp2")
    if launch_asks_for("DEEPSPEED"):
        raise ValueError("the launch config asks for DeepSpeed, which corl does not run (accelerate sets it up on "
                         "GPUs only, so it cannot be tested where corl is built): launch with "
                         "recipes/accelerate/ddp.yaml and set train.sharding=fsdp2 to shard the model")
    log_with = tracker_names(cfg.train.report_to)
    project = (ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "tensorboard"))
               if out_dir is not None else None)
    accelerator = Accelerator(
        log_with=log_with or None,
        project_config=project,
        mixed_precision=mixed,
        # Without a GPU every launch config runs on CPU processes (gloo); asking accelerate for GPUs there
        # would leave each process alone in a world of one.
        cpu=device_type == "cpu",
        device_placement=False,  # the policy is loaded onto training_device() already (maybe cuda:N)
        # gradients live in DDP's all-reduce buckets instead of a second copy of them
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True, gradient_as_bucket_view=True)],
    )
    check_process_group(accelerator.num_processes)
    if param_dtype == torch.bfloat16:
        logger.warning(
            "parameters are bf16: AdamW updates smaller than bf16's resolution (~0.4%% of a weight) round "
            "away; model.dtype=fp32 with train.precision=bf16 keeps fp32 master weights"
        )
    return accelerator, param_dtype


def launch_asks_for(engine: str) -> bool:
    """Whether `accelerate launch` was given a config for `engine` ("FSDP" or "DEEPSPEED")."""
    return os.environ.get(f"ACCELERATE_USE_{engine}", "").lower() == "true"


def check_process_group(num_processes: int) -> None:
    """Stop (before anything is written) when the process group this process joined is not the one the
    launcher started (WORLD_SIZE): e.g. a GPU launch config on a machine without GPUs."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if num_processes != launched:
        raise ValueError(
            f"the launcher started {launched} processes (WORLD_SIZE={launched}, RANK="
            f"{os.environ.get('RANK', '?')}) but this one joined a process group of {num_processes}: check the "
            f"accelerate config (distributed_type, num_processes, use_cpu) against the machine"
        )


def training_device(cfg: CorlConfig, accelerator: Any) -> torch.device:
    """accelerator.device, except a single process may pin an explicit model.device (e.g. cuda:1)."""
    if accelerator.num_processes == 1 and cfg.model.device not in ("auto", "cpu", "cuda"):
        return torch.device(cfg.model.device)
    return accelerator.device


# ------------------------------------------------------------------------------------------- policy


@dataclass
class TrainablePolicy:
    """The policy being trained and what the trainer needs to know about its parameters."""

    policy: JanusPolicy  # policy.model is the JanusForConditionalGeneration (with LoRA layers when used)
    peft_model: Any | None  # the peft.PeftModel wrapper under LoRA, else None
    parameters: list[torch.nn.Parameter]  # what the optimizer updates

    @property
    def uses_lora(self) -> bool:
        return self.peft_model is not None


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every dropout probability in `model` to 0; returns how many modules were changed."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p != 0.0:
            module.p = 0.0
            changed += 1
    for sub in (model.config, getattr(model.config, "text_config", None), getattr(model.config, "vision_config", None)):
        for name in ("attention_dropout", "hidden_dropout", "dropout"):
            if sub is not None and getattr(sub, name, 0.0):
                setattr(sub, name, 0.0)
                changed += 1
    return changed


def lora_target_names(model: torch.nn.Module, train_modules: list[str], layer_names: list[str]) -> list[str]:
    """Full names of the linear layers called one of `layer_names` inside the trained module groups."""
    prefixes = [prefix for group in train_modules for prefix in PARAMETER_GROUPS[group]]
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and name.rsplit(".", 1)[-1] in layer_names
        and any(name == p or name.startswith(p + ".") for p in prefixes)
    ]
    if not names:
        raise ValueError(
            f"model.lora_target_modules={layer_names} matches no linear layer inside {train_modules}"
        )
    return names


def load_trainable_policy(
    cfg: CorlConfig, device: torch.device, param_dtype: torch.dtype, weights_from: str | Path | None = None
) -> TrainablePolicy:
    """Load the policy, freeze all but `model.train_modules`, add LoRA adapters when asked.

    weights_from: a checkpoint directory to read full weights from (resume without LoRA); LoRA resumes
    load the base from `model.name_or_path` and the adapters afterwards (corl.training.checkpoint).
    """
    source = cfg.model.name_or_path  # load_policy resolves 'shapes-base'
    if weights_from is not None and cfg.model.lora_r == 0:
        source = str(weights_from)
    policy = load_policy(source, dtype=param_dtype, device=device)
    # "" asks for the question verbatim (PromptStyle's None)
    policy.style = replace(policy.style, answer_format=cfg.rollout.answer_format or None)
    model = policy.model
    changed = disable_dropout(model)
    if changed:
        logger.info("dropout switched off in %d places (rollout and update log-probs must agree)", changed)
    params = trainable_parameters(policy, cfg.model.train_modules)
    peft_model = None
    if cfg.model.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        if cfg.model.lora_dropout:
            logger.warning("model.lora_dropout=%s is ignored: the policy runs without dropout", cfg.model.lora_dropout)
        targets = lora_target_names(model, cfg.model.train_modules, cfg.model.lora_target_modules)
        lora = LoraConfig(r=cfg.model.lora_r, lora_alpha=cfg.model.lora_alpha, lora_dropout=0.0, target_modules=targets)
        peft_model = get_peft_model(model, lora)  # injects adapters into `model` in place, freezes the rest
        params = [p for p in peft_model.parameters() if p.requires_grad]
        logger.info("LoRA r=%d on %d layers: %.3fM trainable parameters", cfg.model.lora_r, len(targets),
                    sum(p.numel() for p in params) / 1e6)
    if cfg.model.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs, LoRA and DDP's unused-parameter search.
        # newer transformers 5.x name it activation checkpointing (the old name warns; removed in v6)
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.eval()  # no dropout either way; train() is set only around the update when checkpointing
    return TrainablePolicy(policy, peft_model, params)


@dataclass
class Reference:
    """The KL reference: a policy plus the context under which it scores (LoRA: adapters off)."""

    policy: JanusPolicy
    context: Callable[[], contextlib.AbstractContextManager]

    @contextlib.contextmanager
    def active(self) -> Iterator[JanusPolicy]:
        with self.context(), torch.no_grad():
            yield self.policy


def build_reference(cfg: CorlConfig, trainable: TrainablePolicy, device: torch.device,
                    param_dtype: torch.dtype) -> Reference | None:
    """None when grpo.beta == 0 (nothing loaded); see the module docstring otherwise."""
    if cfg.grpo.beta == 0.0:
        return None
    if trainable.uses_lora:
        logger.info("reference policy: the trained model with its LoRA adapters switched off")
        return Reference(trainable.policy, trainable.peft_model.disable_adapter)
    ref = load_policy(cfg.model.name_or_path, dtype=param_dtype, device=device, announce=False)
    disable_dropout(ref.model)
    ref.model.requires_grad_(False).eval()
    logger.info("reference policy: a frozen copy of %s", cfg.model.name_or_path)
    return Reference(ref, contextlib.nullcontext)


# ---------------------------------------------------------------------------------------- optimizer


def build_optimizer(cfg: CorlConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if not params:
        raise ValueError("no trainable parameters: check model.train_modules")
    o = cfg.optim
    return torch.optim.AdamW(
        params, lr=o.learning_rate, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_epsilon,
        weight_decay=o.weight_decay
    )


def build_scheduler(cfg: CorlConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """Linear warmup over ceil(warmup_ratio * total_steps) steps, then constant / linear / cosine to 0."""
    from transformers import get_scheduler

    warmup = math.ceil(cfg.optim.warmup_ratio * total_steps)
    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.optim.lr_scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


# ------------------------------------------------------------------------------------------ data


def load_training_data(cfg: CorlConfig, accelerator: Any) -> Any:
    """The training rows (corl.data.LoadedData) of `data.source` for this stage.

    `data.source: shapes` builds the Shapes world once into the corl cache (main process first; the
    others then read the cached copy).
    """
    from corl.data import load_rows

    with accelerator.main_process_first():
        from corl.data.shapes_source import resolve_source

        source = resolve_source(cfg.data)
        needs_image = None
        if cfg.stage == "t2i" and any(n in VISUAL_CYCLE_REWARDS for n in cfg.rewards.t2i_reward_funcs):
            needs_image = True  # the visual cycle half compares with the real image
        question_type = cfg.data.question_type or (cfg.stage if cfg.stage in ("mc", "oe") else None)
        loaded = load_rows(
            source,
            split=cfg.data.split,
            column_map=cfg.data.column_map or None,
            task=cfg.stage,
            question_type=question_type,
            image_root=cfg.data.image_root or None,
            limit=cfg.data.limit or None,
            needs_image=needs_image,
            allow_images_outside=cfg.data.allow_images_outside,
        )
    if len(loaded.dataset) == 0:
        raise ValueError(f"no usable training rows in {cfg.data.source!r}: {loaded.report.summary()}")
    return loaded


# ---------------------------------------------------------------------------------------- rewards


def reward_options(cfg: CorlConfig, names: list[str], device: torch.device) -> dict[str, dict]:
    """Backend options of each reward in `names`, derived from the `rewards` section (+ reward_kwargs)."""
    r = cfg.rewards
    on_cuda = {"device": str(device)} if device.type == "cuda" else {}
    visual: dict[str, Any] = {"visual": r.image_similarity}
    visual_options: dict[str, Any] = {}
    if r.image_similarity == "lpips":
        visual_options = {"net": r.lpips_net, **(on_cuda)}
    if r.image_similarity_size:
        visual_options["size"] = (r.image_similarity_size, r.image_similarity_size)
    if visual_options:
        visual["visual_options"] = visual_options
    text: dict[str, Any] = {"captioner": r.captioner, "text_similarity": r.text_similarity}
    if r.captioner == "blip":
        text["captioner_options"] = {"model": r.captioner_model, "max_new_tokens": r.captioner_max_new_tokens,
                                     **on_cuda}
    if r.text_similarity == "bertscore":
        text["text_similarity_options"] = {"model": r.text_similarity_model, **on_cuda}
        if r.text_similarity_layers:
            text["text_similarity_options"]["num_layers"] = r.text_similarity_layers
    derived: dict[str, dict] = {"cycle": {**visual, **text, "combine": r.cycle_combine}, "cycle_visual": visual,
                                "cycle_text": text, "tim": {"scale": r.tim_scale}}
    if r.oe_partial_credit:
        derived.update({"accuracy": {"partial_credit": True}, "accuracy_oe": {"partial_credit": True}})
    options = {name: dict(derived.get(name, {})) for name in names}
    for name, extra in (r.reward_kwargs or {}).items():
        if name in options:
            options[name] = deep_merge(options[name], dict(extra or {}))
    return {name: opts for name, opts in options.items() if opts}


def check_reward_names(cfg: CorlConfig) -> None:
    """Every reward the stage names is registered (custom rewards register at import, so this runs when
    the run starts, not when the config is built), before any model loads."""
    from corl.rewards import reward_names

    known = set(reward_names())
    listed = {T2I: cfg.rewards.t2i_reward_funcs, MM2T: cfg.rewards.mm2t_reward_funcs}
    for task in TASKS_OF_STAGE[cfg.stage]:
        if not listed[task]:
            raise ValueError(f"stage {cfg.stage} needs rewards.{task}_reward_funcs")
        if unknown := [name for name in listed[task] if name not in known]:
            raise ValueError(f"rewards.{task}_reward_funcs names unknown reward(s) {unknown}; registered: "
                             f"{', '.join(sorted(known))}")
    named = set(cfg.rewards.reward_kwargs or {})
    if unknown := sorted(named - known):  # a typo would otherwise leave a reward on its defaults without a word
        raise ValueError(f"rewards.reward_kwargs names unknown reward(s) {unknown}; registered: "
                         f"{', '.join(sorted(known))}")


def build_rewards(cfg: CorlConfig, policy: JanusPolicy, device: torch.device) -> dict[str, RewardSet]:
    """One RewardSet per task of the stage, every backend built once, here."""
    tasks = TASKS_OF_STAGE[cfg.stage]
    listed = {T2I: cfg.rewards.t2i_reward_funcs, MM2T: cfg.rewards.mm2t_reward_funcs}
    check_reward_names(cfg)
    named = set(cfg.rewards.reward_kwargs or {})
    unused = sorted(named - {n for t in tasks for n in listed[t]})
    if unused:  # one set of overrides may serve every stage of a pipeline
        logger.info("rewards.reward_kwargs for %s: not used in stage %s", ", ".join(unused), cfg.stage)
    sets = {}
    for task in tasks:
        names = list(listed[task])
        weights = getattr(cfg.rewards, f"{task}_reward_weights")
        sets[task] = RewardSet.from_recipe(
            names, weights, reward_options(cfg, names, device), policy=policy, on_failure="mask"
        )
    return sets
