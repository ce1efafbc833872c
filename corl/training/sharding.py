"""FSDP2 for the trainer (`train.sharding: fsdp2`): PyTorch's `fully_shard` applied by corl itself.

Why not through accelerate's FSDP plugin: accelerate sets FSDP up only over a GPU backend, so the same
engine could not be run (or tested) on CPU processes. Here the launch stays plain multi-process (the DDP
configs under recipes/accelerate/, any backend: nccl or gloo) and corl shards:

- every Llama decoder layer is a shard unit, and the PolicyLogps module (the rest of Janus: embeddings,
  heads, vision tower, VQ model) the root unit; parameters, gradients and AdamW states live 1/N per rank;
- precision: fp32 master weights with `train.precision: bf16` gather parameters in bf16 for compute
  (MixedPrecisionPolicy(param_dtype=bf16)) and reduce gradients in fp32;
- rollouts (`gathered`) unshard every unit once for the whole decode loop, since decoding calls the
  layers' sub-modules directly, past the units' forward hooks, and reshard after;
- the update's forward and backward gather layer by layer through the units' hooks, and gradients are
  reduce-scattered (averaged over ranks, as DDP averages them);
- checkpoints: full weights gathered to rank 0 (the usual save_pretrained folder), the optimizer state
  one file per rank (`optimizer_rank{R}.pt`); resuming needs the same number of processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def shard(module: torch.nn.Module, layers: torch.nn.ModuleList, param_dtype: torch.dtype,
          compute_dtype: torch.dtype) -> None:
    """fully_shard each decoder layer, then the root `module`, in place (a process group must exist)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        raise ValueError("train.sharding=fsdp2 needs a multi-process launch (accelerate launch --num_processes N)")
    mixed = MixedPrecisionPolicy(
        param_dtype=compute_dtype if compute_dtype != param_dtype else None, reduce_dtype=torch.float32
    )
    for layer in layers:
        fully_shard(layer, mp_policy=mixed)
    fully_shard(module, mp_policy=mixed)


def units(module: torch.nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in module.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(module: torch.nn.Module) -> Iterator[None]:
    """Every unit's full parameters for the duration (no resharding after a unit's forward), then
    sharded again. For rollouts, rewards that read the policy, and no-grad log-probs."""
    shard_units = units(module)
    # FSDP2 names its root unit at the first forward through it; a rollout comes before any, so name it
    # here (private API: FSDP2 has no public one for this yet).
    module._get_fsdp_state()._lazy_init()
    for unit in shard_units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in shard_units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)


def full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict on rank 0's CPU; empty on the other ranks. A collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_optimizer(module: torch.nn.Module, optimizer: Any, folder: Path, rank: int) -> None:
    """This rank's shard of the optimizer state -> folder/optimizer_rank{rank}.pt."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(module, _plain_optimizer(optimizer))
    torch.save(_local(state), folder / f"optimizer_rank{rank}.pt")


def load_optimizer(module: torch.nn.Module, optimizer: Any, folder: Path, rank: int) -> None:
    """Restore this rank's optimizer shard written by `save_optimizer` (same number of processes)."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
    from torch.distributed.tensor import DTensor

    path = folder / f"optimizer_rank{rank}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a sharded checkpoint resumes with the number of processes "
                                f"that wrote it")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    current = _plain_optimizer(optimizer)
    # Put each saved local shard back into a DTensor laid out like the parameter it belongs to.
    names = {id(p): n for n, p in module.named_parameters()}
    by_name = {names[id(p)]: p for group in current.param_groups for p in group["params"] if id(p) in names}
    for name, entry in saved["state"].items():
        param = by_name.get(name)
        if param is None or not isinstance(param, DTensor):
            continue
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                entry[key] = DTensor.from_local(value.to(param.to_local().device), param.device_mesh,
                                                param.placements, run_check=False)
    set_optimizer_state_dict(module, current, optim_state_dict=saved)


def _plain_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it


def _local(state: Any) -> Any:
    """DTensors -> their local shards (plain tensors that torch.load(weights_only=True) reads back)."""
    from torch.distributed.tensor import DTensor

    if isinstance(state, DTensor):
        return state.to_local()
    if isinstance(state, dict):
        return {key: _local(value) for key, value in state.items()}
    if isinstance(state, list):
        return [_local(value) for value in state]
    return state
