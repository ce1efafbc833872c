"""corl.eval.answer_benchmarks: MMStar / MMMU / POPE-style rows from tiny local parquet files, a fake policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from corl.eval.answer_benchmarks import (
    BenchmarkSpec,
    benchmark_recipes_dir,
    evaluate_benchmark,
    load_benchmark,
    parse_options,
    resolve_benchmark,
    with_options,
    yes_no_metrics,
)

from .helpers import FakePolicy, image, write_parquet


@pytest.fixture
def mmstar_file(tmp_path: Path) -> Path:
    """MMStar's hub layout: options inline in the question, letter answers, a category column."""
    return write_parquet(
        tmp_path / "mmstar.parquet",
        {
            "index": ["0", "1", "2", "3"],
            "question": [
                "What is the main color?\nOptions: A: red, B: blue, C: green, D: black",
                "How many cups are there?\nOptions: A: one, B: two, C: three, D: four",
                "Which animal is shown?\nOptions: A: cat, B: dog, C: bird, D: fish",
                "Which direction does the arrow point?\nOptions: A: up, B: down, C: left, D: right",
            ],
            "image": [image((200, 0, 0)), image((0, 0, 200)), image((0, 200, 0)), image((9, 9, 9))],
            "answer": ["A", "C", "B", "D"],
            "category": ["coarse perception", "fine-grained perception", "coarse perception", "math"],
            "l2_category": ["image scene and topic", "object counting", "recognition", "geometry"],
        },
    )


@pytest.fixture
def mmmu_file(tmp_path: Path) -> Path:
    """MMMU's hub layout: options as a Python list literal, mixed question types, subject in the id."""
    return write_parquet(
        tmp_path / "mmmu.parquet",
        {
            "id": [
                "validation_Accounting_1",
                "validation_Art_Theory_3",
                "validation_Math_7",
                "validation_Math_8",
            ],
            "question": [
                "<image 1> Which entry balances the sheet?",
                "Who painted <image 1>?",
                "What is the area of the triangle in <image 1>?",
                "Compute x in <image 1>.",
            ],
            "options": [
                "['debit cash', 'credit cash', 'debit revenue']",
                "['Monet', 'Turner', 'Constable', 'Goya']",
                "[]",
                "[]",
            ],
            "image_1": [image((1, 2, 3)), image((4, 5, 6)), image((7, 8, 9)), image((10, 11, 12))],
            "image_2": [None, None, None, None],
            "answer": ["B", "A", "12", "['3.5', '7/2']"],
            "question_type": ["multiple-choice", "multiple-choice", "open", "open"],
            "subfield": ["Financial", "Painting", "Geometry", "Algebra"],
        },
        image_columns=("image_1", "image_2"),
    )


@pytest.fixture
def pope_file(tmp_path: Path) -> Path:
    return write_parquet(
        tmp_path / "pope.parquet",
        {
            "question_id": ["1", "2", "3", "4", "5"],
            "question": [f"Is there a {o} in the image?" for o in ("dog", "car", "cup", "tree", "bus")],
            "answer": ["yes", "no", "yes", "no", "yes"],
            "image_source": ["a", "b", "c", "d", "e"],
            "image": [image((i * 40, 0, 0)) for i in range(5)],
            "category": ["adversarial", "adversarial", "popular", "random", "random"],
        },
    )


def answers(mapping: dict[str, str], default: str = "<think>.</think><answer>no idea</answer>"):
    """A fake answer function: the first key found in the question decides the completion."""

    def answer(question: str) -> str:
        return next((v for k, v in mapping.items() if k in question), default)

    return answer


def test_shipped_recipes_parse():
    names = sorted(p.stem for p in benchmark_recipes_dir().glob("*.yaml"))
    assert names == ["mmmu", "mmstar", "pope"]
    for name in names:
        spec = resolve_benchmark(name)
        assert spec.name == name and spec.source and {"image", "question", "solution"} <= set(spec.column_map)
    with pytest.raises(FileNotFoundError, match="shipped: mmmu, mmstar, pope"):
        resolve_benchmark("mmbench")


def test_mmstar_inline_options(mmstar_file):
    spec = resolve_benchmark("mmstar")
    loaded = load_benchmark(spec, source=str(mmstar_file))
    assert [r.question_type for r in loaded.rows] == ["mc"] * 4
    policy = FakePolicy(
        answer_fn=answers(
            {
                "main color": "<think>red</think><answer>A</answer>",
                "cups": "<think>3</think><answer>three</answer>",  # option text -> C
                "animal": "<think>.</think><answer>cat</answer>",  # wrong (B is dog)
                "arrow": "The answer is D",  # no tags: wrong, unformatted
            }
        )
    )
    result = evaluate_benchmark(policy, loaded, batch_size=3, return_details=True)
    assert (result["accuracy"], result["n"], result["mc.n"], result["oe.n"]) == (0.5, 4, 4, 0)
    assert result["format_rate"] == 0.75
    assert result["categories"] == {
        "coarse perception": {"accuracy": 0.5, "n": 2},
        "fine-grained perception": {"accuracy": 1.0, "n": 1},
        "math": {"accuracy": 0.0, "n": 1},
    }
    assert policy.answer_calls[0]["questions"][0].startswith("What is the main color?\nOptions: A: red")
    assert all(c["greedy"] for c in policy.answer_calls)


def test_mmmu_mixed_types_options_and_subjects(mmmu_file):
    loaded = load_benchmark(resolve_benchmark("mmmu"), source=str(mmmu_file))
    assert sorted(r.question_type for r in loaded.rows) == ["mc", "mc", "oe", "oe"]
    assert loaded.skipped == {}  # the other type's rows of each load are not reported as skipped
    mc = next(r for r in loaded.rows if "balances" in r.question)
    assert mc.question == (
        "<image 1> Which entry balances the sheet?\nA. debit cash\nB. credit cash\nC. debit revenue"
    )
    assert next(r for r in loaded.rows if "Compute" in r.question).solution == ["3.5", "7/2"]
    assert sorted(r.category for r in loaded.rows) == ["Accounting", "Art_Theory", "Math", "Math"]
    policy = FakePolicy(
        answer_fn=answers(
            {
                "balances": "<think>.</think><answer>credit cash</answer>",  # option text of B: right
                "painted": "<think>.</think><answer>B</answer>",  # wrong (A)
                "area": "<think>.</think><answer>twelve</answer>",  # number word == 12: right
                "Compute": "<think>.</think><answer>7/2</answer>",  # second acceptable answer: right
            }
        )
    )
    result = evaluate_benchmark(policy, loaded)
    assert (result["mc.accuracy"], result["oe.accuracy"], result["accuracy"]) == (0.5, 1.0, 0.75)
    assert result["categories"]["Math"] == {"accuracy": 1.0, "n": 2}


def test_mc_only_run_of_a_mixed_benchmark(mmmu_file):
    import dataclasses

    spec = dataclasses.replace(resolve_benchmark("mmmu"), question_type="mc")
    loaded = load_benchmark(spec, source=str(mmmu_file))
    assert len(loaded.rows) == 2 and loaded.skipped == {"wrong_question_type": 2}


def test_pope_binary_metrics(pope_file):
    loaded = load_benchmark(resolve_benchmark("pope"), source=str(pope_file))
    policy = FakePolicy(
        answer_fn=answers(
            {
                "dog": "<think>.</think><answer>Yes</answer>",  # TP
                "car": "<think>.</think><answer>yes</answer>",  # FP
                "cup": "<think>.</think><answer>no</answer>",  # FN
                "tree": "<think>.</think><answer>No.</answer>",  # TN
                "bus": "<think>.</think><answer>maybe</answer>",  # neither
            }
        )
    )
    result = evaluate_benchmark(policy, loaded)
    assert result["accuracy"] == pytest.approx(2 / 5)
    assert result["yes_no"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5, "n_other": 1}
    assert result["categories"]["random"] == {"accuracy": 0.5, "n": 2}


def test_max_rows_and_ad_hoc_spec(pope_file):
    spec = BenchmarkSpec(
        name="yesno", source=str(pope_file), question_type="oe", column_map={"solution": "answer"}
    )
    result = evaluate_benchmark(FakePolicy(), spec, max_rows=2)
    assert result["n"] == 2 and result["accuracy"] == 0.0 and result["categories"] == {}


def test_options_helpers_and_spec_errors():
    assert parse_options("['a', 'b']") == ["a", "b"] and parse_options(["x", 3]) == ["x", "3"]
    assert parse_options("[]") == [] and parse_options(None) == []
    with pytest.raises(ValueError, match="not a list literal"):
        parse_options("a, b")
    assert with_options("Q?", ["x", "y"]) == "Q?\nA. x\nB. y"
    with pytest.raises(ValueError, match="question_type"):
        BenchmarkSpec(name="x", source="y", question_type="yes_no")
    with pytest.raises(ValueError, match="mixed benchmark"):
        BenchmarkSpec(name="x", source="y")
    with pytest.raises(ValueError, match="unknown benchmark keys"):
        BenchmarkSpec.from_dict({"name": "x", "source": "y", "question_type": "mc", "colum_map": {}})
    with pytest.raises(ValueError, match="capture group"):
        BenchmarkSpec(name="x", source="y", question_type="mc", category_column="id", category_pattern="a+")


def test_yes_no_metrics_hand_computed():
    m = yes_no_metrics(["yes", "yes", "yes", "no", None], ["yes", "yes", "no", "yes", "no"])
    assert (m["precision"], m["recall"], m["n_other"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 1)
    assert m["f1"] == pytest.approx(2 / 3) and m["yes_ratio"] == 0.75
