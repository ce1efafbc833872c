"""benchmarks/base_understanding_budget.py: its example mix and a --quick smoke run of every variant."""

import importlib.util
import json
from pathlib import Path

import pytest

from corl.basemodel.sft import sample_mm2t_examples
from corl.shapes.questions import question_topic

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "base_understanding_budget.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("base_understanding_budget", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exists_heavy_mix_asks_exists_in_the_share_of_oe_slots(bench):
    examples = sample_mm2t_examples(400, seed=0, make=bench.exists_heavy(0.5))
    oe = [q for _, q, s in examples if "\n" not in q]  # MC questions carry option lines
    assert len(examples) == 400 and len(oe) == 200
    exists = sum(question_topic(q) == "exists" for q in oe)
    assert 0.5 <= exists / len(oe) <= 0.75  # half by construction, plus the recipe mix's own exists questions
    excluded = {(examples[0][0].to_json(), examples[0][1])}
    again = sample_mm2t_examples(400, seed=0, exclude=excluded, make=bench.exists_heavy(0.5))
    assert (again[0][0].to_json(), again[0][1]) not in excluded


def test_reading_examples_answer_from_the_think_text_without_an_image(bench, tiny_policy):
    processor, eos = tiny_policy.processor, tiny_policy.tokens.eos_id
    examples = bench.reading_examples(processor, 40, seed=0, eos_id=eos)
    assert len(examples) == 40
    tokenizer = processor.tokenizer
    for i, (context, target) in enumerate(examples):
        prompt = tokenizer.decode(context)
        assert processor.image_token not in prompt and prompt.endswith("</think>")
        question = prompt.split("<|User|>:")[-1]
        assert question_topic(question) == bench.READING_TEMPLATES[i % len(bench.READING_TEMPLATES)]
        answer = tokenizer.decode(target[:-1]).strip()
        assert target[-1] == eos and answer.startswith("<answer>") and answer.endswith("</answer>")
        if question_topic(question) == "exists":  # "Is there a red circle ...?": yes iff the think text names it
            asked = question.split("Is there ")[1].split(" in the image")[0].split(" ", 1)[1]  # "red circle"
            named = asked in prompt.rsplit("<think>", 1)[1]  # "a red circle", "two red circles"
            assert answer == ("<answer>yes</answer>" if named else "<answer>no</answer>")


def test_quick_run_trains_each_variant_from_the_same_start(bench, tmp_path, capsys):
    out = tmp_path / "budget.json"
    variants = ["recipe", "exists-half-x2", "reading-pretrained", "question-first"]
    assert bench.main(["--quick", "--variants", *variants, "--json", str(out),
                       "--save-dir", str(tmp_path / "models")]) == 0
    results = json.loads(out.read_text())
    assert [results[v]["steps"] for v in variants] == ["2/2", "2/4", "2/2 +2r", "2/2"]
    assert results["recipe"]["reading_seconds"] == 0
    assert all(0.0 <= r["oe.accuracy"] <= 1.0 for r in results.values())
    weights = {v: (tmp_path / "models" / v / "model.safetensors").read_bytes() for v in variants}
    # same start, same SFT stream: only the reading phase makes these two differ
    assert weights["reading-pretrained"] != weights["recipe"]
    assert weights["question-first"] != weights["recipe"]  # the same examples, prompted question first
    printed = capsys.readouterr().out
    assert "sampled vs blind" in printed and "reading-pretrained" in printed
