"""corl.report: the tables a person reads in report.md."""

from __future__ import annotations

import json

import pytest

from corl.report import metrics_table, topic_table


def _result(oe_exists: float, with_topics: bool = True) -> dict:
    result = {"t2i.overall": 0.5, "t2i.counting": 0.25, "mc.accuracy": 0.4, "oe.accuracy": 0.6, "format_rate": 1.0}
    if with_topics:
        result["oe.by_topic"] = {"exists": {"accuracy": oe_exists, "n": 28}, "count": {"accuracy": 0.5, "n": 20}}
        result["mc.by_topic"] = {"color": {"accuracy": 0.75, "n": 12}}
    return result


def test_topic_table_has_a_row_per_format_and_topic_with_the_change():
    table = topic_table({"base": _result(0.25), "final": _result(0.5)})
    lines = table.splitlines()
    assert lines[0] == "| question (%) | base | final | change (base -> final) |"
    assert lines[2:] == [
        "| MC color (12) | 75.0 | 75.0 | +0.0 |",
        "| OE exists (28) | 25.0 | 50.0 | +25.0 |",
        "| OE count (20) | 50.0 | 50.0 | +0.0 |",
    ]


def test_topic_table_is_none_without_topics_and_tolerates_a_missing_one():
    assert topic_table({"base": _result(0.1, with_topics=False)}) is None
    table = topic_table({"base": _result(0.1, with_topics=False), "final": _result(0.5)})
    assert "| OE exists (28) | n/a | 50.0 | n/a |" in table.splitlines()


def test_metrics_table_lists_headline_metrics_then_categories():
    lines = metrics_table({"base": _result(0.1), "final": _result(0.2)}).splitlines()
    assert lines[2].startswith("| generation pass rate") and lines[2].endswith("| 50.0 | 50.0 | +0.0 |")
    assert lines[-1] == "| t2i.counting | 25.0 | 25.0 | +0.0 |"


def _stage_metrics(run_dir, text: str) -> None:
    (run_dir / "unified").mkdir(parents=True)
    (run_dir / "unified" / "metrics.jsonl").write_text(text)


def test_reward_curves_skip_a_torn_last_line_with_a_warning(tmp_path, caplog):
    """A stage killed (or out of disk space) mid-write leaves a cut-off last row: the plot is drawn from
    the whole rows."""
    pytest.importorskip("matplotlib")
    from corl.report import plot_reward_curves

    rows = "".join(json.dumps({"step": s, "reward/t2i/mean": s / 10}) + "\n" for s in (1, 2, 3))
    _stage_metrics(tmp_path, '{"header": {}}\n' + rows + '{"step": 4, "reward/t2i/me')
    with caplog.at_level("WARNING"):
        path = plot_reward_curves(tmp_path, ["unified"], tmp_path / "plots" / "curves.png")
    assert path is not None and path.is_file()
    assert f"{tmp_path / 'unified' / 'metrics.jsonl'}: dropping its last line 5" in caplog.text


def test_reward_curves_of_a_damaged_metrics_file_name_the_line(tmp_path):
    pytest.importorskip("matplotlib")
    from corl.report import plot_reward_curves

    _stage_metrics(tmp_path, '{"header": {}}\n{"step": 1, "rew\n{"step": 2, "reward/t2i/mean": 0.5}\n')
    with pytest.raises(ValueError, match=f"{tmp_path / 'unified' / 'metrics.jsonl'}: line 2 is not a JSON object"):
        plot_reward_curves(tmp_path, ["unified"], tmp_path / "plots" / "curves.png")
