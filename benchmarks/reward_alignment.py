"""Does a recipe's image reward pay for what the Shapes analyzer checks? Per GenEval category.

    python benchmarks/reward_alignment.py [--recipe shapes-tiny/unified] [--captions 12] [--group 8]

For `--captions` training captions per category, the base model draws `--group` images (CFG as in the
recipe), the analyzer says which pass, and the recipe's t2i rewards score them. Each reward (and each
logged component) is turned into group advantages by `corl.algos.group_advantages`, (r - mean) / std as
the trainer computes them, and the table prints,
per category, the mean over groups holding both outcomes of [mean advantage of the passing images - that of
the failing ones], in group-std units: positive means GRPO pushes towards what the analyzer accepts,
0 means the reward does not see it, negative means it pays against it.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="shapes-tiny/unified")
    parser.add_argument("--model", default="shapes-base")
    parser.add_argument("--captions", type=int, default=12, help="training captions per category (12)")
    parser.add_argument("--group", type=int, default=8, help="images per caption (8)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    from corl.algos import group_advantages
    from corl.config import load_config, resolve_recipe
    from corl.data import load_rows
    from corl.data.shapes_source import default_shapes_dir
    from corl.generation.rollout import generate_images
    from corl.policy import load_policy
    from corl.shapes import Scene, score_generation
    from corl.training.setup import build_rewards

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(resolve_recipe(args.recipe), [f"model.name_or_path={args.model}"])
    policy = load_policy(cfg.model.name_or_path, dtype="fp32", device="cpu")
    rewards = build_rewards(cfg, policy, torch.device("cpu"))["t2i"]
    d = cfg.data
    rows = load_rows(str(default_shapes_dir(d.shapes_n_train, d.shapes_n_test, d.shapes_seed, d.shapes_image_size)),
                     split="train", task="unified").dataset
    by_category: dict[str, list[dict]] = collections.defaultdict(list)
    for row in rows:
        if len(by_category[row["category"]]) < args.captions:
            by_category[row["category"]].append(row)

    gaps: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    pass_rate: dict[str, float] = {}
    for category, chosen in by_category.items():
        passed_all = []
        for i, row in enumerate(chosen):
            images = generate_images(policy, [row["prompt"]], n=args.group, cfg_weight=cfg.rollout.cfg_weight,
                                     seed=1000 + i)
            passed = [bool(score_generation(im, Scene.from_json(row["scene"])).passed) for im in images]
            passed_all += passed
            batch = rewards([row["prompt"]] * args.group, images, **{k: [v] * args.group for k, v in row.items()})
            if not 0 < sum(passed) < args.group:
                continue
            for name, values in {**batch.values, **batch.components, "total": batch.total}.items():
                if any(v is None for v in values):
                    continue
                adv = group_advantages(values, args.group)[0].tolist()  # the trainer's GRPO advantages
                gaps[category][name].append(statistics.fmean(a for a, p in zip(adv, passed) if p)
                                            - statistics.fmean(a for a, p in zip(adv, passed) if not p))
        pass_rate[category] = statistics.fmean(passed_all)

    names = sorted({n for g in gaps.values() for n in g})
    print(f"recipe {args.recipe}, model {args.model}: {args.captions} training captions per category, "
          f"{args.group} images each")
    print(f"{'category':14s} {'pass':>5s} {'groups':>6s} " + " ".join(f"{n:>12s}" for n in names))
    for category in by_category:
        g = gaps[category]
        groups = max((len(v) for v in g.values()), default=0)
        cells = [f"{statistics.fmean(g[n]):12.2f}" if g.get(n) else f"{'n/a':>12s}" for n in names]
        print(f"{category:14s} {pass_rate[category]:5.2f} {groups:6d} " + " ".join(cells))
    print("cells: passing minus failing images' mean advantage, in group-std units, over groups with both outcomes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
