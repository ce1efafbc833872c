"""Human-readable reports of runs: the demo's and `corl reproduce`'s report (report.md with linked images, report.html with
them inlined), the tables and plots other reports reuse, and the pictures a reader looks at (the fixed
prompt grid, failure examples).

Inputs are the files runs already write (`eval_*.json` in the `results.json` schema of `corl eval`,
each stage's `metrics.jsonl`, `summary.json` and `config.yaml`); the report recomputes no score.
"""

from corl.report.demo import Report, write_demo_report
from corl.report.pipeline import write_pipeline_report
from corl.report.plots import plot_heldout_curve, plot_metric_bars, plot_reward_curves, plot_stage_metrics
from corl.report.stats import mean_std, wilson_interval
from corl.report.tables import (
    HEADLINE_METRICS,
    category_keys,
    heldout_table,
    metrics_table,
    reward_table,
    seeds_table,
    topic_table,
)

__all__ = [
    "HEADLINE_METRICS",
    "Report",
    "category_keys",
    "heldout_table",
    "mean_std",
    "metrics_table",
    "plot_heldout_curve",
    "plot_metric_bars",
    "plot_reward_curves",
    "plot_stage_metrics",
    "reward_table",
    "seeds_table",
    "topic_table",
    "wilson_interval",
    "write_demo_report",
    "write_pipeline_report",
]
