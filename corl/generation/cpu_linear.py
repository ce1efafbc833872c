"""Large float32 linear layers of CPU rollouts through oneDNN instead of the BLAS behind `F.linear`.

Why: a decode step is a few dozen matmuls with as many rows as samples (32 for 16 CFG images), and
PyTorch's CPU wheels run float32 `F.linear` through MKL, which takes a generic code path on some CPUs
(MKL skips its AVX-512 kernels on AMD processors). oneDNN, in the same wheel
(`torch.ops.mkldnn._linear_pointwise`, the op inductor's CPU backend emits for linears), picks its
kernels from the CPU's features. Large linears gain, tiny ones lose (call overhead): hence a size
threshold, `DecodingConfig.onednn_min_macs`; `benchmarks/cpu_linear.py` prints both side by side per
decode-step shape. bfloat16 linears already go through oneDNN in PyTorch, so only float32 is rerouted.

`onednn_linears(device, dtype, step_macs, min_macs)` is a context: inside it, every `F.linear` (so every `nn.Linear`: the
LLM's projections and MLP, the generation head and aligner, the text head) on CPU float32 without
autograd and with at least `min_macs` multiply-adds runs through oneDNN. The weights are
read as they are (no packed copy): an optimizer step is seen by the next rollout. Results equal MKL's up
to float rounding (relative differences ~1e-6 in the outputs), so a rollout above the threshold is no
longer bitwise equal to the model's own forward, only to the same forward inside the context.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


@functools.cache
def onednn_linear_supported() -> bool:
    """oneDNN's linear op is in this PyTorch build and the CPU is x86-64 (where it was measured)."""
    return (
        platform.machine().lower() in ("x86_64", "amd64")
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def onednn_linear_applies(inputs: torch.Tensor, weight: torch.Tensor, min_macs: int) -> bool:
    """Whether `F.linear(inputs [..., in], weight [out, in])` goes through oneDNN in `onednn_linears`
    (min_macs: the rows x in x out threshold; 0 never)."""
    if min_macs <= 0 or torch.is_grad_enabled():
        return False
    if inputs.device.type != "cpu" or inputs.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if weight.dim() != 2 or inputs.dim() < 1 or inputs.shape[-1] != weight.shape[1]:
        return False
    return inputs.numel() * weight.shape[0] >= min_macs


def onednn_linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear` through oneDNN: inputs [..., in], weight [out, in], bias [out] -> [..., out]."""
    return torch.ops.mkldnn._linear_pointwise(inputs.contiguous(), weight, bias, "none", [], "")


class _OneDNNLinearMode(TorchFunctionMode):
    """Reroutes the `F.linear` calls that `onednn_linear_applies` accepts; everything else runs as is
    (inside `__torch_function__` the mode is off, so `func` does not re-enter it)."""

    def __init__(self, min_macs: int) -> None:
        super().__init__()
        self.min_macs = min_macs

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            inputs, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if onednn_linear_applies(inputs, weight, self.min_macs):
                return onednn_linear(inputs, weight, bias)
        return func(*args, **kwargs)


@contextmanager
def onednn_linears(
    device: torch.device | str, dtype: torch.dtype, step_macs: int | None, min_macs: int
) -> Iterator[None]:
    """Within: large float32 CPU linears run through oneDNN (see the module docstring). A no-op for other
    devices and dtypes, where oneDNN is missing, with min_macs = 0, or when `step_macs`
    (the decode step's largest matmul, rows x hidden x intermediate) is under the threshold: a small
    model's rollout then runs exactly as without the context, prompt forward included, though some of its calls
    (a long prompt batch) would pass the per-call test."""
    if (
        torch.device(device).type != "cpu"
        or dtype != torch.float32
        or min_macs <= 0
        or (step_macs is not None and step_macs < min_macs)
        or not onednn_linear_supported()
    ):
        yield
        return
    with _OneDNNLinearMode(min_macs):
        yield
