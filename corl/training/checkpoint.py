"""Checkpoints that resume exactly, written atomically.

Layout of OUT/checkpoint-N (N = optimizer steps done):
    config.json, model.safetensors, generation_config.json   save_pretrained weights (transformers loads
    tokenizer / processor files                               them; under LoRA the adapters are MERGED
                                                              into these weights)
    adapter/                      LoRA only: the peft adapter (adapter_config.json, adapter_model.safetensors),
                                  what a resume loads on top of model.name_or_path
    optimizer.pt, scheduler.pt    AdamW moments and the schedule position (rank 0; DDP keeps them equal)
    optimizer_rank{R}.pt          train.sharding=fsdp2 instead of optimizer.pt: each rank's shard
    rng_state_{rank}.pth          python, numpy, torch (and CUDA) generator states, one file per rank
    trainer_state.json            step, data-sampler position, seed, world size, ... (TrainerState)

Atomic: everything is written into checkpoint-N.tmp, files are fsynced, then the directory is renamed;
a kill leaves either the previous checkpoints or a stale *.tmp that the next run deletes. Only the
newest `keep_last` checkpoints are kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX}(\d+)$")


@dataclass
class TrainerState:
    """What, besides weights and optimizer, a resume needs to continue the same run."""

    step: int  # optimizer steps done
    data_step: int  # rollout batches drawn so far: the sampler's next position
    sampler_epoch: int  # epoch of the next rollout batch
    sampler_step_in_epoch: int  # its step within that epoch
    steps_per_epoch: int  # rollout batches per epoch (depends on rows, batch size, world size, accumulation)
    total_steps: int  # optimizer steps the run was planned for (the schedule depends on it)
    seed: int
    stage: str
    world_size: int
    gradient_accumulation_steps: int
    num_iterations: int
    lora: bool
    model_source: str  # model.name_or_path the run started from

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_file(cls, path: Path) -> TrainerState:
        raw = json.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


# --------------------------------------------------------------------------------------- finding


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in out_dir, oldest first."""
    out_dir = Path(out_dir)
    found = []
    if out_dir.is_dir():
        for path in out_dir.iterdir():
            match = _CHECKPOINT_RE.match(path.name)
            if match and path.is_dir() and (path / STATE_FILE).is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def remove_stale_tmp(out_dir: Path) -> None:
    for path in out_dir.glob(f"{PREFIX}*.tmp"):
        logger.warning("removing %s, left by an interrupted save", path)
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors, ints, floats and tuples only, so that it loads with
    torch.load(weights_only=True): a checkpoint given to --resume cannot run code."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def load_rng_file(path: Path) -> dict[str, Any]:
    """A saved `rng_state`, loaded with weights_only=True (a file that needs more, e.g. a crafted pickle
    or one written by an older corl, is refused, never executed)."""
    try:
        return torch.load(path, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a generator state corl can load safely ({type(err).__name__}); "
                         f"delete it to resume with fresh generators") from None


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------- weights


def merge_lora_state_dict(state_dict: dict[str, torch.Tensor], scaling: float,
                          adapter: str = "default") -> dict[str, torch.Tensor]:
    """A peft-injected model's state dict -> the plain model's, with W' = W + scaling * B @ A.

    Keys `x.base_layer.weight` / `x.lora_A.{adapter}.weight` / `x.lora_B.{adapter}.weight` become `x.weight`;
    nothing of the live model is changed (peft's merge/unmerge would round the weights in place and
    break exact resumes). The product is computed in float32 and cast back to W's dtype.
    """
    merged: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if ".lora_" in key:
            continue
        if ".base_layer." in key:
            prefix, _, leaf = key.partition(".base_layer.")
            if leaf == "weight":
                a = state_dict[f"{prefix}.lora_A.{adapter}.weight"].float()  # [r, in]
                b = state_dict[f"{prefix}.lora_B.{adapter}.weight"].float()  # [out, r]
                tensor = (tensor.float() + scaling * (b @ a)).to(tensor.dtype)
            key = f"{prefix}.{leaf}"
        merged[key] = tensor
    return merged


def _fsync_tree(directory: Path) -> None:
    for root, _, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export_weights(model: Any, processor: Any, state_dict: dict[str, torch.Tensor], directory: Path) -> None:
    """save_pretrained of `model` with the given (full, plain) state dict, plus the processor."""
    from corl.policy.architecture import janus_generation_config

    if model.generation_config.generation_kwargs.get("boi_token_id") is None:
        model.generation_config = janus_generation_config(processor.tokenizer)
    model.save_pretrained(directory, state_dict=state_dict)
    processor.save_pretrained(directory)


# ------------------------------------------------------------------------------------- save / load


def save_checkpoint(
    out_dir: Path,
    state: TrainerState,
    *,
    accelerator: Any,
    wrapped_module: Any,
    trainable: Any,
    optimizer: Any,
    scheduler: Any,
    keep_last: int,
    lora_scaling: float | None,
    fsdp2: bool = False,
) -> Path:
    """Write OUT/checkpoint-{state.step} atomically (every rank calls this). Returns its path.
    fsdp2: the module was sharded by corl (corl.training.sharding): optimizer state one file per rank."""
    final = out_dir / f"{PREFIX}{state.step}"
    tmp = out_dir / f"{PREFIX}{state.step}.tmp"
    is_main = accelerator.is_main_process
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()

    # Full weights: a collective under FSDP2, a plain state_dict otherwise.
    if fsdp2:
        from corl.training import sharding

        full = sharding.full_state_dict(wrapped_module)  # keys of the PolicyLogps module: "janus.*"
        sharding.save_optimizer(wrapped_module, optimizer, tmp, accelerator.process_index)
    else:
        full = accelerator.get_state_dict(wrapped_module)  # keys of the PolicyLogps wrapper: "janus.*"
    if is_main:
        full = {k.removeprefix("janus."): v for k, v in full.items()}
        model = trainable.policy.model
        plain = merge_lora_state_dict(full, lora_scaling) if trainable.uses_lora else full
        export_weights(model, trainable.policy.processor, plain, tmp)
        if trainable.uses_lora:
            trainable.peft_model.save_pretrained(tmp / "adapter")
        if not fsdp2:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / STATE_FILE).write_text(state.to_json())
    torch.save(rng_state(), tmp / f"rng_state_{accelerator.process_index}.pth")
    accelerator.wait_for_everyone()

    if is_main:
        _fsync_tree(tmp)
        if final.exists():  # re-saving a step (e.g. a resumed run's last step): swap, then delete the old
            old = out_dir / f"{PREFIX}{state.step}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(out_dir)
        if keep_last > 0:
            for _, path in list_checkpoints(out_dir)[:-keep_last]:
                shutil.rmtree(path, ignore_errors=True)
        logger.info("saved %s", final)
    accelerator.wait_for_everyone()
    return final


def load_training_state(
    path: Path, *, accelerator: Any, trainable: Any, optimizer: Any, scheduler: Any,
    sharded_module: Any = None,
) -> TrainerState:
    """Restore adapters (LoRA), optimizer, scheduler and this rank's RNG from a checkpoint.

    Full weights are read when the policy is loaded (corl.training.setup.load_trainable_policy).
    """
    state = TrainerState.from_file(path / STATE_FILE)
    if trainable.uses_lora:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter = path / "adapter" / "adapter_model.safetensors"
        if not adapter.is_file():
            raise FileNotFoundError(f"{path} has no LoRA adapter ({adapter}); was it saved by a LoRA run?")
        set_peft_model_state_dict(trainable.peft_model, load_file(str(adapter), device=str(trainable.policy.device)))
    if sharded_module is not None:  # corl's FSDP2 (corl.training.sharding)
        from corl.training import sharding

        sharding.load_optimizer(sharded_module, optimizer, path, accelerator.process_index)
    else:
        # CPU processes of a launch carry devices like cpu:0, which torch.load cannot map to
        location = "cpu" if accelerator.device.type == "cpu" else accelerator.device
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=location, weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng_file = path / f"rng_state_{accelerator.process_index}.pth"
    if state.world_size != accelerator.num_processes:
        logger.warning(
            "checkpoint was written by %d processes, resuming with %d: data order and rollouts differ from "
            "an uninterrupted run", state.world_size, accelerator.num_processes,
        )
    if rng_file.is_file():
        set_rng_state(load_rng_file(rng_file))
    else:
        logger.warning("no RNG state for rank %d in %s; keeping fresh generators", accelerator.process_index, path)
    return state
