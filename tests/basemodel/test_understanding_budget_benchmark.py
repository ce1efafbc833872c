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


def test_quick_run_trains_each_variant_from_the_same_start(bench, tmp_path, capsys):
    out = tmp_path / "budget.json"
    assert bench.main(["--quick", "--variants", "recipe", "exists-half-x2", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [results[v]["steps"] for v in ("recipe", "exists-half-x2")] == ["2/2", "2/4"]
    assert all(0.0 <= r["oe.accuracy"] <= 1.0 for r in results.values())
    printed = capsys.readouterr().out
    assert "sampled vs blind" in printed and "exists-half-x2" in printed
