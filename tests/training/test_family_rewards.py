"""The reward stacks of the two Janus-Pro families, built from their recipes the way the trainer builds
them, with tiny stand-ins for the hub models (BLIP, a 12-layer BERT, LPIPS's real heads on a random
backbone): each reward equals the value computed from its parts by hand."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from corl.config import load_config, resolve_recipe
from corl.policy import JanusPolicy
from corl.policy.testing import tiny_janus

pytest.importorskip("lpips", reason="the janus extra (pip install 'corl[janus]') is not installed")
torch.set_num_threads(2)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    from corl.rewards.testing import save_tiny_bert, save_tiny_blip

    folder = tmp_path_factory.mktemp("stand_ins")
    return {"blip": save_tiny_blip(folder / "blip"), "bert": save_tiny_bert(folder / "bert", num_layers=12)}


def family_rewards(family: str, stand_ins: dict, policy: JanusPolicy):
    from corl.training.setup import build_rewards

    cfg = load_config(resolve_recipe(f"janus-pro-1b/{family}/unified"), [
        f"rewards.captioner_model={stand_ins['blip']}", f"rewards.text_similarity_model={stand_ins['bert']}",
        "rewards.reward_kwargs={cycle: {visual_options: {pretrained_backbone: false}}}"])
    torch.manual_seed(0)  # LPIPS's random backbone
    return build_rewards(cfg, policy, torch.device("cpu"))


@pytest.mark.parametrize("family", ["paper", "official"])
def test_t2i_rewards_are_the_sum_of_the_cycle_halves_plus_raw_tim(family, stand_ins):
    from corl.rewards.captioners import BlipCaptioner
    from corl.rewards.image_similarity import LPIPSSimilarity
    from corl.rewards.text_image_matching import matching_states, tim_raw
    from corl.rewards.text_similarity import make_text_similarity

    model, processor = tiny_janus(0)
    policy = JanusPolicy(model, processor)
    rewards = family_rewards(family, stand_ins, policy)["t2i"]
    captions = ["a red circle", "two blue squares"]
    generated = [Image.new("RGB", (32, 32), (200, 30, 30)), Image.new("RGB", (32, 32), (40, 200, 40))]
    real = [Image.new("RGB", (32, 32), (210, 20, 20)), Image.new("RGB", (32, 32), (20, 20, 210))]
    batch = rewards(captions, generated, image=real)

    torch.manual_seed(0)
    visual = LPIPSSimilarity(net="vgg", size=(224, 224), pretrained_backbone=False)(real, generated)
    texts = BlipCaptioner(model=str(stand_ins["blip"]), max_new_tokens=50)(generated)
    text = make_text_similarity("bertscore", model=str(stand_ins["bert"]), num_layers=12)(texts, captions)
    tim = tim_raw(matching_states(policy, generated, captions)).tolist()
    for i in range(2):
        assert batch.values["cycle"][i] == pytest.approx(visual[i] + text[i], abs=1e-5)  # Eq. 3: a sum
        assert batch.values["tim"][i] == pytest.approx(tim[i], abs=1e-5)  # raw cosine score
        assert batch.total[i] == pytest.approx(visual[i] + text[i] + tim[i], abs=1e-5)
    assert -1.0 <= min(tim) and max(batch.values["cycle"]) <= 2.0


def test_accuracy_is_binary_in_the_paper_family_and_soft_in_the_official_one(stand_ins):
    model, processor = tiny_janus(0)
    policy = JanusPolicy(model, processor)
    completions = ["<think>x</think><answer>blue square</answer>", "blue square", "<think>x</think><answer>2</answer>"]
    columns = {"solution": ["<answer>blue squares</answer>"] * 2 + ["<answer>two</answer>"],
               "question": ["What is it?"] * 3, "question_type": ["oe"] * 3}
    paper = family_rewards("paper", stand_ins, policy)["mm2t"](["q"] * 3, completions, **columns)
    official = family_rewards("official", stand_ins, policy)["mm2t"](["q"] * 3, completions, **columns)
    soft = (1 + 12 / 13) / (4 - (1 + 12 / 13))  # {blue} exact, square ~ squares (difflib ratio 12/13)
    assert paper.values["accuracy"] == [0.0, 0.0, 1.0]  # no partial credit, the tag required
    assert official.values["accuracy_upstream"] == [pytest.approx(soft), pytest.approx(soft), 1.0]
    assert paper.values["format"] == official.values["format"] == [1.0, 0.0, 1.0]
