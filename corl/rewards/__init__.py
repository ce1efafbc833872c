"""Rewards for CoRL: plain functions `fn(prompts, completions, **columns) -> list[float | None]`.

Registered names (build with `build_reward(name, **options)` or a whole recipe with
`RewardSet.from_recipe(reward_funcs, reward_weights, options, policy=...)`):

| name         | rows            | options                                                              |
|--------------|-----------------|----------------------------------------------------------------------|
| accuracy     | mm2t, MC or OE  | partial_credit, require_answer_tag                                   |
| accuracy_mc  | mm2t, MC        | partial_credit, require_answer_tag                                   |
| accuracy_oe  | mm2t, OE        | partial_credit, require_answer_tag                                   |
| accuracy_upstream | mm2t       | none (the official code's scoring: no tag needed, soft Jaccard)      |
| format       | mm2t            | none                                                                 |
| cycle        | t2i             | visual, visual_options, captioner, captioner_options,                |
|              |                 | text_similarity, text_similarity_options, reference_column (+policy) |
| cycle_visual | t2i             | visual, visual_options                                               |
| cycle_text   | t2i             | captioner, captioner_options, text_similarity,                       |
|              |                 | text_similarity_options, reference_column (+policy)                  |
| tim          | t2i (policy)    | text_column (needs the policy)                                       |
| clip_score   | t2i             | model, pretrained, device, scale, batch_size (needs open_clip_torch) |

The None / NaN rule for combining rewards is in `corl.rewards.registry`.
"""

from corl.rewards.registry import (  # noqa: I001  (registry first: the modules below register into it)
    RewardBatch,
    RewardEntry,
    RewardFn,
    RewardSet,
    build_reward,
    get_entry,
    register_factory,
    register_function,
    reward_names,
    unregister,
)
from corl.rewards import accuracy, accuracy_upstream, clip_score, cycle, format, text_image_matching  # noqa: F401,E501
from corl.rewards.accuracy import extract_choice, make_accuracy_reward, parse_options
from corl.rewards.cycle import CycleReward, make_cycle_reward
from corl.rewards.format import format_reward
from corl.rewards.text_image_matching import MatchingStatesLike, make_tim_reward, tim_raw, tim_score
from corl.rewards.text import normalize_answer

__all__ = [
    "CycleReward",
    "MatchingStatesLike",
    "RewardBatch",
    "RewardEntry",
    "RewardFn",
    "RewardSet",
    "build_reward",
    "extract_choice",
    "format_reward",
    "get_entry",
    "make_accuracy_reward",
    "make_cycle_reward",
    "make_tim_reward",
    "normalize_answer",
    "parse_options",
    "register_factory",
    "register_function",
    "reward_names",
    "tim_raw",
    "tim_score",
    "unregister",
]
