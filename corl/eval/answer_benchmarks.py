"""Understanding benchmarks (MMStar, MMMU, POPE, ...): load through `corl.data.load_rows` with a column map,
answer greedily, score with corl's answer extraction.

A benchmark is described by a `BenchmarkSpec` (shipped as YAML recipes in `recipes/eval/benchmarks/`):
where the rows are (hub id, local files or a save_to_disk folder; split; optional hub config), which source
column feeds each corl column (`image`, `question`, `solution`, `question_type`), the question type (a
constant "mc" / "oe", or None to read a mixed `question_type` column), an optional column of separately
stored options, and an optional category column for a per-category breakdown.

Choices taken:
- The policy formats the prompt (chat template, <think>/<answer> instruction); this module passes the
  question text. When options are stored separately (MMMU's `options`, a list or its Python repr), MC
  questions get them appended as lines "A. <option>", as the MMMU / lmms-eval prompt does.
- Mixed benchmarks (MMMU: "multiple-choice" and "open" rows) are loaded once per question type; the rows of
  the other type that each load skips are expected and not reported as skipped.
- Scoring is `corl.eval.grading.score_answer` (the training rewards' rules): the answer inside
  <answer>...</answer>; MC by letter or option text; OE by normalized exact match (number words = digits).
  `parse_list_solutions` reads solutions written as a Python list literal ("['24/7', '3.43']", MMMU's
  open answers) as several acceptable answers.
- `accuracy` is over all scorable rows (instance level, as MMMU and MMStar's official scripts report
  overall numbers); `categories` gives accuracy per category. `binary_metrics` adds POPE's yes/no metrics
  (precision, recall and F1 of "yes", and the predicted yes ratio), over rows answering yes or no.
- Multi-image rows (MMMU image_2..image_7) use only the mapped image column; the policy takes one image.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from corl.policy.policy import JanusPolicy
from corl.eval.grading import batched, check_count, mean_or_none, score_answer
from corl.generation.rollout import answer
from corl.rewards.text import normalize_answer

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DEFAULT_MAX_NEW_TOKENS = 512  # the paper's completion length for understanding
UNKNOWN_CATEGORY = "unknown"


@dataclass
class BenchmarkSpec:
    """Where a benchmark's rows are and how its columns map onto corl's (module docstring)."""

    name: str
    source: str
    split: str = "test"
    config: str | None = None
    column_map: dict[str, str] = field(default_factory=dict)
    question_type: str | None = None
    options_column: str | None = None
    category_column: str | None = None
    category_pattern: str | None = None
    parse_list_solutions: bool = False
    binary_metrics: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.question_type not in (None, "mc", "oe"):
            raise ValueError(
                f"benchmark {self.name!r}: question_type must be mc, oe or null (a mixed "
                f"question_type column), got {self.question_type!r}"
            )
        if self.question_type is None and "question_type" not in self.column_map:
            raise ValueError(
                f"benchmark {self.name!r}: give question_type (mc / oe) or map a question_type "
                "column in column_map for a mixed benchmark"
            )
        if self.category_pattern is not None and re.compile(self.category_pattern).groups != 1:
            raise ValueError(f"benchmark {self.name!r}: category_pattern needs exactly one capture group")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchmarkSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown benchmark keys {unknown}; valid: {sorted(known)}")
        missing = [k for k in ("name", "source") if k not in data]
        if missing:
            raise ValueError(f"a benchmark spec needs {missing}")
        return cls(**dict(data))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> BenchmarkSpec:
        data = yaml.safe_load(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a benchmark recipe is a YAML mapping")  # noqa: TRY004  (bad data: a user error)
        return cls.from_dict(data)


def benchmark_recipes_dir() -> Path:
    """The shipped benchmark recipes (repo checkout or editable install)."""
    return Path(__file__).resolve().parent.parent.parent / "recipes" / "eval" / "benchmarks"


def resolve_benchmark(name_or_path: str) -> BenchmarkSpec:
    """A benchmark spec from a YAML path or a shipped name ("mmstar", "mmmu", "pope")."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return BenchmarkSpec.from_yaml(path)
    shipped = benchmark_recipes_dir() / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return BenchmarkSpec.from_yaml(shipped)
    known = sorted(p.stem for p in benchmark_recipes_dir().glob("*.yaml"))
    raise FileNotFoundError(f"no benchmark recipe {name_or_path!r}; shipped: {', '.join(known) or 'none'}")


# ---- rows ---------------------------------------------------------------------------------------


@dataclass
class BenchmarkRow:
    """One question ready to ask: `question` already has separately stored options appended."""

    image: Any
    question: str
    solution: str | list[str]
    question_type: str
    category: str | None


@dataclass
class LoadedBenchmark:
    spec: BenchmarkSpec
    rows: list[BenchmarkRow]
    skipped: dict[str, int]


def parse_options(value: Any) -> list[str]:
    """Options stored separately: a list, or a string holding a Python / JSON list literal."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"options {text[:60]!r} are not a list literal") from err
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ValueError(f"options must be a list of texts, got {value!r:.80}")
    if len(value) > len(LETTERS):
        raise ValueError(f"{len(value)} options are more than the {len(LETTERS)} letters")
    return [str(v) for v in value]


def with_options(question: str, options: Sequence[str]) -> str:
    """The question followed by one "A. option" line per option."""
    if not options:
        return question
    return question.rstrip() + "\n" + "\n".join(f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options))


def _solution(value: Any, parse_lists: bool) -> str | list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    text = str(value)
    if parse_lists and text.strip().startswith("["):
        try:
            parsed = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            return text
        if isinstance(parsed, (list, tuple)) and parsed:
            return [str(v) for v in parsed]
    return text


def _category(spec: BenchmarkSpec, row: Mapping[str, Any]) -> str | None:
    if spec.category_column is None:
        return None
    if spec.category_column not in row:
        raise KeyError(f"benchmark {spec.name!r}: category column {spec.category_column!r} not in the rows")
    value = str(row[spec.category_column])
    if spec.category_pattern is None:
        return value
    match = re.search(spec.category_pattern, value)
    return match.group(1) if match else UNKNOWN_CATEGORY


def load_benchmark(
    spec: BenchmarkSpec, max_rows: int | None = None, cache_dir: str | None = None, source: Any = None,
    allow_images_outside: bool = False,
) -> LoadedBenchmark:
    """Rows of `spec` (the first `max_rows` source rows), checked by corl.data and ready to ask.

    source: load from this instead of spec.source (a Dataset, a path; used by tests and --data).
    allow_images_outside: read image paths outside the data's own folder (refused by default).
    """
    from corl.data import load_rows

    src = source if source is not None else spec.source
    if spec.config is not None and source is None:
        import datasets

        src = datasets.load_dataset(spec.source, spec.config, split=spec.split, cache_dir=cache_dir)
    types = [spec.question_type] if spec.question_type else ["mc", "oe"]
    rows: list[BenchmarkRow] = []
    skipped: dict[str, int] = {}
    for qtype in types:
        loaded = load_rows(
            src, split=spec.split, column_map=spec.column_map, task=qtype, limit=max_rows, cache_dir=cache_dir,
            allow_images_outside=allow_images_outside,
        )
        for reason, count in loaded.report.skipped.items():
            if reason == "wrong_question_type" and len(types) > 1:
                continue  # the other type's rows, read by the other load
            skipped[reason] = skipped.get(reason, 0) + count
        for record in loaded.dataset:
            question = str(record["question"])
            if qtype == "mc" and spec.options_column is not None:
                try:
                    question = with_options(question, parse_options(record.get(spec.options_column)))
                except ValueError as err:
                    skipped["bad_options"] = skipped.get("bad_options", 0) + 1
                    logger.warning("benchmark %s: row skipped: %s", spec.name, err)
                    continue
            rows.append(
                BenchmarkRow(
                    image=record["image"],
                    question=question,
                    solution=_solution(record["solution"], spec.parse_list_solutions),
                    question_type=qtype,
                    category=_category(spec, record),
                )
            )
    if not rows:
        raise ValueError(f"benchmark {spec.name!r} has no usable rows (skipped: {skipped or 'none'})")
    if skipped:
        logger.warning("benchmark %s: skipped rows: %s", spec.name, skipped)
    return LoadedBenchmark(spec=spec, rows=rows, skipped=skipped)


# ---- scoring ------------------------------------------------------------------------------------


def yes_no_metrics(
    predictions: Sequence[str | None], targets: Sequence[str]
) -> dict[str, float | int | None]:
    """POPE's binary metrics with "yes" as the positive class, over rows whose prediction is yes / no.

    predictions: extracted answers (None without one); targets: "yes" / "no". Rows whose prediction is
    neither are counted in `n_other` (they are wrong for accuracy, and not a guess for precision).
    """
    pairs = [(normalize_answer(p or ""), normalize_answer(t)) for p, t in zip(predictions, targets)]
    valid = [(p, t) for p, t in pairs if p in ("yes", "no")]
    tp = sum(p == "yes" and t == "yes" for p, t in valid)
    fp = sum(p == "yes" and t == "no" for p, t in valid)
    fn = sum(p == "no" and t == "yes" for p, t in valid)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if valid else None)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": mean_or_none([float(p == "yes") for p, _ in valid]),
        "n_other": len(pairs) - len(valid),
    }


def evaluate_benchmark(
    policy: JanusPolicy,
    benchmark: BenchmarkSpec | LoadedBenchmark,
    *,
    batch_size: int = 8,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    max_rows: int | None = None,
    model_path: str | None = None,
    return_details: bool = False,
) -> dict[str, Any]:
    """Answer every row greedily and score it (module docstring). Keys: benchmark, accuracy, n,
    mc.accuracy, mc.n, oe.accuracy, oe.n, format_rate, n_unscorable, skipped, categories
    ({name: {accuracy, n}}), yes_no (with binary_metrics), settings, and details when asked."""
    loaded = benchmark if isinstance(benchmark, LoadedBenchmark) else load_benchmark(benchmark, max_rows)
    spec, rows = loaded.spec, loaded.rows
    completions: list[str] = []
    n_batches = -(-len(rows) // batch_size)
    for _, batch in tqdm(batched(rows, batch_size), total=n_batches, desc=f"{spec.name}", unit="batch"):
        out = answer(policy,
            [r.image for r in batch], [r.question for r in batch], greedy=True, max_new_tokens=max_new_tokens
        )
        check_count(out, len(batch), "answers")
        completions.extend(out)
    scores = [score_answer(c, r.solution, r.question, r.question_type) for c, r in zip(completions, rows)]
    scored = [(r, s) for r, s in zip(rows, scores) if s.correct is not None]
    unscorable = len(rows) - len(scored)
    if unscorable:
        logger.warning(
            "benchmark %s: %d rows could not be scored (solution names no option)", spec.name, unscorable
        )

    def accuracy(pairs: Sequence[tuple[BenchmarkRow, Any]]) -> float | None:
        return mean_or_none([s.correct for _, s in pairs])

    by_type = {t: [(r, s) for r, s in scored if r.question_type == t] for t in ("mc", "oe")}
    categories: dict[str, list[tuple[BenchmarkRow, Any]]] = {}
    for r, s in scored:
        if r.category is not None:
            categories.setdefault(r.category, []).append((r, s))
    result: dict[str, Any] = {
        "benchmark": spec.name,
        "accuracy": accuracy(scored),
        "n": len(scored),
        "mc.accuracy": accuracy(by_type["mc"]),
        "mc.n": len(by_type["mc"]),
        "oe.accuracy": accuracy(by_type["oe"]),
        "oe.n": len(by_type["oe"]),
        "format_rate": mean_or_none([float(s.formatted) for s in scores]),
        "n_unscorable": unscorable,
        "skipped": dict(loaded.skipped),
        "categories": {c: {"accuracy": accuracy(p), "n": len(p)} for c, p in sorted(categories.items())},
    }
    if spec.binary_metrics:
        targets = [r.solution if isinstance(r.solution, str) else r.solution[0] for r in rows]
        result["yes_no"] = yes_no_metrics([s.extracted for s in scores], targets)
    result["settings"] = {
        "suite": "benchmark",
        "benchmark": spec.name,
        "source": spec.source,
        "split": spec.split,
        "model": model_path,
        "n_rows": len(rows),
        "greedy": True,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
    }
    if return_details:
        result["details"] = [
            {
                "question": r.question,
                "question_type": r.question_type,
                "category": r.category,
                "solution": r.solution,
                "completion": c,
                "extracted": s.extracted,
                "correct": s.correct,
                "formatted": s.formatted,
            }
            for r, c, s in zip(rows, completions, scores)
        ]
    return result
