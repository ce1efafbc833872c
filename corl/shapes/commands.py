"""`corl shapes build` and `corl shapes show`: make the Shapes dataset and look at it."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# Plain numbers, repeated from corl.shapes.dataset so `corl --help` does not import datasets.
DEFAULT_N_TRAIN = 2000
DEFAULT_N_TEST = 300


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
    build.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN,
                       help=f"rows in the train split (default {DEFAULT_N_TRAIN})")
    build.add_argument("--n-test", type=int, default=DEFAULT_N_TEST,
                       help=f"rows in the test split (default {DEFAULT_N_TEST})")
    build.add_argument("--seed", type=int, default=0, help="random seed; same seed, same dataset (default 0)")
    build.add_argument("--image-size", type=int, default=48, help="image side in pixels, 32..64 (default 48)")
    build.set_defaults(func=run_build, _parser=build)

    show = sub.add_parser("show", help="write a PNG sheet of samples from a built dataset",
                          description="Render n samples (image, caption, question, solution) to a PNG.")
    show.add_argument("--data", required=True, type=Path, help="directory written by `corl shapes build`")
    show.add_argument("--out", type=Path, default=Path("shapes_sheet.png"),
                      help="output PNG path (default shapes_sheet.png)")
    show.add_argument("--n", type=int, default=16, help="number of samples on the sheet (default 16)")
    show.add_argument("--split", default="train", help="split to show: train or test (default train)")
    show.set_defaults(func=run_show, _parser=show)

    from corl.shapes.base_model import add_make_base_parser  # standard library only at import

    add_make_base_parser(sub)


def run_build(args: argparse.Namespace) -> int:
    from corl.shapes.dataset import build_shapes_dataset, summarize

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
    return 0


def run_show(args: argparse.Namespace) -> int:
    from datasets import load_from_disk

    from corl.shapes.sheet import make_sample_sheet

    if not args.data.exists():
        raise FileNotFoundError(f"no dataset at {args.data} (build one with `corl shapes build`)")
    ds = load_from_disk(str(args.data))
    if args.split not in ds:
        raise KeyError(f"split {args.split!r} not in dataset; available: {', '.join(ds)}")
    out = make_sample_sheet(ds[args.split], args.n, args.out)
    print(f"wrote {out}")
    return 0
