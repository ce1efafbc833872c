"""Per-device memory of a training run, planned from the recipe and the model's config (no weights loaded).

    shape = model_shape(load_model_config(name))        # parameter counts from a meta-device model
    plan = plan_memory(cfg, shape, Devices("cuda", 8, 80 * GiB))
    print(plan.table())                                  # `corl plan RECIPE --gpus 8 --gpu-memory 80`

A step has three phases, and the peak is the largest of them:
  rollout   persistent state + (FSDP2: the whole model gathered in the compute dtype) + the larger of the
            image rollout's KV cache, the VQ decoder's feature maps and the text rollout's KV cache
  update    persistent state + gradients + (FSDP2: the units gathered for compute) + the activations of
            one update chunk (train.update_batch_size completions of each task)
  step      persistent state + gradients + the optimizer's temporary (one trained tensor, or all of them
            with torch's multi-tensor AdamW on GPUs)
Persistent state: weights, AdamW's two moments, the reference model (grpo.beta > 0 without LoRA) and the
reward models. Autocast (fp32 weights, bf16 compute) caches a bf16 copy of every trained matrix while a
forward runs; that copy is counted in the rollout and update phases.

Activations per token of one Llama decoder layer (tensors autograd saves, counted with
saved_tensors_hooks on the layer at the 1B and 7B widths, sdpa attention; within 2% there):
  fp32 weights + bf16 autocast: 30 D + 8 I bytes;  pure bf16: 24 D + 8 I;  pure fp32: 36 D + 16 I
(D hidden, I MLP width). With gradient checkpointing each layer keeps only its input (D values in the
residual stream's dtype: the weights') and one layer is recomputed at a time. Prompts are counted at
rollout.max_prompt_length tokens: the plan is for the longest prompts the run admits.
benchmarks/memory.py compares the plan with the peak memory of real unified steps on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from corl.config import TEXT_CYCLE_REWARDS, CorlConfig, resolved_precision, reward_backends
from corl.policy.policy import PARAMETER_GROUPS

GiB = 1 << 30
MiB = 1 << 20
# Of a GPU's memory, what a run may plan to use: the CUDA context, NCCL buffers and allocator
# fragmentation take the rest.
USABLE_FRACTION = 0.9
DECODE_BATCH = 16  # images per VQ decoder batch (corl.generation.rollout.decode_images)
VQ_LIVE_MAPS = 3  # full-resolution feature maps alive at once in the VQ decoder's last block
LOGITS_COPIES = 3  # a scoring chunk's float32 logits, their log-softmax and its gradient
# The 'self' captioner (corl.rewards.captioners): an instruction prompt around the image, and up to 256
# new tokens (corl.generation.rollout.answer's default); rows and their prefill cache counted.
SELF_CAPTION_PROMPT, SELF_CAPTION_TOKENS = 64, 256

# Parameters of the reward models corl loads by hub id (counted from their published checkpoints).
REWARD_MODEL_PARAMS = {
    "Salesforce/blip-image-captioning-large": 470_000_000,
    "Salesforce/blip-image-captioning-base": 247_000_000,
    "roberta-large": 355_000_000,
    "bert-base-uncased": 110_000_000,
    "minilm": 22_700_000,  # all-MiniLM-L6-v2, shipped by the corl[minilm] extra
    "lpips:alex": 2_500_000,
    "lpips:vgg": 14_700_000,
}


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on in a Janus model."""

    groups: dict[str, int]  # PARAMETER_GROUPS name -> parameters
    layer_params: int  # one decoder layer
    layer_linear_params: int  # its matrices (what autocast copies)
    lm_head_params: int
    largest_tensor: dict[str, int]  # group -> elements of its largest parameter
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    image_vocab: int  # VQ codes (the generation head's outputs)
    image_tokens: int
    image_size: int
    vq_channels: int  # feature channels of the VQ decoder at full resolution

    @property
    def total_params(self) -> int:
        return sum(self.groups.values())


def model_shape(config) -> ModelShape:
    """Parameter counts of a `JanusConfig`, from a model built on the meta device (no memory, no weights)."""
    from transformers import JanusForConditionalGeneration

    with torch.device("meta"):
        model = JanusForConditionalGeneration(config)
    groups, largest = {}, {}
    for name, paths in PARAMETER_GROUPS.items():
        params = [p for path in paths for p in model.get_submodule(path).parameters()]
        groups[name] = sum(p.numel() for p in params)
        largest[name] = max((p.numel() for p in params), default=0)
    layer = model.model.language_model.layers[0]
    text, vq = config.text_config, config.vq_config
    return ModelShape(
        groups=groups,
        layer_params=sum(p.numel() for p in layer.parameters()),
        layer_linear_params=sum(m.weight.numel() for m in layer.modules() if isinstance(m, torch.nn.Linear)),
        lm_head_params=model.lm_head.weight.numel(),
        largest_tensor=largest,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        heads=text.num_attention_heads,
        kv_heads=text.num_key_value_heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
        vocab=text.vocab_size,
        image_vocab=vq.num_embeddings,
        image_tokens=config.vision_config.num_image_tokens,
        image_size=config.vision_config.image_size,
        vq_channels=vq.base_channels * vq.channel_multiplier[0],
    )


@dataclass(frozen=True)
class Devices:
    """The devices a run plans for: their type, how many processes share the model, and the memory one
    process may use (None: only the table, no verdict)."""

    type: str  # "cuda" or "cpu"
    count: int = 1
    memory: int | None = None  # bytes per device

    @property
    def budget(self) -> int | None:
        return None if self.memory is None else int(self.memory * USABLE_FRACTION)


@dataclass
class MemoryPlan:
    """Bytes per device by component and phase."""

    devices: Devices
    engine: str  # e.g. "DDP, fp32 weights + bf16 compute, gradient checkpointing"
    components: dict[str, tuple[int, str]]  # name -> (bytes, how it was counted)
    phases: dict[str, int]
    update_rows: int  # completions of each task per update forward (the plan's update chunk)
    largest_update_rows: int | None  # the largest chunk that fits (None: no budget given; 0: none fits)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return max(self.phases.values())

    @property
    def fits(self) -> bool:
        return self.devices.budget is None or self.total <= self.devices.budget

    def table(self) -> str:
        """The plan as a text table (GiB per device)."""
        d = self.devices
        where = f"{d.count} x {d.type}" + (f" of {d.memory / GiB:.0f} GiB" if d.memory else "")
        lines = [f"memory per device: {where}; {self.engine}", ""]
        width = max(len(name) for name in [*self.components, *self.phases]) + 2
        lines += [f"  {name:<{width}}{b / GiB:8.2f} GiB   {how}" for name, (b, how) in self.components.items()]
        lines.append("")
        for phase, total in self.phases.items():
            mark = "  <- peak" if total == self.total else ""
            lines.append(f"  {'peak: ' + phase:<{width}}{total / GiB:8.2f} GiB{mark}")
        if d.budget is not None:
            verdict = "fits" if self.fits else "does NOT fit"
            lines.append(f"  {'usable':<{width}}{d.budget / GiB:8.2f} GiB   "
                         f"({USABLE_FRACTION:.0%} of the device) -> {verdict}")
            if self.largest_update_rows:
                lines.append(f"largest update chunk that fits: train.update_batch_size={self.largest_update_rows} "
                             f"(planned with {self.update_rows})")
            elif self.largest_update_rows == 0:
                lines.append("no update chunk fits, not even one completion per task")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


# -------------------------------------------------------------------------------------------- the math


def layer_activation_bytes(hidden: int, intermediate: int, mode: str) -> int:
    """Bytes autograd keeps per token for one Llama decoder layer (module docstring); mode: mixed, bf16, fp32."""
    coefficients = {"mixed": (30, 8), "bf16": (24, 8), "fp32": (36, 16)}[mode]
    return coefficients[0] * hidden + coefficients[1] * intermediate


def packed_groups(rows: int, group_size: int) -> int:
    """The most GRPO groups an update chunk of `rows` consecutive completions touches. Chunks start at
    multiples of `rows`, so when rows is a multiple or a divisor of G they never cut a group: ceil(rows / G).
    Otherwise a chunk can cut a group at both ends."""
    if rows % group_size == 0 or group_size % rows == 0:
        return -(-rows // group_size)
    return min(rows, -(-(rows - 1) // group_size) + 1)


def reward_models(cfg: CorlConfig, count_local: Callable[[str], int | None]) -> dict[str, int | None]:
    """The reward models a run loads -> their parameters (None: unknown size). count_local(path) counts a
    local checkpoint's parameters."""
    names = [f"lpips:{name}" if kind == "lpips" else name for kind, name in reward_backends(cfg).items()]
    return {name: REWARD_MODEL_PARAMS.get(name) or count_local(name) for name in names}


def _dtypes(cfg: CorlConfig, device_type: str) -> tuple[int, int, str]:
    """(parameter bytes, compute bytes, activation mode) for a device of `device_type` (GPUs are taken to
    support bf16)."""
    param, compute = resolved_precision(cfg, bf16_device=device_type == "cuda")
    mode = "mixed" if (param, compute) == ("fp32", "bf16") else compute
    return (2 if param == "bf16" else 4), (2 if compute == "bf16" else 4), mode


def lora_params(cfg: CorlConfig, shape: ModelShape) -> int:
    """Parameters of the LoRA adapters (rank r on each target projection of every decoder layer)."""
    if cfg.model.lora_r <= 0:
        return 0
    d, kv = shape.hidden, shape.kv_heads * shape.head_dim
    sizes = {"q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d),
             "gate_proj": (d, shape.intermediate), "up_proj": (d, shape.intermediate),
             "down_proj": (shape.intermediate, d)}
    per_layer = sum(cfg.model.lora_r * sum(sizes[name]) for name in cfg.model.lora_target_modules if name in sizes)
    return per_layer * shape.layers


def plan_memory(cfg: CorlConfig, shape: ModelShape, devices: Devices,
                reward_params: dict[str, int | None] | None = None) -> MemoryPlan:
    """The per-device plan of `cfg` on `devices` (see the module docstring)."""
    pb, cb, mode = _dtypes(cfg, devices.type)
    fsdp2 = cfg.train.sharding == "fsdp2"
    shards = devices.count if fsdp2 else 1
    lora = lora_params(cfg, shape)
    trained = lora or sum(shape.groups[g] for g in cfg.model.train_modules)
    total = shape.total_params + lora
    r, t = cfg.rollout, cfg.train
    rows = t.per_device_batch_size * r.num_generations  # completions of each task per micro-batch
    tasks = {"unified": ("t2i", "mm2t"), "t2i": ("t2i",)}.get(cfg.stage, ("mm2t",))
    notes = []

    comp: dict[str, tuple[int, str]] = {}
    shard_note = f" / {shards} (sharded)" if fsdp2 else ""
    comp["weights"] = (total * pb // shards, f"{total / 1e9:.2f}B parameters x {pb} B{shard_note}")
    comp["gradients"] = (trained * pb // shards, f"{trained / 1e9:.3f}B trained parameters x {pb} B{shard_note}")
    comp["optimizer states"] = (2 * trained * pb // shards, f"AdamW's two moments x {pb} B{shard_note}")
    reference = cfg.grpo.beta > 0 and not lora
    comp["reference model"] = (total * pb if reference else 0,
                               "a frozen full copy (grpo.beta > 0)" if reference
                               else "none (grpo.beta = 0 or LoRA: adapters off)")
    reward_params = reward_params or {}
    known = sum(n for n in reward_params.values() if n)
    unknown = [name for name, n in reward_params.items() if not n]
    if unknown:
        notes.append(f"reward model size unknown, not counted: {', '.join(unknown)}")
    comp["reward models"] = (known * 4, ", ".join(reward_params) + " (float32)" if reward_params else "none")
    persistent = sum(comp[k][0] for k in ("weights", "optimizer states", "reference model", "reward models"))

    # autocast caches the casts of weights that require grad only (frozen ones are cast per use)
    linear = lora or shape.layers * shape.layer_linear_params + shape.lm_head_params
    casts = linear * 2 if mode == "mixed" and not fsdp2 else 0
    comp["autocast copies"] = (casts, "bf16 copies of the trained matrices while a forward runs" if casts
                               else "none")
    gathered_rollout = total * cb if fsdp2 else 0
    root = total - shape.layers * shape.layer_params
    gathered_update = (root + 2 * shape.layer_params) * cb if fsdp2 else 0
    if fsdp2:
        comp["gathered weights"] = (gathered_rollout, f"rollouts: the whole model in {cb}-byte compute dtype; "
                                    f"update: {gathered_update / GiB:.2f} GiB (root + 2 layers)")

    kv_pair = shape.layers * 2 * shape.kv_heads * shape.head_dim * cb  # bytes per cached position
    guided = 2 if r.cfg_weight != 1.0 else 1
    kv = {}
    chunk = min(r.max_rows or rows, rows)  # samples per rollout forward (rollout.max_rows)
    prompts = min(t.per_device_batch_size, chunk)  # the distinct prompts' prefill cache
    if "t2i" in tasks:
        kv["t2i"] = (chunk * guided + prompts) * (r.max_prompt_length + shape.image_tokens) * kv_pair
        vq = min(DECODE_BATCH, rows) * VQ_LIVE_MAPS * shape.image_size**2 * shape.vq_channels * cb
        kv["vq decode"] = vq
        if set(cfg.rewards.t2i_reward_funcs) & set(TEXT_CYCLE_REWARDS) and cfg.rewards.captioner == "self":
            # the policy captions its B x G images greedily during rewards (outside autocast: weights' dtype)
            positions = shape.image_tokens + SELF_CAPTION_PROMPT + SELF_CAPTION_TOKENS
            kv["self-caption"] = 2 * rows * positions * kv_pair // cb * pb
    if "mm2t" in tasks:
        positions = r.max_prompt_length + r.max_completion_length
        kv["mm2t"] = (chunk + prompts) * positions * kv_pair
    comp["rollout KV cache"] = (max(kv.values()), ", ".join(f"{k} {v / GiB:.2f}" for k, v in kv.items())
                                + f" GiB (prompts of {r.max_prompt_length} tokens)")

    def activations(n: int) -> tuple[int, str]:
        per_token = layer_activation_bytes(shape.hidden, shape.intermediate, mode)
        residual = pb  # the residual stream runs in the weights' dtype
        total_bytes, largest, parts = 0, 0, []
        for task in tasks:
            if task == "t2i":
                scored = n * (guided if r.image_logps == "cfg" else 1)
                tokens, head_vocab = scored * (r.max_prompt_length + shape.image_tokens), shape.image_vocab
            else:
                tokens, head_vocab = n * (r.max_prompt_length + r.max_completion_length), shape.vocab
            masks = 0
            if task == "mm2t" and t.share_prompts:
                # packed scoring (corl.policy.shared_prompts): one sequence [prompt | k answers] per group, so
                # the LLM runs each group's prompt once, plus one [L, L] mask per group (L = P + k x C), kept
                # as bool and as an attention bias in compute dtype
                groups = packed_groups(n, r.num_generations)
                length = r.max_prompt_length + min(n, r.num_generations) * r.max_completion_length
                tokens = groups * length
                masks = groups * length**2 * (1 + cb)
            kept = tokens * shape.layers * (shape.hidden * residual if cfg.model.gradient_checkpointing else per_token)
            heads = min(t.logits_chunk_mb * MiB, tokens * head_vocab * 4) * LOGITS_COPIES + tokens * shape.hidden * 8
            heads += masks
            parts.append(f"{task} {tokens} tokens" + (f" packed + masks {masks / GiB:.2f} GiB" if masks else ""))
            total_bytes += kept + heads
            largest = max(largest, tokens * per_token)
        if cfg.model.gradient_checkpointing:
            total_bytes += largest  # the layer being recomputed
        return total_bytes, ", ".join(parts)

    update_rows = min(t.update_batch_size or rows, rows)
    act, how = activations(update_rows)
    ckpt = "checkpointed layers" if cfg.model.gradient_checkpointing else "every layer's activations"
    comp["update activations"] = (act, f"{update_rows} completions per task: {how} ({ckpt})")
    grads = comp["gradients"][0]
    if devices.type == "cuda":
        step_temp = trained * pb // shards
        step_how = "multi-tensor AdamW: one temporary per trained tensor"
    else:
        step_temp = max(shape.largest_tensor[g] for g in cfg.model.train_modules) * pb if not lora else 0
        step_how = "single-tensor AdamW: the largest trained tensor"
    comp["optimizer step temporary"] = (step_temp, step_how)

    def update_peak(n: int) -> int:
        return persistent + grads + gathered_update + casts + activations(n)[0]

    phases = {
        "rollout": persistent + gathered_rollout + casts + max(kv.values()),
        "update": update_peak(update_rows),
        "step": persistent + grads + step_temp,
    }
    largest_rows = None
    if devices.budget is not None:
        fitting = [n for n in range(1, rows + 1) if update_peak(n) <= devices.budget]
        largest_rows = max(fitting) if fitting else 0
    engine = "FSDP2" if fsdp2 else ("DDP" if devices.count > 1 else "one process")
    precision = {"mixed": "fp32 weights + bf16 compute", "bf16": "pure bf16", "fp32": "fp32"}[mode]
    extras = [precision] + (["gradient checkpointing"] if cfg.model.gradient_checkpointing else [])
    extras += [f"LoRA r={cfg.model.lora_r}"] if lora else []
    return MemoryPlan(devices, f"{engine}, {', '.join(extras)}", comp, phases, update_rows, largest_rows, notes)


# -------------------------------------------------------------------------------------------- plumbing


def count_checkpoint_params(path: str) -> int | None:
    """Parameters of a local transformers checkpoint (from its config, on the meta device); None when
    `path` is not a local checkpoint."""
    from pathlib import Path

    if not (Path(path) / "config.json").is_file():
        return None
    from transformers import AutoConfig, AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(AutoConfig.from_pretrained(path))
    return sum(p.numel() for p in model.parameters())


def plan_run(cfg: CorlConfig, devices: Devices) -> MemoryPlan:
    """The plan of `cfg` on `devices`, reading the model's config (local, published sizes, or the hub's
    config.json; never the weights)."""
    from corl.policy.loading import load_model_config

    shape = model_shape(load_model_config(cfg.model.name_or_path))
    return plan_memory(cfg, shape, devices, reward_models(cfg, count_checkpoint_params))


def process_devices(device: torch.device, num_processes: int) -> Devices:
    """What this process may use: a GPU's total memory, or on CPU the available memory shared by the
    processes of this machine."""
    from corl.policy.model_files import available_memory

    if device.type == "cuda":
        return Devices("cuda", num_processes, torch.cuda.get_device_properties(device).total_memory)
    return Devices("cpu", num_processes, available_memory(torch.device("cpu")))


class DoesNotFit(ValueError):
    """A run whose planned memory exceeds what its devices have (the message holds the plan's table)."""


def check_fits(cfg: CorlConfig, device: torch.device, num_processes: int) -> MemoryPlan | None:
    """Plan `cfg` for this process's device and raise DoesNotFit when it cannot fit; None (with a log line)
    when the model's config cannot be read here, so the run goes on to load it and fail there if it must."""
    import logging

    logger = logging.getLogger(__name__)
    from corl.policy.loading import load_model_config

    devices = process_devices(device, num_processes)
    try:
        config = load_model_config(cfg.model.name_or_path)
    except (OSError, ValueError) as err:
        logger.warning("memory plan skipped (the model's config cannot be read: %s)", err)
        return None
    plan = plan_memory(cfg, model_shape(config), devices, reward_models(cfg, count_checkpoint_params))
    if not plan.fits:
        hint = (f"; train.update_batch_size={plan.largest_update_rows} would fit the update"
                if plan.largest_update_rows else "")
        raise DoesNotFit(f"this run needs more memory per device than it has{hint} (train.memory_check=false "
                         f"skips this check):\n{plan.table()}")
    logger.info("memory plan: peak %.2f GiB per device of %.2f GiB usable", plan.total / GiB,
                (devices.budget or 0) / GiB)
    return plan
