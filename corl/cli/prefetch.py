"""`corl prefetch RECIPE [RECIPE ...] [key=value ...]`: download everything the recipes need, ahead.

The policy model, the training data, the captioner, BERTScore's backbone, LPIPS's backbone and the CLIP
model (whichever each recipe uses) go into the Hugging Face and torch caches, where `corl train` finds them
later, also offline (HF_HUB_OFFLINE=1). A recipe folder (e.g. janus-pro-1b/paper) means all its stages.
"""

from __future__ import annotations

import argparse


def recipe_files(names: list[str]) -> list:
    """Recipe paths from names: a file or shipped name, or a folder of stage recipes (common.yaml skipped)."""
    from pathlib import Path

    from corl.config import recipes_dir, resolve_recipe

    paths = []
    for name in names:
        folder = Path(name) if Path(name).is_dir() else recipes_dir() / name
        if folder.is_dir():
            stages = sorted(p for p in folder.glob("*.yaml") if p.name != "common.yaml")
            if not stages:
                raise FileNotFoundError(f"{folder} holds no recipes")
            paths.extend(stages)
        else:
            paths.append(resolve_recipe(name))
    return paths


def run_prefetch(args: argparse.Namespace) -> int:
    from corl.config import load_config
    from corl.training.assets import assets_of, fetch

    names = [a for a in args.recipes if "=" not in a]
    overrides = [a for a in args.recipes if "=" in a]  # key=value overrides among the recipe names
    if not names:
        raise ValueError("name at least one recipe (key=value overrides apply to the recipes named)")
    assets = []
    for path in recipe_files(names):
        for asset in assets_of(load_config(path, overrides)):
            if asset not in assets:
                assets.append(asset)
    if not assets:
        print("nothing to download: the recipes use local paths and the Shapes world only")
        return 0
    failed = 0
    for asset in assets:
        if asset.cached():
            print(f"cached      {asset}")
            continue
        size = asset.size()
        print(f"fetching    {asset}" + (f", {size / 2**30:.2f} GiB" if size else ""), flush=True)
        try:
            where = fetch(asset)
        except Exception as err:  # one failure should not hide the others: report and go on
            failed += 1
            print(f"FAILED      {asset.name}: {type(err).__name__}: {err}")
            continue
        print(f"done        {asset.name} -> {where}")
    print(f"{len(assets) - failed} of {len(assets)} assets cached" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prefetch", help="download the models, data and reward backbones recipes need, ahead of a run",
        description="Fetch every asset the recipes name (policy model and processor, datasets, BLIP captioner, "
                    "BERTScore backbone, LPIPS backbone, CLIP) into the Hugging Face / torch caches, with sizes "
                    "and progress bars. Assets already cached are skipped.",
    )
    p.add_argument("recipes", nargs="+", help="recipe files, shipped names or recipe folders (janus-pro-1b/paper); "
                   "key=value overrides may follow")
    p.set_defaults(func=run_prefetch, _parser=p)
