"""Loading a policy from the hub or a local `save_pretrained` directory; saving one.

Only transformers' own Janus classes are used (no trust_remote_code). The processor is assembled from
the checkpoint's tokenizer and `JanusImageProcessorPil` (torchvision is not a dependency), and its
default-system-prompt injection is turned off: corl's prompt formatting decides (see prompts.py).

dtype: "fp32", "bf16", "fp16", a torch.dtype, or "auto" = bf16 on a CUDA device that supports it,
else fp32 (CPU bf16 is slow and imprecise).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    JanusConfig,
    JanusForConditionalGeneration,
    JanusImageProcessorPil,
    JanusProcessor,
)

from corl.policy.architecture import PUBLISHED_SIZES, janus_config, janus_generation_config
from corl.policy.model_files import check_local_checkpoint
from corl.policy.policy import JanusPolicy
from corl.policy.prompts import PromptStyle

logger = logging.getLogger(__name__)

SHAPES_BASE_ENV = "CORL_SHAPES_BASE"
_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


SHIPPED_SHAPES_BASE = Path(__file__).resolve().parent.parent / "assets" / "shapes-base"


def default_model_path() -> Path:
    """The Shapes base checkpoint: $CORL_SHAPES_BASE if set, else the one shipped in the package
    (corl/assets/shapes-base) if present, else ~/.cache/corl/shapes-base.

    Raises FileNotFoundError (with the command that builds it) when no checkpoint is there.
    """
    env = os.environ.get(SHAPES_BASE_ENV)
    if env:
        path = Path(env).expanduser()
    elif (SHIPPED_SHAPES_BASE / "config.json").is_file():
        path = SHIPPED_SHAPES_BASE
    else:
        path = Path.home() / ".cache" / "corl" / "shapes-base"
    if not (path / "config.json").is_file():
        source = f"${SHAPES_BASE_ENV}" if env else "the default location"
        raise FileNotFoundError(
            f"no Shapes base model at {path} ({source}); build it with `corl shapes make-base`, "
            f"or pass --model with a checkpoint directory or hub id"
        )
    return path


SHAPES_BASE_ALIAS = "shapes-base"  # names the Shapes base model wherever a checkpoint is asked for


def resolve_model_path(name_or_path: str | Path) -> str:
    """'shapes-base' (unless a directory of that name is here) -> the Shapes base checkpoint directory
    (`default_model_path()`); anything else unchanged."""
    if str(name_or_path) == SHAPES_BASE_ALIAS and not Path(SHAPES_BASE_ALIAS).exists():
        return str(default_model_path())
    return str(name_or_path)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None: cuda when there is one, else cpu. A device this machine lacks is a ValueError."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this machine has no usable CUDA GPU; use cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return resolved


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def load_processor(path_or_id: str | Path, **hub_kwargs) -> JanusProcessor:
    """A JanusProcessor from a checkpoint, with the PIL image processor."""
    source = str(path_or_id)
    tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left", **hub_kwargs)
    image_processor = JanusImageProcessorPil.from_pretrained(source, **hub_kwargs)
    reference = JanusProcessor.from_pretrained(
        source, image_processor=image_processor, tokenizer=tokenizer, **hub_kwargs
    )
    if reference.use_default_system_prompt:
        logger.info("processor's default system prompt turned off (corl formats prompts itself)")
        reference.use_default_system_prompt = False
    return reference


def load_model_config(path_or_id: str | Path | None = None, **hub_kwargs) -> JanusConfig:
    """The `JanusConfig` of a checkpoint without its weights: a local directory's config.json, a hub id's
    config.json in the Hugging Face cache, the published sizes of a known Janus-Pro hub id (no download),
    else the hub's config.json. None / 'shapes-base': the Shapes base model."""
    from huggingface_hub import try_to_load_from_cache

    source = checked_source(path_or_id)  # a local folder is checked there (config.json, model_type)
    if not Path(source).exists():  # a hub id
        if isinstance(cached := try_to_load_from_cache(source, "config.json"), str):
            return JanusConfig.from_pretrained(str(Path(cached).parent))
        if source in PUBLISHED_SIZES:
            from corl.policy.tokenizer import build_tokenizer

            # only the sizes matter here; the special token ids come from a stand-in tokenizer
            return janus_config(PUBLISHED_SIZES[source], build_tokenizer(["a"]))
    return JanusConfig.from_pretrained(source, **hub_kwargs)


def checked_source(path_or_id: str | Path | None) -> str:
    """The checkpoint to load: a local folder holding a Janus config.json, or a hub id. A path that does not
    exist, a folder without config.json and a checkpoint of another architecture are named as such here,
    before transformers would build a default-size model or read a path as a malformed hub id."""
    import json

    source = resolve_model_path(path_or_id) if path_or_id is not None else str(default_model_path())
    local = Path(source).expanduser()
    if local.exists():
        config = local / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"{local} is not a saved model directory (no config.json)")
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (ValueError, OSError) as err:
            raise ValueError(f"{config}: not a readable model config ({err})") from None
        if model_type != "janus":
            raise ValueError(f"{local} holds a {model_type!r} checkpoint; corl trains Janus models "
                             f"(model_type 'janus', e.g. deepseek-community/Janus-Pro-1B)")
        return str(local)
    if str(source).startswith(("/", "./", "../", "~")) or str(source).count("/") > 1:
        raise FileNotFoundError(f"model path {source} does not exist")
    return str(source)


def load_policy(
    path_or_id: str | Path | None = None,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = None,
    style: PromptStyle | None = None,
    attn_implementation: str | None = None,
    announce: bool = True,
    **hub_kwargs,
) -> JanusPolicy:
    """Load model + processor (hub id such as 'deepseek-community/Janus-Pro-1B', or a local directory).

    path_or_id None or 'shapes-base': the Shapes base model (`default_model_path()`). The model is returned
    in eval mode. hub_kwargs go to from_pretrained (e.g. revision, local_files_only). announce: log the
    "loaded ..." line at INFO (False: DEBUG, for a caller that says what it loaded, e.g. a reference copy).
    """
    source = checked_source(path_or_id)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if Path(source).is_dir():
        check_local_checkpoint(Path(source), torch_dtype, torch_device)
    kwargs = dict(hub_kwargs)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = JanusForConditionalGeneration.from_pretrained(source, dtype=torch_dtype, **kwargs)
        processor = load_processor(source, **hub_kwargs)
    except OSError as err:
        if Path(source).is_dir():
            raise
        # transformers' message for an unknown id or no network runs over several lines
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load model {source!r} from the Hugging Face hub ({first}); check the id and "
                         "the network, or fetch it first with `corl prefetch`") from None
    model.to(torch_device).eval()
    policy = JanusPolicy(model, processor, style=style)
    logger.log(logging.INFO if announce else logging.DEBUG, "loaded %s from %s", policy, source)
    return policy


def save_policy(policy: JanusPolicy, directory: str | Path) -> Path:
    """save_pretrained of model (with the generation config transformers' Janus generate reads) and processor."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if policy.model.generation_config.generation_kwargs.get("boi_token_id") is None:
        policy.model.generation_config = janus_generation_config(policy.processor.tokenizer)
    policy.model.save_pretrained(directory)
    policy.processor.save_pretrained(directory)
    return directory
