"""`corl merge --a A --b B --out DIR`: merge two refined checkpoints (`corl.merge`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from corl.merge import METHODS  # light: corl.merge imports torch only inside its functions
from corl.cli.argtypes import add_threads_argument, finite_float, positive_float


def run_merge(args: argparse.Namespace) -> int:
    from corl.merge import merge_checkpoints
    from corl.policy.loading import resolve_model_path  # 'shapes-base' names the Shapes base model here too

    report = merge_checkpoints(
        resolve_model_path(args.a),
        resolve_model_path(args.b),
        args.out,
        method=args.method,
        alpha=args.alpha,
        base=resolve_model_path(args.base) if args.base else None,
        lam=args.lam,
        overwrite=args.force,
    )
    line = (
        f"merged {report.n_tensors} tensors ({report.n_parameters / 1e6:.2f}M parameters) into {report.out}"
    )
    if report.inside_fraction is not None:
        line += f"; {report.inside_fraction:.1%} of task-vector entries averaged, the rest added whole"
    print(line)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="merge two refined checkpoints (e.g. MC and OE) into one",
        description="Merge two save_pretrained checkpoints with safetensors weights. 'average': alpha*A + "
        "(1-alpha)*B. 'gaussian': the paper's Gaussian weight merging of task vectors relative to "
        "--base (entries within lam stds of the mean are averaged, outliers kept whole).",
    )
    p.add_argument(
        "--a", required=True, help="first checkpoint directory (its config/processor files are copied)"
    )
    p.add_argument("--b", required=True, help="second checkpoint directory")
    p.add_argument("--base", default=None, help="checkpoint both were refined from (required for gaussian)")
    p.add_argument("--method", choices=METHODS, default="average", help="merge rule (default: average)")
    p.add_argument("--alpha", type=finite_float, default=0.5, help="weight of A (B gets 1-alpha); default 0.5")
    p.add_argument(
        "--lam", type=positive_float, default=2.0, help="gaussian: band half-width in stds (default 2, as upstream)"
    )
    p.add_argument("--out", required=True, type=Path, help="output directory (written atomically)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    add_threads_argument(p)
    p.set_defaults(func=run_merge, _parser=p)
