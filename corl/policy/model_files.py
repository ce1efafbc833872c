"""Checks of a local checkpoint folder before transformers reads it: the weights are there and whole, the
tokenizer is there, and the model fits the memory of the device it is loaded to.

Each check names the file and the fix in one line, where transformers would raise from deep inside
(`SafetensorError`, a message about sentencepiece, or a process killed for memory).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
HEADROOM = 0.95  # share of the available memory the weights may take; activations need the rest


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint (one file, or the shards its index names)."""
    single = folder / SAFETENSORS
    if single.is_file():
        return [single]
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, OSError) as err:
            raise ValueError(f"{index} is damaged ({err}); download or save the model again") from None
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks weight shards {missing} named by {index.name}")
        return [folder / name for name in names]
    raise FileNotFoundError(f"{folder} has a config.json but no weights ({SAFETENSORS}); "
                            "copy the whole checkpoint folder, or save it again")


def _stored_numbers(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return sum(int(torch.Size(handle.get_slice(name).get_shape()).numel()) for name in handle.keys())


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a complete safetensors file, or None. Reads the header only: safetensors checks
    its data offsets against the file's size, so a file cut short is found without reading the tensors."""
    try:
        _stored_numbers(path)
    except Exception as err:  # noqa: BLE001 - SafetensorError (truncated, bad header) or OSError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"not a complete safetensors file, truncated or overwritten: {first}"
    return None


def count_parameters(path: Path) -> int:
    """Numbers stored in one safetensors file (header only); ValueError naming a damaged file."""
    if problem := safetensors_problem(path):
        raise ValueError(f"{path} is {problem}; download or save the model again")
    return _stored_numbers(path)


def check_tokenizer(folder: Path) -> None:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"{folder} has no tokenizer ({' or '.join(TOKENIZER_FILES)}); copy the whole "
                                "checkpoint folder, or save it with its processor")


def available_memory(device: torch.device) -> int | None:
    """Bytes this process may still allocate on `device` (CPU: MemAvailable of /proc/meminfo shared by
    the processes of this machine); None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
                    return int(line.split()[1]) * 1024 // max(local, 1)
    except OSError:
        pass
    return None


def check_local_checkpoint(folder: Path, dtype: torch.dtype, device: torch.device) -> int:
    """Weights present and whole, tokenizer present, and the weights in `dtype` within the device's
    available memory; returns the number of parameters."""
    params = sum(count_parameters(path) for path in weight_files(folder))
    check_tokenizer(folder)
    needed = params * torch.tensor([], dtype=dtype).element_size()
    available = available_memory(device)
    if available is not None and needed > HEADROOM * available:
        gib = 2**30
        raise ValueError(f"{folder} holds {params / 1e9:.2f}B parameters: {needed / gib:.1f} GiB in {dtype} "
                         f"but {device} has {available / gib:.1f} GiB available; free memory, load in bf16 "
                         "(--dtype bf16 / model.dtype=bf16), or use a larger device")
    return params
