"""`corl config`: look at recipes and knobs without running anything."""

from __future__ import annotations

import argparse
import sys

import yaml

from corl.config import describe_fields, load_config, resolve_recipe, to_dict


def _show(args: argparse.Namespace) -> int:
    cfg = load_config(resolve_recipe(args.recipe) if args.recipe else None, args.overrides)
    sys.stdout.write(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return 0


def _list(args: argparse.Namespace) -> int:
    for key, help_text, default in describe_fields():
        print(f"{key} = {default!r}\n    {help_text}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show a resolved recipe or list every knob")
    p.set_defaults(_parser=p)
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    show = csub.add_parser("show", help="print a recipe after inheritance and key=value overrides")
    show.add_argument("recipe", nargs="?", help="recipe file or shipped name (e.g. shapes-tiny/unified)")
    show.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. grpo.beta=0.02")
    show.set_defaults(func=_show)
    lst = csub.add_parser("list", help="list every configuration key with its default and help")
    lst.set_defaults(func=_list)
