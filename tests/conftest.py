"""Shared fixtures: a tiny random Janus policy in float64 (exact comparisons), for any test directory."""

from __future__ import annotations

import pytest
import torch

from corl.policy.policy import JanusPolicy
from corl.policy.testing import tiny_janus


@pytest.fixture(scope="session")
def tiny_policy() -> JanusPolicy:
    """Read-only shared policy (do not modify its weights in a test; build your own instead)."""
    model, processor = tiny_janus(0, dtype=torch.float64)
    return JanusPolicy(model, processor)
