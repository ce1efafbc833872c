"""`corl shapes build | show | make-base`: make the Shapes dataset, look at it, build the base model."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from corl.shapes.dataset_defaults import DEFAULT_IMAGE_SIZE, DEFAULT_N_TEST, DEFAULT_N_TRAIN, DEFAULT_SEED
from corl.cli.argtypes import add_threads_argument, positive_int

logger = logging.getLogger(__name__)



def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "shapes",
        help="the embedded Shapes world: build its dataset, show samples, make the base model",
        description="The Shapes world: synthetic scenes of colored shapes with captions and questions.",
    )
    parser.set_defaults(_parser=parser, func=None)
    sub = parser.add_subparsers(dest="shapes_command", metavar="SUBCOMMAND")

    build = sub.add_parser("build", help="build a train/test dataset and save it with save_to_disk",
                           description="Build the Shapes dataset (DatasetDict with train/test) into DIR.")
    build.add_argument("--out", required=True, type=Path, help="output directory for DatasetDict.save_to_disk")
    build.add_argument("--n-train", type=positive_int, default=DEFAULT_N_TRAIN,
                       help=f"rows in the train split (default {DEFAULT_N_TRAIN})")
    build.add_argument("--n-test", type=positive_int, default=DEFAULT_N_TEST,
                       help=f"rows in the test split (default {DEFAULT_N_TEST})")
    build.add_argument("--seed", type=int, default=DEFAULT_SEED,
                       help=f"random seed; same seed, same dataset (default {DEFAULT_SEED})")
    build.add_argument("--image-size", type=positive_int, default=DEFAULT_IMAGE_SIZE,
                       help=f"image side in pixels, 32..64 (default {DEFAULT_IMAGE_SIZE})")
    build.set_defaults(func=run_build, _parser=build)

    show = sub.add_parser("show", help="write a PNG sheet of samples from a built dataset",
                          description="Render n samples (image, caption, question, solution) to a PNG.")
    show.add_argument("--data", required=True, help="directory written by `corl shapes build`")
    show.add_argument("--out", type=Path, default=Path("shapes_sheet.png"),
                      help="output PNG path (default shapes_sheet.png)")
    show.add_argument("--max-rows", type=positive_int, default=16,
                      help="rows on the sheet, the first of the split (default 16)")
    show.add_argument("--split", default="train", help="split to show: train or test (default train)")
    show.set_defaults(func=run_show, _parser=show)

    add_make_base_parser(sub)


def run_build(args: argparse.Namespace) -> int:
    from corl.shapes.dataset import build_shapes_dataset, summarize, train_overlap

    if args.n_train < 1 or args.n_test < 1:
        # datasets writes an empty split with zero shards and then cannot load it back.
        raise ValueError(f"--n-train and --n-test must be >= 1, got {args.n_train} and {args.n_test}")
    if args.out.exists() and any(args.out.iterdir()):
        raise ValueError(f"output directory {args.out} exists and is not empty")
    ds = build_shapes_dataset(args.n_train, args.n_test, seed=args.seed, image_size=args.image_size)
    ds.save_to_disk(str(args.out))
    print(f"saved Shapes dataset to {args.out} (seed {args.seed}, {args.image_size} px)")
    for split, data in ds.items():
        summary = summarize(data)
        cats = ", ".join(f"{k} {v}" for k, v in summary["category"].items())
        qtypes = ", ".join(f"{k} {v}" for k, v in summary["question_type"].items())
        print(f"  {split}: {len(data)} rows | categories: {cats or '-'} | question types: {qtypes or '-'}")
    overlap = train_overlap(ds)
    by_type = ", ".join(f"{k.split('/')[1]} {v}" for k, v in sorted(overlap.items()) if "/" in k)
    print(f"  test rows showing a train scene: {overlap['scene']}; asking a train row's question about it: "
          f"{overlap['scene_question']}" + (f" ({by_type})" if by_type else ""))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from datasets import load_from_disk

    from corl.shapes.sheet import make_sample_sheet

    data = Path(args.data)
    if not data.exists():
        raise FileNotFoundError(f"no dataset at {args.data} (build one with `corl shapes build`)")
    ds = load_from_disk(str(args.data))
    if args.split not in ds:
        raise KeyError(f"split {args.split!r} not in dataset; available: {', '.join(ds)}")
    out = make_sample_sheet(ds[args.split], args.max_rows, args.out)
    print(f"wrote {out}")
    return 0


def add_make_base_parser(shapes_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `make-base` to the `corl shapes` subcommands."""
    parser = shapes_subparsers.add_parser(
        "make-base",
        help="build the tiny Shapes Janus base model (VQ on renders, encoder pretraining, SFT on both tasks)",
        description="Train the Shapes base model from scratch with a seeded recipe: VQ tokenizer on renders, "
                    "the understanding encoder pretrained on what each grid cell holds, then supervised training "
                    "on text-to-image and question answering, stopped while it is still mediocre at both. "
                    "Writes a save_pretrained directory and make_base_report.json.",
    )
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "corl" / "shapes-base",
                        help="output directory, must be empty or absent (default ~/.cache/corl/shapes-base, "
                             "which corl uses when $CORL_SHAPES_BASE is unset and no checkpoint is shipped)")
    parser.add_argument("--seed", type=int, default=0, help="recipe seed: weights and training data (default 0)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke version: tiny model, a few steps, seconds; its numbers mean nothing")
    add_threads_argument(parser, default=2)  # the build is bit-reproducible for a fixed thread count
    parser.set_defaults(func=run_make_base, _parser=parser)
    return parser


def run_make_base(args: argparse.Namespace) -> int:
    from corl.basemodel.pipeline import REPORT_NAME, make_base_model
    from corl.cli.eval import sampled_answers_table

    report = make_base_model(args.out, seed=args.seed, quick=args.quick, num_threads=args.threads)
    ev = report["evaluation"]

    def pct(key: str) -> str:
        value = ev.get(key)
        return "-" if value is None else f"{100 * value:.1f}%"

    print(f"saved Shapes base model to {args.out} in {report['build_seconds']:.0f} s (seed {args.seed})")
    print(f"  generation pass rate {pct('t2i.overall')} | MC {pct('mc.accuracy')} | OE {pct('oe.accuracy')} | "
          f"format {pct('format_rate')} | VQ reconstructions pass "
          f"{100 * report['vq']['reconstruction']['pass_rate']:.1f}%")
    print(f"  {report['parameters']['total'] / 1e6:.2f}M parameters, "
          f"{report['checkpoint_bytes'] / 2**20:.1f} MiB; report: {Path(args.out) / REPORT_NAME}")
    if table := sampled_answers_table(ev):
        print(f"  answers sampled at temperature 1 ({report['evaluation_settings']['answer_samples']} per question):")
        print("\n".join("    " + line for line in table.splitlines()))
    return 0
