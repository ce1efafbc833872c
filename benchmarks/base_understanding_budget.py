"""Which open-ended templates can the Shapes base model's LLM learn, and at what supervised budget?

    python benchmarks/base_understanding_budget.py [--variants recipe understanding-x2 ...] [--seed 0]

Runs `corl shapes make-base`'s stages up to supervised training once (data, VQ, encoder pretraining:
`corl.basemodel.pipeline.pretrained_start`), then supervised training from that same start once per
variant, each evaluated exactly as make-base evaluates (`evaluate_base`: 300 held-out rows, greedy answers
and 8 sampled ones per question). The `recipe` variant is the shipped base, so its row reproduces the
shipped `make_base_report.json` on the same machine type. Variants:

- recipe: the shipped `SFTConfig`.
- understanding-x2 / -x3: 2 / 3 times the recipe's 300 steps of the understanding loss (generation stops
  at its 300); understanding-x0.67 / -x0.5: 200 / 150 steps (a weaker base, with more room for RL).
- exists-half-x2: understanding-x2 with half of the open-ended examples drawn from the exists template
  ("Is there a red square in the image?"), so exists sees 5.4 times the recipe's examples.
- reading-pretrained: the recipe after a text-only phase, as a real Janus's LLM is text-pretrained before
  it sees images: 600 steps of 64 examples whose context is the understanding prompt without an image and
  the scene's think text ("I see two red circles and a blue square."), and whose target is the answer to
  a color, shape, count or exists question (the templates a think text answers). It trains the LLM and its
  text head to answer from the description, the reading the base's answers lack.
- question-first: the recipe with the question before the image in every understanding prompt (SFT and
  evaluation; `PromptStyle.image_first=False`), so that image tokens can attend to the question: an
  exists check becomes a comparison each image token can make on its own.

`--save-dir DIR` saves each variant's model to DIR/<variant>; `CORL_SHAPES_BASE=DIR/<variant> corl demo`
then runs the demo from it.

The table prints, per variant, the supervised seconds, generation pass rate, MC and OE accuracy, greedy
OE accuracy per template, and sampled vs blind accuracy (an answerer that ignores the image and draws
from the same answers) per template: sampled above blind means the answers read the image, which is what
RL can sharpen.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

# understanding steps as a multiple of the recipe's (300), and the share of OE examples asking exists
VARIANTS: dict[str, dict] = {
    "recipe": {},
    "understanding-x2": {"mm2t_factor": 2},
    "understanding-x3": {"mm2t_factor": 3},
    "exists-half-x2": {"mm2t_factor": 2, "exists_share": 0.5},
    "reading-pretrained": {"reading_steps": 600},
    "question-first": {"image_first": False},
    "understanding-x0.67": {"mm2t_factor": 2 / 3},
    "understanding-x0.5": {"mm2t_factor": 0.5},
}
TEMPLATES = ("color", "shape", "count", "exists", "relation", "side")
READING_TEMPLATES = ("color", "shape", "count", "exists")  # the OE templates a think text answers
READING_BATCH = 64


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


def reading_examples(processor, n: int, seed: int, eos_id: int) -> list[tuple[list[int], list[int]]]:
    """n text-only (context ids, target ids) pairs from fresh scenes, cycling over READING_TEMPLATES: the
    context is the understanding prompt of the question without an image, then "<think>{think text}</think>";
    the target is "<answer>...</answer>" and EOS."""
    from corl.config import DEFAULT_ANSWER_FORMAT
    from corl.policy.prompts import render_text_turn
    from corl.shapes.captions import think_text
    from corl.shapes.questions import OE_TEMPLATES, answer_tag
    from corl.shapes.scene import sample_scene

    tokenizer = processor.tokenizer
    rng = random.Random(f"corl-base-text:{seed}")
    out: list[tuple[list[int], list[int]]] = []
    while len(out) < n:
        scene = sample_scene(rng)
        made = OE_TEMPLATES[READING_TEMPLATES[len(out) % len(READING_TEMPLATES)]](scene, rng)
        if made is None:  # color / shape need a subject whose asked attribute is one value
            continue
        question, answer = made
        prompt = render_text_turn(processor, f"{question} {DEFAULT_ANSWER_FORMAT}")
        context = tokenizer(prompt + f"<think>{think_text(scene)}</think>")["input_ids"]
        out.append((context, tokenizer(answer_tag(answer), add_special_tokens=False)["input_ids"] + [eos_id]))
    return out


def reading_pretraining(policy, steps: int, batch_size: int, seed: int) -> float:
    """Train the LLM and its text head on `reading_examples` (loss on the target tokens only, the SFT
    recipe's optimizer and warmup-cosine schedule); returns the seconds taken."""
    import torch
    import torch.nn.functional as F

    from corl.algos import masked_mean
    from corl.basemodel.sft import SFTConfig, left_pad, right_pad, sft_optimizer
    from corl.basemodel.vq_training import warmup_cosine_factor
    from corl.policy.logits import positions_from_mask

    pad = policy.tokens.pad_id
    pool = reading_examples(policy.processor, steps * batch_size // 2, seed, policy.tokens.eos_id)
    model = policy.model
    llm = model.model.language_model
    params = [*llm.parameters(), *model.lm_head.parameters()]
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    config = SFTConfig()  # the SFT recipe's learning rate and warmup
    optimizer = sft_optimizer(params, config)
    generator = torch.Generator().manual_seed(seed)
    began = time.perf_counter()
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * warmup_cosine_factor(step, config.warmup_steps, steps)
        rows = torch.randint(0, len(pool), (batch_size,), generator=generator).tolist()
        context, context_mask = left_pad([pool[i][0] for i in rows], pad)  # [b, P]
        target, target_mask = right_pad([pool[i][1] for i in rows], pad)  # [b, C]
        ids, mask = torch.cat([context, target], 1), torch.cat([context_mask, target_mask], 1)
        hidden = llm(inputs_embeds=llm.get_input_embeddings()(ids), attention_mask=mask,
                     position_ids=positions_from_mask(mask), use_cache=False).last_hidden_state
        logits = model.lm_head(hidden[:, context.shape[1] - 1 : -1])  # [b, C, V]: state t predicts token t+1
        loss = masked_mean(F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none"),
                           target_mask.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if (step + 1) % 100 == 0:
            print(f"reading step {step + 1}: loss {loss.item():.3f}", flush=True)
    model.eval()
    return time.perf_counter() - began


def run_variant(start, state: dict, rng_state, recipe, seed: int, knobs: dict, quick: bool = False) -> dict:
    """Supervised training from the shared start (weights and torch's global RNG as make-base leaves them
    before SFT) with `knobs`, then make-base's evaluation."""
    import torch

    from corl.basemodel.pipeline import evaluate_base, sft_pools
    from corl.basemodel.sft import train_sft
    from corl.policy.prompts import PromptStyle

    share = knobs.get("exists_share", 0.0)
    start.policy.model.load_state_dict(state)
    start.policy.style = PromptStyle(image_first=knobs.get("image_first", True))  # SFT's and evaluation's
    torch.set_rng_state(rng_state)
    reading_steps = min(knobs.get("reading_steps", 0), 2) if quick else knobs.get("reading_steps", 0)
    reading_seconds = (reading_pretraining(start.policy, reading_steps, 4 if quick else READING_BATCH, seed)
                       if reading_steps else 0.0)
    mm2t_steps = round(recipe.sft.mm2t_steps * knobs.get("mm2t_factor", 1))
    config = replace(recipe.sft, seed=seed, mm2t_steps=mm2t_steps)
    t2i, mm2t = sft_pools(start, config, recipe.sizes.image_size, exists_heavy(share) if share else None)
    began = time.perf_counter()
    train_sft(start.policy, t2i, mm2t, config)
    seconds = time.perf_counter() - began
    metrics = evaluate_base(start.policy, start.test, recipe)
    steps = f"{config.t2i_steps}/{config.mm2t_steps}" + (f" +{reading_steps}r" if reading_steps else "")
    return {"sft_seconds": round(seconds, 1), "reading_seconds": round(reading_seconds, 1), "steps": steps, **metrics}


def print_table(results: dict[str, dict]) -> None:
    def pct(x: float | None) -> str:
        return "  n/a" if x is None else f"{100 * x:5.1f}"

    print("\nheld-out, % (generation: pass rate; OE per template: greedy)")
    head = f"{'variant':18} {'t2i/mm2t':>14} {'SFT s':>6} {'read s':>6} {'gen':>5} {'MC':>5} {'OE':>5} | "
    print(head + " ".join(f"{t:>8}" for t in TEMPLATES))
    for name, r in results.items():
        greedy = r["oe.by_topic"]
        row = (f"{name:18} {r['steps']:>14} {r['sft_seconds']:6.1f} {r['reading_seconds']:6.1f}"
               f" {pct(r['t2i.overall'])} {pct(r['mc.accuracy'])} {pct(r['oe.accuracy'])} | ")
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
    parser.add_argument("--save-dir", help="save each variant's model to SAVE_DIR/<variant>")
    parser.add_argument("--quick", action="store_true", help="make-base's --quick sizes and steps: a smoke run "
                        "in seconds whose numbers mean nothing")
    args = parser.parse_args(argv)

    import torch

    from corl.basemodel.pipeline import BaseModelRecipe, pretrained_start, quick_recipe, torch_threads
    from corl.policy.loading import save_policy

    recipe = (quick_recipe() if args.quick else BaseModelRecipe()).resolved()
    results: dict[str, dict] = {}
    with torch_threads(args.threads):
        start = pretrained_start(recipe, args.seed)
        state = copy.deepcopy(start.policy.model.state_dict())
        rng_state = torch.get_rng_state()
        for name in args.variants:
            print(f"--- {name}: {VARIANTS[name] or 'the shipped recipe'}", flush=True)
            results[name] = run_variant(start, state, rng_state, recipe, args.seed, VARIANTS[name], args.quick)
            if args.save_dir:
                save_policy(start.policy, Path(args.save_dir) / name)
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
