"""The Janus adapter: a thin layer over transformers' `JanusForConditionalGeneration`.

Loading (`load_policy`), prompt formatting, the tokenizer of small models, per-token log-probs of both
heads (`scoring`) and hidden states for text-image matching (`matching`). Sampling lives in
`corl.generation`, which builds on this package (never the other way round). Names are imported lazily
so that `corl --help` does not pay for importing torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "JanusPolicy": "corl.policy.policy",
    "SpecialTokens": "corl.policy.policy",
    "trainable_parameters": "corl.policy.policy",
    "PARAMETER_GROUPS": "corl.policy.policy",
    "load_policy": "corl.policy.loading",
    "load_processor": "corl.policy.loading",
    "save_policy": "corl.policy.loading",
    "default_model_path": "corl.policy.loading",
    "MatchingStates": "corl.policy.matching",
    "matching_states": "corl.policy.matching",
    "PromptStyle": "corl.policy.prompts",
    "DEFAULT_ANSWER_FORMAT": "corl.policy.prompts",
    "encode_understanding": "corl.policy.prompts",
    "encode_generation": "corl.policy.prompts",
    "image_token_logps": "corl.policy.scoring",
    "text_token_logps": "corl.policy.scoring",
    "build_tokenizer": "corl.policy.tokenizer",
    "build_processor": "corl.policy.tokenizer",
    "JanusSizes": "corl.policy.architecture",
    "JANUS_PRO_1B": "corl.policy.architecture",
    "janus_config": "corl.policy.architecture",
    "build_janus": "corl.policy.architecture",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'corl.policy' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


if TYPE_CHECKING:  # for type checkers and IDEs only
    from corl.policy.architecture import JANUS_PRO_1B, JanusSizes, build_janus, janus_config  # noqa: F401
    from corl.policy.loading import default_model_path, load_policy, load_processor, save_policy  # noqa: F401
    from corl.policy.matching import MatchingStates, matching_states  # noqa: F401
    from corl.policy.policy import PARAMETER_GROUPS, JanusPolicy, SpecialTokens, trainable_parameters  # noqa: F401
    from corl.policy.prompts import (  # noqa: F401
        DEFAULT_ANSWER_FORMAT,
        PromptStyle,
        encode_generation,
        encode_understanding,
    )
    from corl.policy.scoring import image_token_logps, text_token_logps  # noqa: F401
    from corl.policy.tokenizer import build_processor, build_tokenizer  # noqa: F401
