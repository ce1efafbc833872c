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
newest `keep_last` checkpoints are kept. A save that cannot write (full disk, quota) removes its *.tmp
and stops the run with corl.errors.DiskFull / WriteFailed: the earlier checkpoints stay as they were.

A resume checks the checkpoint first (`check_checkpoint`: every file there, readable headers), so a
damaged or half-deleted one is named, with the newest intact checkpoint before it, before anything loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import pickle
import random
import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corl.errors import DiskFull, WriteFailed
from corl.policy.model_files import safetensors_problem

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
        """The state in a checkpoint's trainer_state.json; DamagedCheckpoint (a ValueError) naming the file
        when it is missing, not JSON, or lacks a field."""
        try:
            return _state_of(path)
        except _Damage as damage:
            raise damaged(damage.file, damage.why) from None


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


def checkpoint_step(path: Path) -> int | None:
    """N of a directory named checkpoint-N, else None."""
    match = _CHECKPOINT_RE.match(path.name)
    return int(match.group(1)) if match else None


def newest_checkpoint_dir(out_dir: str | Path) -> Path | None:
    """The checkpoint-N directory of largest N, complete or not: what a resume of the run must use. A save
    is atomic (a rename), so a checkpoint-N without its trainer_state.json was damaged afterwards: a resume
    reports it instead of quietly going back to an older one."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return None
    found = [(step, path) for path in out_dir.iterdir()
             if (step := checkpoint_step(path)) is not None and path.is_dir()]
    return max(found)[1] if found else None


def remove_stale_tmp(out_dir: Path) -> None:
    for path in out_dir.glob(f"{PREFIX}*.tmp"):
        logger.warning("removing %s, left by an interrupted save", path)
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------- damaged checkpoints


class DamagedCheckpoint(ValueError):
    """A file of a checkpoint is missing or unreadable; the message names it and what to do."""


class _Damage(Exception):
    def __init__(self, file: Path, why: str) -> None:
        super().__init__(file, why)
        self.file, self.why = file, why


MISSING = "missing"


def _state_of(path: Path) -> TrainerState:
    try:
        raw = json.loads(path.read_bytes().decode("utf-8", errors="replace"))
    except FileNotFoundError:
        raise _Damage(path, MISSING) from None
    except ValueError as err:
        raise _Damage(path, f"not JSON: {err}") from None
    if not isinstance(raw, dict):
        raise _Damage(path, f"not a JSON object but {type(raw).__name__}")
    kinds = {"int": int, "str": str, "bool": bool}  # the annotations, as strings (postponed evaluation)
    fields = {f.name: kinds.get(str(f.type), object) for f in dataclasses.fields(TrainerState)}
    missing = [name for name in fields if name not in raw]
    if missing:
        raise _Damage(path, f"no {', '.join(missing)}")
    wrong = [name for name, kind in fields.items()
             if not isinstance(raw[name], kind) or (kind is int and isinstance(raw[name], bool))]
    if wrong:
        raise _Damage(path, "wrong type of " + ", ".join(f"{n} ({raw[n]!r})" for n in wrong))
    return TrainerState(**{name: raw[name] for name in fields})


def _first_line(err: BaseException, limit: int = 160) -> str:
    text = (str(err).strip().splitlines() or [""])[0]
    text = text if len(text) <= limit else text[:limit] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _torch_file_problem(path: Path) -> str | None:
    """Why `path` cannot be a complete torch.save file (a zip archive whose directory sits at its end, so
    a truncated file fails here without reading the tensors), or None."""
    if not path.is_file():
        return MISSING
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        return f"not a complete torch.save file, truncated or overwritten: {_first_line(err)}"
    if not any(name.endswith("data.pkl") for name in names):
        return "not a torch.save file (no data.pkl inside)"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a complete safetensors file (its header is read and the data length checked;
    the tensors are not read), or None."""
    return MISSING if not path.is_file() else safetensors_problem(path)


def _weight_files(checkpoint: Path) -> list[Path]:
    """The save_pretrained weight files of a checkpoint: model.safetensors, or the shards its index names."""
    index = checkpoint / "model.safetensors.index.json"
    if not index.is_file():
        return [checkpoint / "model.safetensors"]
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise _Damage(index, f"not a weight index: {_first_line(err)}") from None
    return [checkpoint / name for name in shards]


def _find_damage(checkpoint: Path, lora: bool | None) -> _Damage | None:
    """The first missing or unreadable file a resume from `checkpoint` reads (lora None: as the checkpoint
    says it was saved), or None. Cheap: headers and zip directories only."""
    try:
        state = _state_of(checkpoint / STATE_FILE)
        if state.lora if lora is None else lora:
            weights = [checkpoint / "adapter" / "adapter_model.safetensors"]
        else:
            config = checkpoint / "config.json"
            try:
                json.loads(config.read_text())
            except FileNotFoundError:
                raise _Damage(config, MISSING) from None
            except ValueError as err:
                raise _Damage(config, f"not JSON: {err}") from None
            weights = _weight_files(checkpoint)
        for path in weights:
            if problem := _safetensors_problem(path):
                raise _Damage(path, problem)
        torch_files = [checkpoint / "scheduler.pt"]
        sharded = sorted(checkpoint.glob("optimizer_rank*.pt"))
        torch_files += sharded if sharded and not (checkpoint / "optimizer.pt").exists() else [checkpoint / "optimizer.pt"]
        torch_files += sorted(checkpoint.glob("rng_state_*.pth"))  # optional: a missing one only warns
        for path in torch_files:
            if problem := _torch_file_problem(path):
                raise _Damage(path, problem)
    except _Damage as damage:
        return damage
    return None


def damaged(file: Path, why: str) -> DamagedCheckpoint:
    """The error for a missing or unreadable file of a checkpoint: names it, and the newest intact
    checkpoint before it to resume from instead."""
    checkpoint = next((p for p in (file.parent, file.parent.parent) if checkpoint_step(p) is not None), None)
    earlier = None
    if checkpoint is not None:
        step = checkpoint_step(checkpoint)
        earlier = next((path for s, path in reversed(list_checkpoints(checkpoint.parent))
                        if s < step and _find_damage(path, None) is None), None)
    what = f"{file} is missing" if why == MISSING else f"{file} is damaged ({why})"
    if earlier is not None:
        advice = f"resume from an earlier checkpoint with --resume-from {earlier}, or start afresh with a new --out"
    elif checkpoint is not None:
        advice = f"no earlier checkpoint in {checkpoint.parent} is intact: start afresh with a new --out"
    else:
        advice = "restore it, or start afresh with a new --out"
    return DamagedCheckpoint(f"{what}: {advice}")


def check_checkpoint(path: Path, *, lora: bool) -> TrainerState:
    """Before a resume loads anything: every file it will read from checkpoint `path` is there and whole
    (trainer_state.json parses and has every field; safetensors headers and torch.save archives are
    complete). lora: the resuming run uses LoRA (adapters are read instead of the full weights).
    DamagedCheckpoint names the first bad file and an earlier intact checkpoint."""
    state = TrainerState.from_file(path / STATE_FILE)
    if lora and not state.lora:
        raise ValueError(f"{path} was saved by a run without LoRA (no adapter/): resume it with model.lora_r=0, "
                         f"or start afresh with a new --out")
    damage = _find_damage(path, lora)
    if damage is not None:
        raise damaged(damage.file, damage.why)
    return state


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
    or one written by an older corl, is refused, never executed). A truncated or overwritten file is
    reported as damaged."""
    problem = _torch_file_problem(path)
    if problem is not None:
        raise damaged(path, problem)
    try:
        state = torch.load(path, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a generator state corl can load safely ({type(err).__name__}); "
                         f"delete it to resume with fresh generators") from None
    if not isinstance(state, dict) or not {"python", "numpy", "torch"} <= set(state):
        raise damaged(path, "not a generator state: python, numpy and torch states expected")
    return state


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


# ---------------------------------------------------------------------------------- write failures

LOW_SPACE = 256 * 2**20  # bytes: below this, an ambiguous write failure is taken for a full disk
_FULL_TEXT = ("no space left", "os error 28")  # SafetensorError and C++ stream messages carry the OS text
_QUOTA_TEXT = ("quota exceeded", "os error 122")
# torch.save's zip writer reports a failed write without its cause
_WRITE_FAILED_TEXT = ("unexpected pos", "file write failed", "iostream error")


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        if folder.is_dir():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def write_problem(err: BaseException, path: Path) -> str | None:
    """"full", "quota" or "failed" when `err`, raised while writing under `path`, is the disk's fault
    (no space, quota, or a write torch.save saw fail while space was left); None for any other error.
    Call it before cleaning up: a failed write on a full disk leaves little free space behind."""
    code = getattr(err, "errno", None)
    text = str(err).lower()
    if code == errno.ENOSPC or any(marker in text for marker in _FULL_TEXT):
        return "full"
    if code == errno.EDQUOT or any(marker in text for marker in _QUOTA_TEXT):
        return "quota"
    if isinstance(err, RuntimeError) and any(marker in text for marker in _WRITE_FAILED_TEXT):
        free = _free_bytes(path)
        return "full" if free is not None and free < LOW_SPACE else "failed"
    return None


def write_error(kind: str, err: BaseException, target: Path, needed: int | None = None) -> WriteFailed:
    """The one-line error for a write of `target` that failed (kind from `write_problem`); the free space
    is measured now (after the partial files are removed). needed: bytes the write takes, when known."""
    free = _free_bytes(target)
    space = "free ? MiB" if free is None else f"free {free / 2**20:.0f} MiB"
    if needed:
        space += f", it needs about {needed / 2**20:.0f} MiB"
    if kind == "full":
        return DiskFull(f"no space left on device while writing {target} ({space}): free space, then resume "
                        f"with --resume")
    if kind == "quota":
        return DiskFull(f"disk quota exceeded while writing {target} ({space}): free space within the quota, "
                        f"then resume with --resume")
    return WriteFailed(f"writing {target} failed ({_first_line(err)}; {space}): check the disk (space, quota, "
                       f"errors), then resume with --resume")


@contextlib.contextmanager
def write_errors_reported(target: Path) -> Iterator[None]:
    """Turn an OSError raised inside that is the disk's fault (full, quota) into DiskFull naming the file
    (the error's own file name, else `target`: the file or folder being written)."""
    try:
        yield
    except WriteFailed:
        raise
    except OSError as err:
        kind = write_problem(err, target)
        if kind is None:
            raise
        if isinstance(err.filename, (str, os.PathLike)):
            target = Path(err.filename)
        raise write_error(kind, err, target) from err


def _tree_size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


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
    fsdp2: the module was sharded by corl (corl.training.sharding): optimizer state one file per rank.
    A write that fails (on the main process: full disk, quota) removes the partial checkpoint-N.tmp and
    raises DiskFull / WriteFailed naming the checkpoint; earlier checkpoints are left untouched."""
    final = out_dir / f"{PREFIX}{state.step}"
    tmp = out_dir / f"{PREFIX}{state.step}.tmp"
    is_main = accelerator.is_main_process
    try:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        _write_checkpoint(tmp, state, accelerator=accelerator, wrapped_module=wrapped_module, trainable=trainable,
                          optimizer=optimizer, scheduler=scheduler, lora_scaling=lora_scaling, fsdp2=fsdp2)
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
    except Exception as err:
        kind = write_problem(err, out_dir)  # before the cleanup frees the partial files' space
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        if kind is None:
            raise
        previous = latest_checkpoint(out_dir)
        raise write_error(kind, err, final, needed=_tree_size(previous) if previous else None) from err
    if is_main:
        if keep_last > 0:
            for _, path in list_checkpoints(out_dir)[:-keep_last]:
                shutil.rmtree(path, ignore_errors=True)
        logger.info("saved %s", final)
    accelerator.wait_for_everyone()
    return final


def _write_checkpoint(tmp: Path, state: TrainerState, *, accelerator: Any, wrapped_module: Any, trainable: Any,
                      optimizer: Any, scheduler: Any, lora_scaling: float | None, fsdp2: bool) -> None:
    """Every file of a checkpoint into `tmp` (save_checkpoint makes it atomic)."""
    is_main = accelerator.is_main_process
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
        if problem := _safetensors_problem(adapter):
            raise damaged(adapter, problem)
        try:
            weights = load_file(str(adapter), device=str(trainable.policy.device))
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # SafetensorError, OSError
            raise damaged(adapter, _first_line(err)) from err
        set_peft_model_state_dict(trainable.peft_model, weights)
    if sharded_module is not None:  # corl's FSDP2 (corl.training.sharding)
        from corl.training import sharding

        shard = path / f"optimizer_rank{accelerator.process_index}.pt"
        if shard.is_file() and (problem := _torch_file_problem(shard)):
            raise damaged(shard, problem)
        sharding.load_optimizer(sharded_module, optimizer, path, accelerator.process_index)
    else:
        # CPU processes of a launch carry devices like cpu:0, which torch.load cannot map to
        location = "cpu" if accelerator.device.type == "cpu" else accelerator.device
        optimizer.load_state_dict(_load_torch_file(path / "optimizer.pt", map_location=location))
    scheduler.load_state_dict(_load_torch_file(path / "scheduler.pt"))
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


def _load_torch_file(path: Path, **kwargs: Any) -> Any:
    """torch.load(weights_only=True) of a checkpoint file; DamagedCheckpoint when it is missing, truncated
    or unreadable (torch raises RuntimeError, EOFError, OSError, UnpicklingError, ... for those)."""
    if problem := _torch_file_problem(path):
        raise damaged(path, problem)
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except torch.OutOfMemoryError:
        raise
    except pickle.UnpicklingError as err:  # its own message suggests weights_only=False: never for a resume
        raise damaged(path, "its contents do not unpickle with weights_only=True") from err
    except Exception as err:
        raise damaged(path, _first_line(err)) from err
