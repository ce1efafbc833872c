"""corl.eval.shapes_suite: generation pass rates per category, MC / OE accuracy, format rate."""

from __future__ import annotations

import pytest

from corl.eval.shapes_suite import evaluate_shapes
from corl.shapes import CATEGORIES, Scene
from corl.shapes.questions import QUESTION_TOPICS, question_topic

from .helpers import FakePolicy

FORMATTED = "<think>I look at the image.</think><answer>{}</answer>"


def correct_answers(solutions):
    def answer(question: str) -> str:
        return "<think>I look at the image.</think>" + solutions[question]

    return answer


def test_perfect_policy_scores_one_everywhere(shapes_split, scenes_by_caption, solutions_by_question):
    policy = FakePolicy(scenes_by_caption, correct_answers(solutions_by_question))
    result = evaluate_shapes(policy, shapes_split, images_per_prompt=2, batch_size=5, model_path="m")
    present = sorted(set(shapes_split["category"]))
    assert sorted(k[len("t2i.") :] for k in result if k.startswith("t2i.") and k[4:] in CATEGORIES) == present
    assert result["t2i.overall"] == 1.0
    assert all(result[f"t2i.{c}"] == 1.0 for c in present)
    assert result["t2i.n_images"] == 2 * len(shapes_split)
    n_mc = sum(t == "mc" for t in shapes_split["question_type"])
    assert (result["mc.accuracy"], result["mc.n"]) == (1.0, n_mc)
    assert (result["oe.accuracy"], result["oe.n"]) == (1.0, len(shapes_split) - n_mc)
    assert result["format_rate"] == 1.0
    settings = result["settings"]
    assert settings == {
        **settings,
        "model": "m",
        "n_rows": 12,
        "images_per_prompt": 2,
        "cfg_weight": 5.0,
        "seed": 0,
        "greedy": True,
    }
    assert "details" not in result


def test_policy_calls_follow_settings(shapes_split, scenes_by_caption):
    policy = FakePolicy(scenes_by_caption)
    evaluate_shapes(
        policy, shapes_split, images_per_prompt=3, cfg_weight=2.5, seed=7, batch_size=5, max_new_tokens=64
    )
    assert [len(c["captions"]) for c in policy.image_calls] == [5, 5, 2]
    assert {(c["n"], c["cfg_weight"], c["temperature"]) for c in policy.image_calls} == {(3, 2.5, 1.0)}
    assert len({c["seed"] for c in policy.image_calls}) == 3  # one distinct seed per batch
    assert [c["captions"][0] for c in policy.image_calls] == [shapes_split[i]["prompt"] for i in (0, 5, 10)]
    assert all(c["greedy"] and c["max_new_tokens"] == 64 for c in policy.answer_calls)
    assert sum(len(c["questions"]) for c in policy.answer_calls) == 12


def test_failures_are_counted_per_category_and_overall_is_mean_of_categories(shapes_split):
    # Only position and counting captions get a render; everything else is a blank image (fails).
    scenes = {
        r["prompt"]: Scene.from_json(r["scene"])
        for r in shapes_split
        if r["category"] in ("position", "counting")
    }
    policy = FakePolicy(scenes)
    result = evaluate_shapes(policy, shapes_split, images_per_prompt=1, batch_size=4)
    present = set(shapes_split["category"])
    for c in present:
        assert result[f"t2i.{c}"] == (1.0 if c in ("position", "counting") else 0.0)
    assert result["t2i.overall"] == pytest.approx(2 / len(present))


def test_mixed_answers_give_exact_accuracies(shapes_split, solutions_by_question):
    rows = list(shapes_split)
    mc_rows = [r for r in rows if r["question_type"] == "mc"]
    oe_rows = [r for r in rows if r["question_type"] == "oe"]
    right = {mc_rows[0]["question"], mc_rows[1]["question"], oe_rows[0]["question"]}

    def answer(question: str) -> str:
        if question in right:
            return "<think>ok</think>" + solutions_by_question[question]
        if question in {r["question"] for r in mc_rows}:
            return FORMATTED.format("Z")  # formatted, but names no option
        return "the answer is " + "purple elephant"  # no tags: wrong and unformatted

    result = evaluate_shapes(FakePolicy({}, answer), shapes_split, images_per_prompt=1, return_details=True)
    assert result["mc.accuracy"] == pytest.approx(2 / len(mc_rows))
    assert result["oe.accuracy"] == pytest.approx(1 / len(oe_rows))
    n_formatted = len(mc_rows) + 1
    assert result["format_rate"] == pytest.approx(n_formatted / len(rows))
    details = result["details"]
    assert len(details) == len(rows)
    first_right = next(d for d in details if d["question"] == oe_rows[0]["question"])
    assert first_right["correct"] == 1.0 and first_right["formatted"]
    assert (
        first_right["extracted"]
        == solutions_by_question[oe_rows[0]["question"]][len("<answer>") : -len("</answer>")]
    )
    assert all(d["t2i_passed"] == [False] and d["t2i_reasons"][0] for d in details)  # blank images fail
    # per question template: counts add up to each format's rows, the one right OE answer sits in its topic
    for kind, kind_rows in (("mc", mc_rows), ("oe", oe_rows)):
        by_topic = result[f"{kind}.by_topic"]
        assert set(by_topic) <= set(QUESTION_TOPICS)
        assert sum(t["n"] for t in by_topic.values()) == len(kind_rows)
    oe_topic = question_topic(oe_rows[0]["question"])
    assert first_right["topic"] == oe_topic
    n_topic = sum(question_topic(r["question"]) == oe_topic for r in oe_rows)
    assert result["oe.by_topic"][oe_topic] == {"accuracy": pytest.approx(1 / n_topic), "n": n_topic}
    assert all(t["accuracy"] == 0.0 for name, t in result["oe.by_topic"].items() if name != oe_topic)


def test_option_text_answer_counts_for_mc(shapes_split):
    row = next(r for r in shapes_split if r["question_type"] == "mc")
    letter = row["solution"][len("<answer>")]
    option_text = next(line[3:] for line in row["question"].splitlines() if line.startswith(f"{letter}. "))
    policy = FakePolicy({}, lambda q: FORMATTED.format(option_text) if q == row["question"] else "")
    result = evaluate_shapes(policy, [row], images_per_prompt=1)
    assert (result["mc.accuracy"], result["mc.n"], result["oe.accuracy"], result["oe.n"]) == (1.0, 1, None, 0)


def test_deterministic_for_a_seed(shapes_split, scenes_by_caption):
    def run(seed):
        policy = FakePolicy(scenes_by_caption, fail_rate=0.5)
        res = evaluate_shapes(policy, shapes_split, images_per_prompt=4, seed=seed, return_details=True)
        return [d["t2i_passed"] for d in res["details"]], res["t2i.overall"]

    assert run(3) == run(3)
    assert run(3)[0] != run(4)[0]


def test_max_rows_and_image_dir(shapes_split, scenes_by_caption, tmp_path):
    policy = FakePolicy(scenes_by_caption)
    result = evaluate_shapes(
        policy, shapes_split, images_per_prompt=2, max_rows=3, image_dir=tmp_path / "imgs"
    )
    assert result["settings"]["n_rows"] == 3 and result["t2i.n_images"] == 6
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == [
        f"row{i:05d}_{j}.png" for i in range(3) for j in range(2)
    ]


def test_bad_inputs_raise(shapes_split, scenes_by_caption):
    class Short(FakePolicy):
        def generate_images(self, captions, n, **kwargs):
            return super().generate_images(captions, n, **kwargs)[:-1]

    with pytest.raises(ValueError, match="returned 3 images, expected 4"):
        evaluate_shapes(Short(scenes_by_caption), shapes_split, images_per_prompt=2, max_rows=2)
    with pytest.raises(KeyError, match="scene"):
        evaluate_shapes(FakePolicy(), [{"prompt": "x", "image": None, "question": "q", "solution": "s"}])
    with pytest.raises(ValueError, match="images_per_prompt"):
        evaluate_shapes(FakePolicy(), shapes_split, images_per_prompt=0)


def test_runs_with_the_real_janus_policy_class(shapes_split):
    """The suite's calls match corl.generation.rollout's functions on a real JanusPolicy (a tiny random Janus;
    the numbers are noise)."""
    torch = pytest.importorskip("torch")
    testing = pytest.importorskip("corl.policy.testing")
    from corl.policy import JanusPolicy

    torch.set_num_threads(2)
    model, processor = testing.tiny_janus(0)
    rows = [shapes_split[i] for i in range(2)]
    result = evaluate_shapes(
        JanusPolicy(model, processor),
        rows,
        images_per_prompt=1,
        batch_size=2,
        max_new_tokens=4,
        return_details=True,
    )
    assert result["t2i.n_images"] == 2 and result["mc.n"] + result["oe.n"] + result["mm2t.n_unscorable"] == 2
    assert all(isinstance(d["completion"], str) for d in result["details"])
