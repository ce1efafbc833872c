"""corl.eval.shapes_suite: generation pass rates per category, MC / OE accuracy, format rate."""

from __future__ import annotations

import pytest

from corl.eval.grading import score_answer
from corl.eval.shapes_suite import evaluate_shapes, question_form, sampled_by_topic, unseen_accuracy
from corl.shapes import CATEGORIES, Scene
from corl.shapes.captions import think_text
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
    assert result["oe.by_topic"][oe_topic] == {"accuracy": pytest.approx(1 / n_topic), "n": n_topic,
                                               "think_match": 0.0}  # "ok" does not describe the image
    assert all(t["accuracy"] == 0.0 for name, t in result["oe.by_topic"].items() if name != oe_topic)


def test_think_match_compares_each_think_text_with_its_image(shapes_split, solutions_by_question):
    rows = list(shapes_split)
    # the policy sees the question only: its think describes the scene of the last row asking it
    scene_of = {r["question"]: Scene.from_json(r["scene"]) for r in rows}
    right_think = {r["question"] for r in rows[::2]}
    no_think = rows[1]["question"]

    def think_of(question: str) -> str | None:
        if question == no_think:
            return None
        return think_text(scene_of[question]) if question in right_think else "I see a red circle and a blue moon."

    def answer(question: str) -> str:
        think = think_of(question)
        prefix = "" if think is None else f"<think> {think}</think>"  # whitespace does not matter
        return prefix + solutions_by_question[question]

    result = evaluate_shapes(FakePolicy({}, answer), shapes_split, images_per_prompt=1, return_details=True)
    expected = [None if think_of(r["question"]) is None
                else think_of(r["question"]) == think_text(Scene.from_json(r["scene"])) for r in rows]
    assert 0 < sum(e is True for e in expected) < sum(e is not None for e in expected)
    assert [d["think_match"] for d in result["details"]] == expected
    known = [e for e in expected if e is not None]
    assert result["think_match"] == pytest.approx(sum(known) / len(known))
    for kind in ("mc", "oe"):
        for topic, entry in result[f"{kind}.by_topic"].items():
            mine = [e for r, e in zip(rows, expected) if e is not None and r["question_type"] == kind
                    and question_topic(r["question"]) == topic]
            assert entry["think_match"] == (pytest.approx(sum(mine) / len(mine)) if mine else None)


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


class AlternatingSampler(FakePolicy):
    """Greedy: always wrong. Sampled: right on every other answer of each question, or (for the questions
    in `always_right`) always right."""

    def __init__(self, solutions, always_right=frozenset()):
        super().__init__({})
        self.solutions, self.always_right, self.seen = solutions, always_right, {}

    def answer(self, images, questions, *, greedy=True, max_new_tokens=256, temperature=1.0, seed=None):
        super().answer(images, questions, greedy=greedy, max_new_tokens=max_new_tokens, temperature=temperature,
                       seed=seed)
        out = []
        for q in questions:
            self.seen[q] = self.seen.get(q, 0) + (not greedy)
            right = not greedy and (q in self.always_right or self.seen[q] % 2 == 1)
            out.append(FORMATTED.format("nothing") if not right else "<think>ok</think>" + self.solutions[q])
        return out


def test_sampled_answers_give_accuracy_and_contrast_per_template(shapes_split, solutions_by_question):
    rows = list(shapes_split)
    oe_rows = [r for r in rows if r["question_type"] == "oe"]
    sure = oe_rows[0]["question"]
    policy = AlternatingSampler(solutions_by_question, always_right={sure})
    result = evaluate_shapes(policy, shapes_split, images_per_prompt=1, batch_size=5, answer_samples=4)
    assert result["oe.accuracy"] == 0.0 and result["settings"]["answer_samples"] == 4
    sampled = [c for c in policy.answer_calls if not c["greedy"]]
    assert sum(len(c["questions"]) for c in sampled) == 4 * len(rows)  # k answers per question
    assert all(c["temperature"] == 1.0 for c in sampled) and len({c["seed"] for c in sampled}) == len(sampled)
    oe = result["oe.sampled_by_topic"]
    assert oe["all"]["n"] == len(oe_rows)
    # every row: 2 of 4 right (contrast), but the always-right row has no contrast and accuracy 1
    assert oe["all"]["accuracy"] == pytest.approx((0.5 * (len(oe_rows) - 1) + 1.0) / len(oe_rows))
    assert oe["all"]["contrast"] == pytest.approx((len(oe_rows) - 1) / len(oe_rows))
    topic = question_topic(sure)
    assert sum(t["n"] for name, t in oe.items() if name != "all") == len(oe_rows)
    assert oe[topic]["contrast"] < 1.0 and result["mc.sampled_by_topic"]["all"]["contrast"] == 1.0


def test_no_sampled_answers_by_default(shapes_split, solutions_by_question):
    policy = AlternatingSampler(solutions_by_question)
    result = evaluate_shapes(policy, shapes_split, images_per_prompt=1)
    assert "oe.sampled_by_topic" not in result and all(c["greedy"] for c in policy.answer_calls)
    with pytest.raises(ValueError, match="answer_samples"):
        evaluate_shapes(policy, shapes_split, images_per_prompt=1, answer_samples=-1)


def exists_rows():
    """Four 'Is there ...?' rows, answers yes, yes, yes, no."""
    question = "Is there a red circle in the image?"
    return [{"question": question, "solution": f"<answer>{a}</answer>", "question_type": "oe"}
            for a in ("yes", "yes", "yes", "no")]


def scored(rows, answers_per_row):
    return [[score_answer(f"<answer>{a}</answer>", r["solution"], r["question"], r["question_type"]) for a in answers]
            for r, answers in zip(rows, answers_per_row)]


def test_an_answerer_that_ignores_the_image_has_no_lift():
    rows = exists_rows()
    sampled = scored(rows, [["yes", "yes", "no", "yes"]] * 4)  # the same answers whatever the image
    stats = sampled_by_topic(rows, sampled, ["oe"] * 4, ["exists"] * 4, "oe")["exists"]
    assert stats["accuracy"] == pytest.approx(stats["blind"]) == pytest.approx((3 * 0.75 + 0.25) / 4)
    assert stats["contrast"] == 1.0  # every group has a reward difference, yet nothing depends on the image


def test_an_answerer_that_reads_the_image_beats_the_blind_one():
    rows = exists_rows()
    sampled = scored(rows, [["yes", "yes"], ["yes", "no"], ["yes", "yes"], ["no", "no"]])
    stats = sampled_by_topic(rows, sampled, ["oe"] * 4, ["exists"] * 4, "oe")
    assert stats["exists"]["accuracy"] == pytest.approx(0.875)
    # each row's blind answer is drawn from the other rows' samples: yes 3/6, 4/6, 3/6 on the yes rows, no 1/6
    assert stats["exists"]["blind"] == pytest.approx((3 / 6 + 4 / 6 + 3 / 6 + 1 / 6) / 4)
    assert stats["exists"]["contrast"] == pytest.approx(0.25)
    assert stats["all"] == stats["exists"]


def test_question_form_masks_object_words_and_keeps_the_asked_axis():
    assert question_form("Is the red circle above or below the blue square?") == "Is the _ _ above or below the _ _?"
    assert question_form("How many triangles are there?") == "How many _ are there?"
    assert question_form("What color is the circle?") != question_form("What color are the circles?")


def test_the_blind_answerer_knows_which_axis_a_side_question_names():
    """A model that answers the first option named, whatever the image: side questions look image-read to a
    blind answerer pooling both axes, not to one that reads the question's form."""
    rows = [{"question": f"Is the red circle {axis} the blue square?", "solution": f"<answer>{sol}</answer>",
             "question_type": "oe"}
            for axis, sol in [("above or below", "above"), ("above or below", "below"), ("above or below", "above"),
                              ("to the left or to the right of", "left"), ("to the left or to the right of", "right"),
                              ("to the left or to the right of", "left")]]
    first_option = [["above"] * 4 if "above" in r["question"] else ["left"] * 4 for r in rows]
    stats = sampled_by_topic(rows, scored(rows, first_option), ["oe"] * 6, ["side"] * 6, "oe")["side"]
    assert stats["accuracy"] == pytest.approx(4 / 6)
    assert stats["blind"] == pytest.approx(stats["accuracy"])  # no lift: the answers read only the question


def test_the_blind_answerer_reuses_mc_answers_as_the_letters_they_name():
    """Option texts differ between questions; a blind answerer that always names the first option is right
    wherever the solution is A, whichever text A has."""
    rows = [{"question": f"What color is the circle?\nA. {a}\nB. {b}\nC. {c}\nD. {d}", "solution": f"<answer>{sol}</answer>",
             "question_type": "mc"}
            for a, b, c, d, sol in [("red", "blue", "green", "yellow", "A"), ("green", "red", "blue", "purple", "B"),
                                    ("blue", "yellow", "red", "green", "A"), ("purple", "green", "yellow", "red", "C")]]
    first_option_text = [[r["question"].splitlines()[1][3:]] * 2 for r in rows]  # e.g. "red" for "A. red"
    stats = sampled_by_topic(rows, scored(rows, first_option_text), ["mc"] * 4, ["color"] * 4, "mc")["color"]
    assert stats["accuracy"] == pytest.approx(0.5)
    assert stats["blind"] == pytest.approx(0.5)  # as letters: always A, right on the two A rows


def test_unseen_accuracy_leaves_out_the_questions_training_saw():
    rows = {"scene": ["s0", "s1", "s2", "s3", "s4"], "question": ["q0", "q1", "q2", "q3", "q4"]}
    details = [{"index": 0, "question_type": "oe", "correct": 1.0},   # seen in training
               {"index": 1, "question_type": "oe", "correct": 0.0},
               {"index": 2, "question_type": "oe", "correct": 1.0},
               {"index": 3, "question_type": "mc", "correct": None},  # unscorable: left out as mc.accuracy does
               {"index": 4, "question_type": "mc", "correct": 1.0}]
    seen = {("s0", "q0"), ("s1", "another question"), ("s4", "q4")}
    assert unseen_accuracy({"details": details}, rows, seen) == {"oe.accuracy_unseen": 0.5, "oe.n_unseen": 2}
    assert unseen_accuracy({"details": details}, rows, set()) == {
        "mc.accuracy_unseen": 1.0, "mc.n_unseen": 1, "oe.accuracy_unseen": 2 / 3, "oe.n_unseen": 3}
