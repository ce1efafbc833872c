"""`corl eval`: run an evaluation suite on a checkpoint and write results.json (atomically).

Suites:
- shapes: the Shapes suite (GenEval-style generation pass rates, MC / OE accuracy, format rate) on a Shapes
  split; without --data the Shapes dataset with `corl shapes build`'s defaults is built once into the corl
  cache ($CORL_CACHE, else ~/.cache/corl) and reused.
- geneval / dpg / wise: generate images for the benchmark's prompt file(s) (--data) into --image-dir in the
  layout its official scorer reads (corl.eval.image_dumps); results.json records what was written.
- benchmark / mc / oe: an understanding benchmark from a recipe (--recipe mmstar|mmmu|pope|PATH) or ad hoc
  (--data SOURCE --column-map question=... solution=...); mc / oe keep only rows of that type.

Heavy imports (torch, transformers, datasets) happen inside the command, so `corl --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from corl.config import DEFAULT_CFG_WEIGHT
from corl.cli.argtypes import add_threads_argument, finite_float, nonnegative_int, positive_int

logger = logging.getLogger(__name__)

SUITES: tuple[str, ...] = ("shapes", "geneval", "dpg", "wise", "benchmark", "mc", "oe")


# ---- the default Shapes split ------------------------------------------------------------------


# ---- running --------------------------------------------------------------------------------------


def _parse_column_map(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"--column-map takes corl_column=source_column pairs, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _load_policy(args: argparse.Namespace) -> Any:
    from corl.policy import load_policy

    return load_policy(args.model, dtype=args.dtype, device=args.device)


def _run_shapes(args: argparse.Namespace, policy: Any) -> dict[str, Any]:
    from corl.data import load_rows
    from corl.data.shapes_source import default_shapes_dir
    from corl.eval.shapes_suite import evaluate_shapes

    data = args.data or str(default_shapes_dir())
    split = args.split or "test"
    loaded = load_rows(data, split=split, task="unified", limit=args.max_rows,
                       allow_images_outside=args.allow_images_outside)
    result = evaluate_shapes(
        policy, loaded.dataset, images_per_prompt=args.images_per_prompt, cfg_weight=args.cfg, seed=args.seed,
        max_rows=args.max_rows, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
        model_path=args.model, return_details=args.details, image_dir=args.image_dir,
        answer_samples=args.answer_samples,
    )
    result["settings"].update(data=data, split=split, skipped_rows=loaded.report.skipped)
    return result


def _run_images(args: argparse.Namespace, policy: Any) -> dict[str, Any]:
    from corl.eval.image_dumps import dump_images, read_prompts

    items = read_prompts(args.suite, args.data)
    if args.max_rows is not None:
        items = items[: args.max_rows]
    per_prompt = args.images_per_prompt if args.suite == "geneval" else None
    report = dump_images(
        policy,
        args.suite,
        items,
        args.image_dir,
        images_per_prompt=per_prompt,
        cfg_weight=args.cfg,
        seed=args.seed,
        batch_size=args.batch_size,
        resume=not args.force,
    )
    return {
        "suite": args.suite,
        "images": report.to_dict(),
        "settings": {
            "suite": args.suite,
            "model": args.model,
            "data": args.data,
            "n_prompts": len(items),
            "images_per_prompt": report.images_per_prompt,
            "cfg_weight": args.cfg,
            "seed": args.seed,
            "batch_size": args.batch_size,
        },
    }


def _run_benchmark(args: argparse.Namespace, policy: Any) -> dict[str, Any]:
    import dataclasses

    from corl.eval.answer_benchmarks import (
        BenchmarkSpec,
        evaluate_benchmark,
        load_benchmark,
        resolve_benchmark,
    )

    column_map = _parse_column_map(args.column_map)
    if args.recipe:
        spec = resolve_benchmark(args.recipe)
        if column_map:
            spec = dataclasses.replace(spec, column_map={**spec.column_map, **column_map})
        if args.data:  # the recipe's layout, read from local files / another copy
            spec = dataclasses.replace(spec, source=args.data, config=None)
        if args.split:
            spec = dataclasses.replace(spec, split=args.split)
    else:  # ad hoc: --data with --column-map
        spec = BenchmarkSpec(
            name=Path(args.data).stem or "data",
            source=args.data,
            split=args.split or "test",
            column_map=column_map,
            question_type=args.suite,
        )
    if args.suite in ("mc", "oe"):
        spec = dataclasses.replace(spec, question_type=args.suite)
    loaded = load_benchmark(spec, max_rows=args.max_rows, allow_images_outside=args.allow_images_outside)
    return evaluate_benchmark(
        policy,
        loaded,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        model_path=args.model,
        return_details=args.details,
    )


def _summary(result: dict[str, Any]) -> str:
    keys = [
        k for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool) or v is None
    ]
    parts = [f"{k}={result[k]:.4f}" if isinstance(result[k], float) else f"{k}={result[k]}" for k in keys]
    if "images" in result:
        img = result["images"]
        parts.append(
            f"wrote {img['n_written']} prompts ({img['n_skipped_existing']} existing) to {img['outdir']}"
        )
        if img.get("tile_size"):
            parts.append(f"tile size {img['tile_size'][0]}x{img['tile_size'][1]}")
    return ", ".join(parts)


def sampled_answers_table(result: dict[str, Any]) -> str:
    """Greedy vs sampled accuracy, an image-blind answerer's accuracy with the same answers, and the share of
    questions with both right and wrong samples, per format and question template (`--answer-samples`);
    "" without sampled answers."""
    lines = []
    for fmt in ("mc", "oe"):
        for topic, s in (result.get(f"{fmt}.sampled_by_topic") or {}).items():
            greedy = result[f"{fmt}.accuracy"] if topic == "all" else (result[f"{fmt}.by_topic"].get(topic) or {}).get("accuracy")
            lines.append(f"{fmt:6} {topic:9} {s['n']:5d} {'n/a' if greedy is None else f'{100 * greedy:.1f}':>7} "
                         f"{100 * s['accuracy']:8.1f} {100 * s['blind']:6.1f} {100 * s['contrast']:9.1f}")
    if not lines:
        return ""
    header = f"{'format':6} {'template':9} {'n':>5} {'greedy':>7} {'sampled':>8} {'blind':>6} {'contrast':>9}   (%)"
    return "\n".join([header, *lines])


def check_args(args: argparse.Namespace) -> None:
    """Reject bad arguments before a model is loaded (ValueError: one clear line from the CLI)."""
    if args.suite not in SUITES:
        raise ValueError(f"unknown suite {args.suite!r}; valid: {', '.join(SUITES)}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_rows is not None and args.max_rows < 1:
        raise ValueError(f"--max-rows must be >= 1, got {args.max_rows}")
    if args.images_per_prompt < 1:
        raise ValueError(f"--images-per-prompt must be >= 1, got {args.images_per_prompt}")
    if args.suite in ("geneval", "dpg", "wise"):
        if not args.data:
            raise ValueError(f"--suite {args.suite} needs --data: the benchmark's prompt file or folder")
        if not args.image_dir:
            raise ValueError(f"--suite {args.suite} needs --image-dir: where the scorer will read the images")
    if args.suite == "benchmark" and not args.recipe:
        raise ValueError("--suite benchmark needs --recipe; use --suite mc or oe for ad-hoc --data")
    if args.suite in ("mc", "oe") and not (args.recipe or args.data):
        raise ValueError(f"--suite {args.suite} needs --recipe (mmstar, mmmu, pope or a YAML path) or --data")
    _parse_column_map(args.column_map)


def check_downloads(args: argparse.Namespace) -> None:
    """The evaluated model and a benchmark recipe's dataset must be cached or reachable (one error naming all)."""
    from corl.training.assets import hub_asset, require

    needed = hub_asset("model", args.model, "the evaluated model, --model")
    if args.suite in ("benchmark", "mc", "oe") and args.recipe and not args.data:
        from corl.eval.answer_benchmarks import resolve_benchmark

        spec = resolve_benchmark(args.recipe)
        needed += hub_asset("dataset", spec.source, f"the {spec.name} benchmark, --recipe {args.recipe}")
    require(needed, "fetch them with `hf download NAME` (datasets: `hf download NAME --repo-type dataset`)")


def run_eval(args: argparse.Namespace, policy: Any = None) -> dict[str, Any]:
    """Run `args.suite` with `policy` (loaded from args.model when None) and write args.out."""
    from corl.eval.grading import write_json_atomic

    check_args(args)
    if policy is None:
        check_downloads(args)  # before any weights load: every missing model / dataset at once
        policy = _load_policy(args)
        if args.model is None:
            from corl.policy import default_model_path

            args.model = str(default_model_path())  # recorded in the results' settings
    if args.suite == "shapes":
        result = _run_shapes(args, policy)
    elif args.suite in ("geneval", "dpg", "wise"):
        result = _run_images(args, policy)
    else:
        result = _run_benchmark(args, policy)
    write_json_atomic(result, args.out)
    return result


def _command(args: argparse.Namespace) -> int:
    result = run_eval(args)
    print(f"corl eval {args.suite}: {_summary(result)}")
    if table := sampled_answers_table(result):
        print(f"answers sampled at temperature 1 ({result['settings']['answer_samples']} per question):\n{table}")
    print(f"results written to {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint (Shapes suite, GenEval/DPG/WISE images, MC/OE benchmarks)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", default=None, help="checkpoint directory or hub id (default: the Shapes base model)"
    )
    p.add_argument("--suite", choices=SUITES, default="shapes", help="what to evaluate (default: shapes)")
    p.add_argument(
        "--data",
        default=None,
        help="shapes: dataset dir (default: built into the corl cache); "
        "geneval: evaluation_metadata.jsonl; dpg: prompt folder; wise: prompt json file or folder; "
        "mc/oe: a data source (hub id, files, save_to_disk dir)",
    )
    p.add_argument("--split", default=None, help="split of --data (default: test; a recipe's own split)")
    p.add_argument(
        "--recipe", default=None, help="benchmark/mc/oe: shipped benchmark (mmstar, mmmu, pope) or YAML"
    )
    p.add_argument("--column-map", nargs="*", metavar="CORL=SOURCE", help="mc/oe: column mapping pairs")
    p.add_argument("--allow-images-outside", action="store_true",
                   help="read image paths that lie outside --data's own folder (refused by default)")
    p.add_argument("--out", required=True, type=Path, help="results JSON path (written atomically)")
    p.add_argument(
        "--image-dir", default=None, help="geneval/dpg/wise: image output folder; shapes: save images"
    )
    p.add_argument("--images-per-prompt", type=positive_int, default=4, help="shapes / geneval: images per prompt (4)")
    p.add_argument("--cfg", type=finite_float, default=DEFAULT_CFG_WEIGHT,
                   help=f"CFG weight for image generation (default {DEFAULT_CFG_WEIGHT:g})")
    p.add_argument("--seed", type=int, default=0, help="seed of image generation (0)")
    p.add_argument("--max-rows", type=positive_int, default=None, help="use at most this many rows / prompts")
    p.add_argument("--batch-size", type=positive_int, default=8, help="prompts or questions per policy call (8)")
    p.add_argument("--max-new-tokens", type=positive_int, default=512, help="answer length limit (512, the paper's)")
    p.add_argument("--answer-samples", type=nonnegative_int, default=0, metavar="K",
                   help="shapes: also sample K answers per question at temperature 1 and report their accuracy and "
                        "the share of questions with both right and wrong samples, per template (default 0: off)")
    p.add_argument("--details", action="store_true", help="include per-row details in results.json")
    p.add_argument("--force", action="store_true", help="geneval/dpg/wise: redo images that exist already")
    add_threads_argument(p)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default="auto", help="model dtype: auto, fp32, bf16, fp16")
    p.set_defaults(func=_command, _parser=p)
