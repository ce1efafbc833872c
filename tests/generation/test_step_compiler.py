"""The AOT-compiled step's binding to live tensors (the compiler itself runs in the slow decoding test)."""

from __future__ import annotations

import pytest
import torch

from corl.generation.step_compiler import AOTStep, _StepProgram


class _Library:
    """Stands in for an AOTInductor package: its constant names, and what load_constants received."""

    def __init__(self, names: list[str]) -> None:
        self.names, self.loads = names, []

    def get_constant_fqns(self) -> list[str]:
        return self.names

    def load_constants(self, tensors, *, check_full_update, user_managed):
        assert check_full_update and user_managed
        self.loads.append(dict(tensors))

    def __call__(self, *inputs):
        return inputs


def _program() -> _StepProgram:
    decoder = torch.nn.Module()
    decoder.register_buffer("keys_0", torch.zeros(2, 3), persistent=False)
    return _StepProgram(decoder, torch.nn.Linear(3, 2))


def test_binds_the_live_tensors_and_rebinds_only_when_one_was_replaced():
    program = _program()
    library = _Library(["decoder.keys_0", "weights.weight", "weights.bias"])
    step = AOTStep(library, program)
    (first,) = library.loads
    assert first["weights.weight"] is program.weights.weight and first["decoder.keys_0"] is program.decoder.keys_0
    with torch.no_grad():
        program.weights.weight.add_(1.0)  # in place (an optimizer step): nothing to re-bind
    step.bind()
    assert len(library.loads) == 1
    program.weights.to(torch.float64)  # new tensors (module.to): bound again, to the new ones
    step.bind()
    assert len(library.loads) == 2 and library.loads[1]["weights.weight"] is program.weights.weight
    program.weights.weight = torch.nn.Parameter(torch.ones(2, 3))  # a replaced parameter object too
    step.bind()
    assert len(library.loads) == 3 and library.loads[2]["weights.weight"] is program.weights.weight


def test_a_tensor_no_registered_module_owns_is_refused():
    with pytest.raises(RuntimeError, match="no registered module owns: \\['lifted_tensor_0'\\]"):
        AOTStep(_Library(["weights.weight", "lifted_tensor_0"]), _program())
