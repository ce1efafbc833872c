"""The torchvision import fix: a no-op unless a CUDA torchvision sits beside a CPU-only torch."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from corl import torchvision_compat


def test_declares_only_for_a_cuda_torchvision_beside_a_cpu_torch(monkeypatch):
    monkeypatch.setattr(torchvision_compat, "_library", None)
    monkeypatch.setattr(torchvision_compat, "cuda_build_of_torchvision", lambda: False)
    assert torchvision_compat.declare_missing_torchvision_ops() is False


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed")
def test_installed_torchvision_and_transformers_janus_import():
    import torchvision
    from transformers.models.janus import modeling_janus  # imports torchvision

    assert modeling_janus.JanusForConditionalGeneration is not None
    if torchvision_compat.cuda_build_of_torchvision() and torch.version.cuda is None:
        assert torchvision_compat._library is not None  # the fix was needed and applied at `import corl`
    assert torchvision.models.vgg16(weights=None) is not None  # pure-Python parts work
