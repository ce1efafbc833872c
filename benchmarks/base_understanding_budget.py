"""Which open-ended templates can the Shapes base model's LLM learn, and at what supervised budget?

    python benchmarks/base_understanding_budget.py [--variants recipe understanding-x2 ...] [--seed 0]

Runs `corl shapes make-base`'s stages up to supervised training once (data, VQ, encoder pretraining:
`corl.basemodel.pipeline.pretrained_start`), then supervised training from that same start once per
variant, each evaluated exactly as make-base evaluates (`evaluate_base`: 300 held-out rows, greedy answers
and 8 sampled ones per question). The `recipe` variant is the shipped base, so its row reproduces the
shipped `make_base_report.json` on the same machine type. Variants:

- recipe: the shipped `SFTConfig`.
- understanding-x2 / -x3: 2 / 3 times the recipe's 300 steps of the understanding loss (generation stops
  at its 300).
- exists-half-x2: understanding-x2 with half of the open-ended examples drawn from the exists template
  ("Is there a red square in the image?"), so exists sees 5.4 times the recipe's examples.

The table prints, per variant, the supervised seconds, generation pass rate, MC and OE accuracy, greedy
OE accuracy per template, and sampled vs blind accuracy (an answerer that ignores the image and draws
from the same answers) per template: sampled above blind means the answers read the image, which is what
RL can sharpen.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace

# understanding steps as a multiple of the recipe's (300), and the share of OE examples asking exists
VARIANTS: dict[str, dict] = {
    "recipe": {},
    "understanding-x2": {"mm2t_factor": 2},
    "understanding-x3": {"mm2t_factor": 3},
    "exists-half-x2": {"mm2t_factor": 2, "exists_share": 0.5},
}
TEMPLATES = ("color", "shape", "count", "exists", "relation", "side")


def exists_heavy(share: float):
    """A question maker for `sample_mm2t_examples`: a `share` of the OE slots ask the exists template, the
    rest (and every MC slot) the Shapes templates' own mix."""
    from corl.shapes.questions import OE_TEMPLATES, answer_tag, make_question

    def make(scene, rng, kind):
        if kind == "oe" and rng.random() < share:
            question, answer = OE_TEMPLATES["exists"](scene, rng)
            return question, answer_tag(answer)
        return make_question(scene, rng, kind)

    return make


def run_variant(start, state: dict, rng_state, recipe, seed: int, knobs: dict) -> dict:
    """Supervised training from the shared start (weights and torch's global RNG as make-base leaves them
    before SFT) with `knobs`, then make-base's evaluation."""
    import torch

    from corl.basemodel.pipeline import evaluate_base, sft_pools
    from corl.basemodel.sft import train_sft

    share = knobs.get("exists_share", 0.0)
    start.policy.model.load_state_dict(state)
    torch.set_rng_state(rng_state)
    config = replace(recipe.sft, seed=seed, mm2t_steps=recipe.sft.mm2t_steps * knobs.get("mm2t_factor", 1))
    t2i, mm2t = sft_pools(start, config, recipe.sizes.image_size, exists_heavy(share) if share else None)
    began = time.perf_counter()
    train_sft(start.policy, t2i, mm2t, config)
    seconds = time.perf_counter() - began
    metrics = evaluate_base(start.policy, start.test, recipe)
    return {"sft_seconds": round(seconds, 1), "steps": f"{config.t2i_steps}/{config.mm2t_steps}", **metrics}


def print_table(results: dict[str, dict]) -> None:
    def pct(x: float | None) -> str:
        return "  n/a" if x is None else f"{100 * x:5.1f}"

    print("\nheld-out, % (generation: pass rate; OE per template: greedy)")
    head = f"{'variant':18} {'t2i/mm2t':>9} {'SFT s':>6} {'gen':>5} {'MC':>5} {'OE':>5} | "
    print(head + " ".join(f"{t:>8}" for t in TEMPLATES))
    for name, r in results.items():
        greedy = r["oe.by_topic"]
        row = (f"{name:18} {r['steps']:>9} {r['sft_seconds']:6.1f} {pct(r['t2i.overall'])} {pct(r['mc.accuracy'])}"
               f" {pct(r['oe.accuracy'])} | ")
        print(row + " ".join(f"{pct(greedy.get(t, {}).get('accuracy')):>8}" for t in TEMPLATES))
    print("\nOE sampled vs blind accuracy per template, % (8 answers a question at temperature 1)")
    print(f"{'variant':18} " + " ".join(f"{t:>13}" for t in TEMPLATES))
    for name, r in results.items():
        sampled = r["oe.sampled_by_topic"]
        cells = [f"{pct(sampled[t]['accuracy'])} / {pct(sampled[t]['blind'])}" if t in sampled else "n/a"
                 for t in TEMPLATES]
        print(f"{name:18} " + " ".join(f"{c:>13}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0, help="make-base's recipe seed (0: the shipped base)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (make-base's default: 2)")
    parser.add_argument("--json", help="also write every variant's metrics to this file")
    parser.add_argument("--quick", action="store_true", help="make-base's --quick sizes and steps: a smoke run "
                        "in seconds whose numbers mean nothing")
    args = parser.parse_args(argv)

    import torch

    from corl.basemodel.pipeline import BaseModelRecipe, pretrained_start, quick_recipe, torch_threads

    recipe = (quick_recipe() if args.quick else BaseModelRecipe()).resolved()
    results: dict[str, dict] = {}
    with torch_threads(args.threads):
        start = pretrained_start(recipe, args.seed)
        state = copy.deepcopy(start.policy.model.state_dict())
        rng_state = torch.get_rng_state()
        for name in args.variants:
            print(f"--- {name}: {VARIANTS[name] or 'the shipped recipe'}", flush=True)
            results[name] = run_variant(start, state, rng_state, recipe, args.seed, VARIANTS[name])
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
