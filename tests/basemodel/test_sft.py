from __future__ import annotations

import torch

from corl.basemodel.sft import (
    SFTConfig,
    build_mm2t_pool,
    build_t2i_pool,
    completion_for,
    is_counting_question,
    left_pad,
    option_text_answer,
    right_pad,
    sample_mm2t_examples,
    sample_t2i_examples,
    train_sft,
)
from corl.policy.policy import JanusPolicy
from corl.policy.prompts import PromptStyle
from corl.policy.testing import tiny_janus
from corl.rewards.accuracy import answer_span
from corl.rewards.format import has_think_answer_format
from corl.shapes.questions import parse_mc_options
from corl.shapes.scene import Scene, ShapeObject


def counting_scene() -> Scene:
    objs = (ShapeObject("circle", "red", 0, 0), ShapeObject("circle", "red", 0, 2))
    return Scene(objs, "counting", named_colors=True)


def test_completions_on_and_off_format():
    on = completion_for(counting_scene(), "<answer>two</answer>", on_format=True)
    off = completion_for(counting_scene(), "<answer>two</answer>", on_format=False)
    assert on == "<think>I see two red circles.</think><answer>two</answer>"
    assert has_think_answer_format(on) and not has_think_answer_format(off)
    assert answer_span(on) == answer_span(off) == "two"
    assert is_counting_question("How many circles are there?") and not is_counting_question("Is there a circle?")


def test_example_streams_are_seeded_and_skip_excluded_pairs():
    first = sample_t2i_examples(20, seed=3)
    assert [(c, s.to_json()) for c, s in first] == [(c, s.to_json()) for c, s in sample_t2i_examples(20, seed=3)]
    excluded = {(c, s.to_json()) for c, s in first[:5]}
    again = sample_t2i_examples(20, seed=3, exclude=excluded)
    assert len(again) == 20 and not excluded & {(c, s.to_json()) for c, s in again}

    questions = sample_mm2t_examples(10, seed=3)
    assert [q for _, q, _ in questions[::2]] and all(q for _, q, _ in questions)
    mm_excluded = {(s.to_json(), q) for s, q, _ in questions[:4]}
    kept = sample_mm2t_examples(10, seed=3, exclude=mm_excluded)
    assert not mm_excluded & {(s.to_json(), q) for s, q, _ in kept}


def test_padding_helpers():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = right_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def tiny_policy(seed: int = 0) -> JanusPolicy:
    model, processor = tiny_janus(seed, image_size=32, patch_size=8)  # 16 image tokens
    return JanusPolicy(model, processor)


def test_pools_follow_the_format_rule_and_end_with_eos():
    policy = tiny_policy()
    config = SFTConfig(off_format_counting=1.0, off_format_other=0.0)
    examples = sample_mm2t_examples(12, seed=0)
    pool = build_mm2t_pool(policy, examples, image_size=32, config=config)
    assert pool.on_format == [not is_counting_question(q) for _, q, _ in examples]
    assert all(ids[-1] == policy.tokens.eos_id for ids in pool.completion_ids)
    assert pool.pixel_values.shape == (12, 3, 32, 32)
    assert all(ids.count(policy.tokens.image_token_id) == 16 for ids in pool.prompt_ids)

    t2i = build_t2i_pool(policy, sample_t2i_examples(5, seed=0), image_size=32)
    assert t2i.codes.shape == (5, 16) and all(ids[-1] == policy.tokens.boi_id for ids in t2i.prompt_ids)


def test_mm2t_pool_prompts_follow_the_policys_prompt_style():
    policy = tiny_policy()
    examples = sample_mm2t_examples(3, seed=0)
    config = SFTConfig()
    image_first = build_mm2t_pool(policy, examples, image_size=32, config=config)
    policy.style = PromptStyle(image_first=False)
    question_first = build_mm2t_pool(policy, examples, image_size=32, config=config)
    tokenizer, image_id = policy.processor.tokenizer, policy.tokens.image_token_id
    for (_, question, _), before, after in zip(examples, image_first.prompt_ids, question_first.prompt_ids):
        word = question.split()[0]  # "What", "How", "Is", ...
        for ids, image_leads in ((before, True), (after, False)):
            text = tokenizer.decode(ids)
            assert (text.index(tokenizer.decode([image_id])) < text.index(word)) == image_leads
        assert sorted(before) == sorted(after)  # the same tokens, in another order


def test_option_text_answer_names_the_solution_option():
    question = "What color is the circle?\nA. green\nB. red\nC. blue"
    assert option_text_answer(question, "<answer>C</answer>") == "<answer>blue</answer>"


def test_mc_targets_answer_with_option_text_at_the_configured_share():
    """mc_option_text = 1: every MC target names its option's text; 0: every one is the letter."""
    examples = sample_mm2t_examples(40, seed=0)
    mc = [(question, solution) for _, question, solution in examples if parse_mc_options(question)]
    assert mc
    policy = tiny_policy()
    for share in (0.0, 1.0):
        pool = build_mm2t_pool(policy, examples, image_size=32, config=SFTConfig(mc_option_text=share))
        texts = [
            policy.processor.tokenizer.decode(ids[:-1], skip_special_tokens=False).replace(" ", "")
            for ids, (_, question, _) in zip(pool.completion_ids, examples)
            if parse_mc_options(question)
        ]
        for text, (question, solution) in zip(texts, mc):
            want = option_text_answer(question, solution) if share else solution
            assert text.endswith(want.replace(" ", "")), (text, want)


def test_sft_trains_everything_but_the_vq_model():
    policy = tiny_policy()
    t2i = build_t2i_pool(policy, sample_t2i_examples(6, seed=0), image_size=32)
    config = SFTConfig(t2i_steps=3, mm2t_steps=2, t2i_batch_size=3, mm2t_batch_size=2, warmup_steps=1,
                       uncond_fraction=0.5)
    mm2t = build_mm2t_pool(policy, sample_mm2t_examples(6, seed=0), image_size=32, config=config)
    before = {name: p.detach().clone() for name, p in policy.model.named_parameters()}
    report = train_sft(policy, t2i, mm2t, config)
    assert report["steps"] == 3 and report["final_t2i_loss"] > 0 and report["final_mm2t_loss"] > 0
    changed = {n for n, p in policy.model.named_parameters() if not torch.equal(p, before[n])}
    for prefix in ("model.language_model.", "lm_head.", "model.vision_model.", "model.aligner.",
                   "model.generation_embeddings.", "model.generation_aligner.", "model.generation_head."):
        assert any(n.startswith(prefix) for n in changed), prefix
    assert not any(n.startswith("model.vqmodel.") for n in changed)
    assert not policy.model.training
