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
