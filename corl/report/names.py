"""Readable names for what runs write as keys (t2i.single_object, reward/mm2t/mean, time/logps): a report
says "generation: single object", never the raw key."""

from __future__ import annotations

TASKS = {"t2i": "generation", "mm2t": "understanding", "joint": "joint (generation + λ · understanding)"}
STAGES = {"unified": "unified", "t2i": "refined generation", "mc": "refined multiple choice",
          "oe": "refined open-ended", "mm2t": "understanding (MC + OE)"}
CATEGORIES = {"single_object": "single object", "two_object": "two objects", "counting": "counting",
              "colors": "colors", "position": "position", "color_attr": "color attribution"}
QUESTION_TYPES = {"mc": "multiple choice", "oe": "open-ended"}
REWARDS = {"cycle_text": "cycle, textual half", "cycle_image": "cycle, visual half", "cycle": "cycle",
           "tim": "text-image matching", "accuracy": "accuracy", "accuracy_upstream": "accuracy (official code)",
           "format": "format", "clip": "CLIP score"}
TIMES = {"image_rollout": "image rollout", "text_rollout": "answer rollout", "rollout": "rollout",
         "rewards": "rewards", "logps": "scoring (old / reference log-probs)", "update": "update"}
HEADLINE = {"t2i.overall": "generation pass rate", "mc.accuracy": "multiple-choice accuracy",
            "oe.accuracy": "open-ended accuracy", "format_rate": "answer format rate",
            "mc.accuracy_unseen": "multiple-choice accuracy, questions not trained on",
            "oe.accuracy_unseen": "open-ended accuracy, questions not trained on"}


def task(name: str) -> str:
    return TASKS.get(name, name)


def stage(name: str) -> str:
    return STAGES.get(name, name)


def category(name: str) -> str:
    return CATEGORIES.get(name, name.replace("_", " "))


def reward(name: str) -> str:
    return REWARDS.get(name, name.replace("_", " "))


def metric(key: str) -> str:
    """A result key of the Shapes suite (t2i.overall, t2i.<category>, mc.accuracy, ...)."""
    if key in HEADLINE:
        return HEADLINE[key]
    if key.startswith("t2i."):
        return f"generation: {category(key[4:])}"
    return key


def stage_list(stages: list[str] | tuple[str, ...]) -> str:
    return ", then ".join(stage(s) for s in stages)
