"""Compiling the static-shape decode step (`decoding.StaticDecoder`) for CPU and GPU.

GPU: `torch.compile` with CUDA graphs ("reduce-overhead"): one graph replay per step.
CPU: AOTInductor (`torch.export` + `torch._inductor.aoti_compile_and_package`). The step's kernels are the
ones inductor generates for `torch.compile` too, but a call goes straight into the compiled library:
no dynamo frame, guards or AOT-autograd wrappers around it (`benchmarks/step.py` compares the two).
`DecodingConfig.cpu_compiler = "inductor"` selects torch.compile (with the C++ wrapper,
`compile_settings`) instead; a step that does not export falls back to it with a logged warning.

Weights stay live: export lifts every parameter and buffer of the registered modules (the LLM, and the
module owning what the step's embed / head read) as named constants, and the compiled library is bound
to the model's own tensors (`load_constants(user_managed=True)`): an optimizer step that updates the
weights in place is seen by the next call without recompiling, and the step writes its keys and values
into the decoder's own buffers. A constant that no registered module owns (a tensor the step captured
from elsewhere) would be frozen into the library: that raises instead.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

def compile_settings(device: torch.device) -> dict:
    """torch.compile keywords for a decode step. GPU: CUDA graphs ("reduce-overhead"), one replay per
    step. CPU: inductor's C++ wrapper, which calls the step's ~40 kernels from C++ instead of generated
    Python (less per-call overhead, which dominates a small model's step)."""
    if device.type == "cuda":
        return {"mode": "reduce-overhead"}
    return {"options": {"cpp_wrapper": True}}


class _StepProgram(torch.nn.Module):
    """What AOTInductor compiles: the decoder's forward, with the modules whose tensors it reads
    registered, so that export names them (and `load_constants` can bind them to the live tensors)."""

    def __init__(self, decoder: torch.nn.Module, weights: torch.nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.weights = weights

    def forward(self, *inputs: Any) -> torch.Tensor:
        return self.decoder(*inputs)


class AOTStep:
    """An AOTInductor-compiled step bound to the live tensors of `program` (a `_StepProgram`).

    The library keeps raw pointers to them, so `bind()` (run by `StaticDecoder.start`, once per rollout)
    re-binds when a tensor was replaced since (`module.to(...)` and back, `load_state_dict(assign=True)`):
    a replaced tensor's memory may be freed. (Submodules are resolved once: replace a module of a
    compiled policy and the next rollout needs `policy.static_decoders.clear()`.)"""

    def __init__(self, compiled: Any, program: _StepProgram) -> None:
        self.compiled = compiled
        # (owning module, attribute) per constant: looked up again at each bind, ~1 us a name
        self.owners: dict[str, tuple[torch.nn.Module, str]] = {}
        captured = []
        for name in compiled.get_constant_fqns():
            path, _, attribute = name.rpartition(".")
            try:
                module = program.get_submodule(path)
            except AttributeError:
                module = None
            if module is None or not isinstance(getattr(module, attribute, None), torch.Tensor):
                captured.append(name)
            else:
                self.owners[name] = (module, attribute)
        if captured:
            raise RuntimeError(f"the decode step reads tensors that no registered module owns: {captured[:5]}")
        self.pointers: tuple[int, ...] = ()
        self.bind()

    def bind(self) -> None:
        tensors = {name: getattr(module, attribute) for name, (module, attribute) in self.owners.items()}
        pointers = tuple(tensor.data_ptr() for tensor in tensors.values())
        if pointers != self.pointers:
            self.compiled.load_constants(tensors, check_full_update=True, user_managed=True)
            self.pointers = pointers

    def __call__(self, *inputs: Any) -> torch.Tensor:
        return self.compiled(*inputs)


def aot_compile(decoder: torch.nn.Module, weights: torch.nn.Module, example: tuple) -> AOTStep:
    """decoder(*example) ahead-of-time compiled for these shapes, its constants bound to live tensors."""
    program_module = _StepProgram(decoder, weights)
    # export traces outside inference mode: example inputs made in a rollout are inference tensors
    with torch.inference_mode(False), torch.no_grad():
        example = tuple(value.clone() if isinstance(value, torch.Tensor) else value for value in example)
        program = torch.export.export(program_module, example, strict=False)
        with tempfile.TemporaryDirectory(prefix="corl-step-") as folder:
            package = torch._inductor.aoti_compile_and_package(
                program, package_path=os.path.join(folder, "step.pt2")
            )
            compiled = torch._inductor.aoti_load_package(package)
    return AOTStep(compiled, program_module)


def compile_decoder(
    decoder: torch.nn.Module, weights: torch.nn.Module, example: tuple, cpu_compiler: str
) -> Callable[..., Any]:
    """The decoder's forward compiled for the shapes of `example` (its first call's inputs); on CPU by
    `cpu_compiler` ("aot": AOTInductor, "inductor": torch.compile), on GPU by torch.compile."""
    device = next(decoder.buffers()).device
    if device.type == "cpu" and cpu_compiler == "aot":
        try:
            return aot_compile(decoder, weights, example)
        except Exception as error:  # noqa: BLE001  (export's coverage varies by model and version)
            logger.warning(
                "AOTInductor could not compile the decode step (%s: %s); using torch.compile",
                type(error).__name__,
                error,
            )
    return torch.compile(decoder, fullgraph=True, dynamic=False, **compile_settings(device))
