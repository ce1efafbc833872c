"""The pilot's tables: mean ± std over seeds, changes paired with the same seed's base, nested scores."""

import pytest

from corl.report.pilot import change_table, changes_from_base, score_of, summarize


def run(gen, oe_count=None):
    result = {"t2i.overall": gen, "mc.accuracy": None}
    if oe_count is not None:
        result["oe.by_topic"] = {"count": {"accuracy": oe_count, "n": 20}}
    return result


def test_summarize_mean_and_std():
    table = summarize({"a": [run(0.2), run(0.4)]})
    assert table["a"]["t2i.overall"]["mean"] == pytest.approx(0.3)
    assert table["a"]["t2i.overall"]["std"] == pytest.approx(0.1414213, rel=1e-5)
    assert table["a"]["mc.accuracy"]["mean"] is None


def test_changes_are_paired_by_seed():
    # base and arm both vary a lot across seeds, but the arm is +5 points over its own seed's base
    results = {"base": [run(0.2), run(0.6), run(0.4)], "arm": [run(0.25), run(0.65), run(0.45)],
               "worse": [run(0.2), run(0.5), run(0.5)]}
    changes = changes_from_base(results, ["t2i.overall"])
    assert set(changes) == {"arm", "worse"}
    assert changes["arm"]["t2i.overall"]["mean"] == pytest.approx(0.05)
    assert changes["arm"]["t2i.overall"]["std"] == pytest.approx(0.0, abs=1e-12)
    assert changes["worse"]["t2i.overall"]["mean"] == pytest.approx(0.0)
    rows = {row[0]: row[1] for row in change_table(changes, [("t2i.overall", "generation")]).rows}
    assert rows["arm"] == "+5.0 ± 0.0 ✓" and rows["worse"].endswith("± 10.0") and "✓" not in rows["worse"]


def test_one_seed_is_never_marked_and_no_base_no_changes():
    changes = changes_from_base({"base": [run(0.2)], "arm": [run(0.9)]}, ["t2i.overall"])
    assert change_table(changes, [("t2i.overall", "g")]).rows == [["arm", "+70.0 ± 0.0"]]
    assert changes_from_base({"arm": [run(0.9)]}) == {}


def test_score_of_reaches_per_template_accuracy():
    assert score_of(run(0.1, oe_count=0.35), "oe.by_topic.count") == 0.35
    assert score_of(run(0.1), "oe.by_topic.count") is None
