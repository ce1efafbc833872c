"""Checkpoint helpers: LoRA merging by hand-computed numbers, finding complete checkpoints, state files."""

from __future__ import annotations

import pytest
import torch

from corl.training.checkpoint import (
    STATE_FILE,
    TrainerState,
    latest_checkpoint,
    list_checkpoints,
    merge_lora_state_dict,
)


def test_merge_lora_state_dict_adds_scaled_product_and_renames():
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # [out=2, in=2]
    a = torch.tensor([[1.0, 0.0]])  # [r=1, in]
    b = torch.tensor([[2.0], [0.0]])  # [out, r]
    state = {
        "layer.q_proj.base_layer.weight": w,
        "layer.q_proj.base_layer.bias": torch.tensor([0.5, 0.5]),
        "layer.q_proj.lora_A.default.weight": a,
        "layer.q_proj.lora_B.default.weight": b,
        "layer.norm.weight": torch.ones(2),
    }
    merged = merge_lora_state_dict(state, scaling=0.5)
    assert set(merged) == {"layer.q_proj.weight", "layer.q_proj.bias", "layer.norm.weight"}
    # W + 0.5 * B @ A = [[1 + 0.5*2*1, 2 + 0], [3, 4]]
    assert torch.equal(merged["layer.q_proj.weight"], torch.tensor([[2.0, 2.0], [3.0, 4.0]]))
    assert torch.equal(merged["layer.q_proj.bias"], torch.tensor([0.5, 0.5]))
    assert torch.equal(state["layer.q_proj.base_layer.weight"], w)  # the input is not modified


def test_merge_keeps_the_weight_dtype():
    state = {"x.base_layer.weight": torch.ones(2, 2, dtype=torch.bfloat16),
             "x.lora_A.default.weight": torch.ones(1, 2), "x.lora_B.default.weight": torch.ones(2, 1)}
    assert merge_lora_state_dict(state, 1.0)["x.weight"].dtype == torch.bfloat16


def _state(step: int) -> TrainerState:
    return TrainerState(step=step, data_step=step, sampler_epoch=0, sampler_step_in_epoch=step, steps_per_epoch=8,
                        total_steps=10, seed=0, stage="t2i", world_size=1, gradient_accumulation_steps=1,
                        num_iterations=1, lora=False, model_source="m")


def test_only_complete_checkpoints_are_listed(tmp_path):
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / STATE_FILE).write_text(_state(step).to_json())
    (tmp_path / "checkpoint-11.tmp").mkdir()  # an interrupted save
    (tmp_path / "checkpoint-12").mkdir()  # no trainer_state.json: not complete
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 10]  # numeric order, not "10" < "2"
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert latest_checkpoint(tmp_path / "missing") is None
    assert TrainerState.from_file(tmp_path / "checkpoint-10" / STATE_FILE) == _state(10)


class _RunsCode:
    """A pickle that would run a command when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_generator_state_round_trips_through_a_safe_load(tmp_path):
    import random

    import numpy as np

    from corl.training.checkpoint import load_rng_file, rng_state, set_rng_state

    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    torch.save(rng_state(), tmp_path / "rng_state_0.pth")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(load_rng_file(tmp_path / "rng_state_0.pth"))
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_a_crafted_generator_file_is_refused_not_run(tmp_path):
    from corl.training.checkpoint import load_rng_file

    marker = tmp_path / "ran"
    torch.save({"python": _RunsCode(marker)}, tmp_path / "rng_state_0.pth")
    with pytest.raises(ValueError, match="not a generator state corl can load safely"):
        load_rng_file(tmp_path / "rng_state_0.pth")
    assert not marker.exists()


# ------------------------------------------------------------------------ damaged checkpoints, full disk


def _fake_checkpoint(out, step: int, lora: bool = False):
    """A checkpoint directory with every file a resume reads, small but real."""
    from safetensors.torch import save_file

    from corl.training.checkpoint import rng_state

    path = out / f"checkpoint-{step}"
    path.mkdir(parents=True)
    state = _state(step)
    state.lora = lora
    (path / STATE_FILE).write_text(state.to_json())
    (path / "config.json").write_text('{"model_type": "tiny"}')
    save_file({"w": torch.ones(64, 64)}, str(path / "model.safetensors"))
    if lora:
        (path / "adapter").mkdir()
        save_file({"a": torch.ones(4, 64)}, str(path / "adapter" / "adapter_model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.zeros(64)}}, "param_groups": []}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    torch.save(rng_state(), path / "rng_state_0.pth")
    return path


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _drop_step(path) -> None:
    import json

    raw = json.loads(path.read_text())
    del raw["step"]
    path.write_text(json.dumps(raw))


DAMAGES = {
    # name: (file, how it is damaged, what the message says about it)
    "state garbage": (STATE_FILE, lambda p: p.write_bytes(b"\x00\x01garbage"), "is damaged (not JSON"),
    "state truncated": (STATE_FILE, _truncate, "is damaged (not JSON"),
    "state missing keys": (STATE_FILE, _drop_step, "is damaged (no step)"),
    "state wrong type": (STATE_FILE, lambda p: p.write_text(p.read_text().replace('"seed": 0', '"seed": "x"')),
                         "is damaged (wrong type of seed ('x'))"),
    "state deleted": (STATE_FILE, lambda p: p.unlink(), "is missing"),
    "config deleted": ("config.json", lambda p: p.unlink(), "is missing"),
    "weights deleted": ("model.safetensors", lambda p: p.unlink(), "is missing"),
    "weights truncated": ("model.safetensors", _truncate, "is damaged (not a complete safetensors file"),
    "weights garbage": ("model.safetensors", lambda p: p.write_bytes(b"garbage" * 10),
                        "is damaged (not a complete safetensors file"),
    "optimizer truncated": ("optimizer.pt", _truncate, "is damaged (not a complete torch.save file"),
    "optimizer garbage": ("optimizer.pt", lambda p: p.write_bytes(b"garbage" * 10),
                          "is damaged (not a complete torch.save file"),
    "optimizer empty": ("optimizer.pt", lambda p: p.write_bytes(b""), "is damaged (not a complete torch.save file"),
    "scheduler deleted": ("scheduler.pt", lambda p: p.unlink(), "is missing"),
    "rng truncated": ("rng_state_0.pth", lambda p: _truncate(p, 0.9), "is damaged (not a complete torch.save file"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_checkpoint_names_the_file_and_the_checkpoint_before_it(tmp_path, damage):
    from corl.training.checkpoint import DamagedCheckpoint, check_checkpoint

    name, spoil, said = DAMAGES[damage]
    for step in (1, 2, 3):
        _fake_checkpoint(tmp_path, step)
    assert check_checkpoint(tmp_path / "checkpoint-3", lora=False).step == 3
    spoil(tmp_path / "checkpoint-3" / name)
    with pytest.raises(DamagedCheckpoint) as caught:
        check_checkpoint(tmp_path / "checkpoint-3", lora=False)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'checkpoint-3' / name} {said}"), message
    assert message.endswith(f"resume from an earlier checkpoint with --resume-from {tmp_path / 'checkpoint-2'}, or start "
                            f"afresh with a new --out")
    assert "\n" not in message and isinstance(caught.value, ValueError)  # one line through the CLI
    # The suggestion is the newest intact checkpoint before it; with none, a fresh start.
    spoil(tmp_path / "checkpoint-2" / name)
    with pytest.raises(DamagedCheckpoint, match=f"--resume-from {tmp_path / 'checkpoint-1'},"):
        check_checkpoint(tmp_path / "checkpoint-3", lora=False)
    spoil(tmp_path / "checkpoint-1" / name)
    with pytest.raises(DamagedCheckpoint, match=f"no earlier checkpoint in {tmp_path} is intact: start afresh"):
        check_checkpoint(tmp_path / "checkpoint-3", lora=False)


def test_a_lora_resume_checks_the_adapter(tmp_path):
    from corl.training.checkpoint import DamagedCheckpoint, check_checkpoint

    for step in (1, 2):
        _fake_checkpoint(tmp_path, step, lora=True)
    (tmp_path / "checkpoint-2" / "model.safetensors").unlink()  # not read by a LoRA resume
    check_checkpoint(tmp_path / "checkpoint-2", lora=True)
    adapter = tmp_path / "checkpoint-2" / "adapter" / "adapter_model.safetensors"
    _truncate(adapter)
    with pytest.raises(DamagedCheckpoint, match=f"{adapter} is damaged .*--resume-from {tmp_path / 'checkpoint-1'}"):
        check_checkpoint(tmp_path / "checkpoint-2", lora=True)
    adapter.unlink()
    with pytest.raises(DamagedCheckpoint, match=f"{adapter} is missing"):
        check_checkpoint(tmp_path / "checkpoint-2", lora=True)
    with pytest.raises(ValueError, match="saved by a run without LoRA"):
        check_checkpoint(_fake_checkpoint(tmp_path, 3), lora=True)


def test_trainer_state_from_a_damaged_file_names_it(tmp_path):
    from corl.training.checkpoint import DamagedCheckpoint

    _fake_checkpoint(tmp_path, 1)
    path = _fake_checkpoint(tmp_path, 2) / STATE_FILE
    path.write_text('{"step": 2, "data_st')  # cut off
    with pytest.raises(DamagedCheckpoint, match=rf"{path} is damaged \(not JSON: .*--resume-from {tmp_path / 'checkpoint-1'}"):
        TrainerState.from_file(path)


def test_loading_a_file_that_passes_the_quick_check_but_does_not_load_names_it(tmp_path):
    """The zip directory of a torch.save file is intact but its pickle was overwritten: torch.load's own
    error (UnpicklingError here; RuntimeError, EOFError, ... elsewhere) becomes DamagedCheckpoint."""
    from corl.training.checkpoint import DamagedCheckpoint, _load_torch_file, check_checkpoint

    _fake_checkpoint(tmp_path, 1)
    path = _fake_checkpoint(tmp_path, 2) / "scheduler.pt"
    data = bytearray(path.read_bytes())
    start = data.index(b"\x80\x02")  # the pickle's protocol header inside data.pkl (stored uncompressed)
    data[start + 2: start + 12] = b"\x00" * 10
    path.write_bytes(bytes(data))
    check_checkpoint(path.parent, lora=False)  # the quick check only reads the zip directory
    with pytest.raises(DamagedCheckpoint, match=f"{path} is damaged .*--resume-from {tmp_path / 'checkpoint-1'}"):
        _load_torch_file(path)


def test_a_truncated_generator_file_is_reported_as_damaged(tmp_path):
    from corl.training.checkpoint import DamagedCheckpoint, load_rng_file

    path = _fake_checkpoint(tmp_path, 1) / "rng_state_0.pth"
    _truncate(path)
    with pytest.raises(DamagedCheckpoint, match=f"{path} is damaged"):
        load_rng_file(path)


def test_newest_checkpoint_dir_includes_an_incomplete_one(tmp_path):
    from corl.training.checkpoint import newest_checkpoint_dir

    assert newest_checkpoint_dir(tmp_path / "missing") is None
    _fake_checkpoint(tmp_path, 2)
    (tmp_path / "checkpoint-10").mkdir()  # its trainer_state.json was lost: a resume must say so
    (tmp_path / "checkpoint-11.tmp").mkdir()  # an interrupted save is not a checkpoint
    assert newest_checkpoint_dir(tmp_path) == tmp_path / "checkpoint-10"
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


@pytest.mark.parametrize(
    "error, free, expected",
    [
        (OSError(28, "No space left on device"), 2**30, "DiskFull: no space left on device while writing"),
        (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"), 2**30,
         "DiskFull: no space left on device while writing"),
        (OSError(122, "Disk quota exceeded"), 2**30, "DiskFull: disk quota exceeded while writing"),
        # torch.save's zip writer does not say why a write failed: the free space decides
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"), 2**20,
         "DiskFull: no space left on device while writing"),
        (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), 2**20,
         "DiskFull: no space left on device while writing"),
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"), 2**40,
         "WriteFailed: writing"),
        (RuntimeError("CUDA error: an illegal memory access"), 0, None),
        (OSError(13, "Permission denied"), 0, None),
    ],
)
def test_write_failures_that_are_the_disks_fault_are_recognised(tmp_path, monkeypatch, error, free, expected):
    import shutil
    from collections import namedtuple

    from corl.training.checkpoint import write_error, write_problem

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**41, 2**41 - free, free))
    kind = write_problem(error, tmp_path)
    if expected is None:
        assert kind is None
        return
    err = write_error(kind, error, tmp_path / "checkpoint-3")
    assert f"{type(err).__name__}: {err}".startswith(f"{expected} {tmp_path / 'checkpoint-3'}")
    assert str(err).endswith("then resume with --resume") and f"free {free // 2**20} MiB" in str(err)
    assert isinstance(err, OSError)  # and a corl.errors.RunFailed: the CLI prints it in one line
