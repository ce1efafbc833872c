"""The Shapes base model: a tiny Janus model made by a seeded recipe, mediocre at both tasks on purpose.

`make_base_model(out_dir, seed)` (CLI: `corl shapes make-base`):
1. Data: the Shapes dataset exactly as `corl shapes build` makes it by default (2000 train / 300 test
   rows, dataset seed 0); its test split is the evaluation split. Training examples are fresh scenes
   from the recipe seed's own streams, with every test (caption, scene) and (scene, question) pair
   excluded.
2. Tokenizer: `build_tokenizer` over every word of the world's captions, questions, answers, think texts
   and the answer-format instruction (Janus special tokens and reasoning tags included), and
   `build_processor` at 48 px, patch 8 (6 x 6 = 36 image tokens).
3. Model: transformers' `JanusForConditionalGeneration` at the sizes of `shapes_base_sizes()` (LLM 128
   wide, 3 layers; a 2-layer, 64-wide understanding encoder; a VQ model with 32 channels, 4 levels and
   128 codes), random weights from `torch.manual_seed(seed)`.
4. VQ training on renders (`corl.basemodel.vq_training`); its reconstructions of the test renders are
   scored like generations (this caps what generation can reach).
5. Pretraining of the understanding encoder on per-patch cell attributes (`corl.basemodel.vision_pretraining`),
   as a real Janus's SigLIP is pretrained: the base's sampled answers then depend on the image.
6. SFT on both tasks with teacher forcing (`corl.basemodel.sft`), stopped by a step budget chosen so that
   generation pass rate, MC and OE accuracy lie between 20% and 75% and the format rate between 0 and 1.
7. Evaluation with `corl.eval.shapes_suite.evaluate_shapes` (CFG 5, several images per prompt, greedy
   answers), `save_pretrained` of model + processor, and `make_base_report.json`.

Determinism: the whole build uses `num_threads` CPU threads (default 2) and seeded generators only, so
the same seed on the same machine and library versions gives the same weights and report numbers. Another
CPU type may not: PyTorch picks its float kernels by the CPU's instruction set, so the report records the
machine (`machine_record`) beside the library versions.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corl.config import DEFAULT_CFG_WEIGHT

# torch and transformers are imported inside the functions that need them (a cheap import for tools
# that only read REPORT_NAME or the sizes).
if TYPE_CHECKING:
    import torch

    from corl.basemodel.sft import MM2TPool, QuestionMaker, SFTConfig, T2IPool
    from corl.basemodel.vision_pretraining import VisionPretrainingConfig
    from corl.basemodel.vq_training import VQTrainingConfig
    from corl.policy.architecture import JanusSizes
    from corl.policy.policy import JanusPolicy

from corl.shapes.dataset_defaults import DEFAULT_N_TEST, DEFAULT_N_TRAIN, DEFAULT_SEED

logger = logging.getLogger(__name__)

REPORT_NAME = "make_base_report.json"
DATASET_SEED = DEFAULT_SEED  # the test split is `corl shapes build`'s default, whatever the recipe seed
MEDIOCRE_RANGE = (0.20, 0.75)  # generation pass rate, MC and OE accuracy must lie in this range


def shapes_base_sizes() -> JanusSizes:
    """The shipped model's sizes: LLM 128 wide, 3 layers; a 2-layer, 64-wide understanding encoder;
    48 px images in 8 px patches (36 tokens); a VQ model with 32 channels, 4 levels and 128 codes."""
    from corl.policy.architecture import JanusSizes

    return JanusSizes(
        vocab_size=None,  # exactly the tokenizer
        text_hidden_size=128, text_intermediate_size=384, text_layers=3, text_heads=4, text_kv_heads=4,
        max_position_embeddings=512, image_size=48, patch_size=8, vision_hidden_size=64, vision_layers=2,
        vision_heads=2, vision_mlp_ratio=2.0, aligner_depth=2, vq_codebook_size=64, vq_embed_dim=8,
        vq_base_channels=32, vq_latent_channels=32,
        vq_res_blocks=0,  # encoder: strided convs + mid block; decoder: one residual block per level
        vq_channel_multiplier=(1, 1, 1, 1),
        # ~1 / sqrt(width): transformers' usual 0.02 is made for wide models; at width 128 it leaves attention
        # nearly uniform and image-token embeddings near zero, and SFT barely started learning in 1000 steps.
        initializer_range=0.08,
    )


@dataclass(frozen=True)
class BaseModelRecipe:
    """Everything `make_base_model` does, as data (defaults: the shipped checkpoint).

    sizes / vq / vision / sft left None take the shipped values (`shapes_base_sizes()`, `VQTrainingConfig()`,
    `VisionPretrainingConfig()`, `SFTConfig()`); their seed is always the recipe seed given to `make_base_model`.
    """

    sizes: JanusSizes | None = None
    vq: VQTrainingConfig | None = None
    vision: VisionPretrainingConfig | None = None
    sft: SFTConfig | None = None
    n_train: int = DEFAULT_N_TRAIN  # dataset split sizes as `corl shapes build` makes them by default
    n_test: int = DEFAULT_N_TEST  # (the test split depends on both)
    vocab_samples: int = 3000  # scenes whose captions/questions/think texts make the vocabulary
    vq_eval_scenes: int | None = None  # test scenes whose renders are round-tripped (None: all)
    eval_rows: int | None = None  # test rows evaluated (None: all)
    eval_images_per_prompt: int = 4
    eval_cfg_weight: float = DEFAULT_CFG_WEIGHT
    eval_batch_size: int = 16
    eval_max_new_tokens: int = 48  # the SFT targets are ~20 tokens; longer answers are wrong anyway
    eval_seed: int = 0
    # answers sampled per question at temperature 1: the report's sampled accuracy and contrast per template
    # (what GRPO can find, beside what greedy decoding answers)
    eval_answer_samples: int = 8

    def resolved(self) -> BaseModelRecipe:
        """This recipe with sizes / vq / vision / sft filled in."""
        from corl.basemodel.sft import SFTConfig
        from corl.basemodel.vision_pretraining import VisionPretrainingConfig
        from corl.basemodel.vq_training import VQTrainingConfig

        return replace(self, sizes=self.sizes or shapes_base_sizes(), vq=self.vq or VQTrainingConfig(),
                       vision=self.vision or VisionPretrainingConfig(), sft=self.sft or SFTConfig())


def quick_recipe() -> BaseModelRecipe:
    """The `--quick` smoke recipe: tiny sizes, a couple of steps, a handful of rows; numbers mean nothing."""
    from corl.basemodel.sft import SFTConfig
    from corl.basemodel.vision_pretraining import VisionPretrainingConfig
    from corl.basemodel.vq_training import VQTrainingConfig

    sizes = replace(shapes_base_sizes(), text_hidden_size=64, text_intermediate_size=128, text_layers=1,
                    vision_hidden_size=32, vision_layers=1, vq_codebook_size=32)
    return BaseModelRecipe(
        sizes=sizes,
        vq=VQTrainingConfig(steps=2, batch_size=2, pool_size=8, warmup_steps=1, ae_fraction=0.5, init_images=4),
        vision=VisionPretrainingConfig(steps=2, batch_size=2, pool_size=8, warmup_steps=1),
        sft=SFTConfig(t2i_steps=2, mm2t_steps=2, t2i_batch_size=2, mm2t_batch_size=2, warmup_steps=1,
                      t2i_pool_size=8, mm2t_pool_size=8),
        n_train=24,
        n_test=8,
        vocab_samples=200,
        vq_eval_scenes=4,
        eval_rows=4,
        eval_images_per_prompt=1,
        eval_batch_size=4,
        eval_max_new_tokens=8,
        eval_answer_samples=2,
    )


# ---- vocabulary ------------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z]+|\d+")


def shapes_vocabulary(samples: int = 3000, seed: int = 0) -> list[str]:
    """Every word of the Shapes world's texts, sorted: captions, questions (MC and OE), answers, think
    texts and the answer-format instruction, from `samples` scenes plus the fixed word lists."""
    from corl.policy.prompts import DEFAULT_ANSWER_FORMAT
    from corl.shapes.captions import PREFIXES, RELATION_PHRASES, caption_for, think_text
    from corl.shapes.questions import QUESTION_KINDS, make_question
    from corl.shapes.scene import COLOR_NAMES, NUMBER_WORDS, SHAPES, plural, sample_scene

    rng = random.Random(f"corl-base-vocab:{seed}")
    texts = [DEFAULT_ANSWER_FORMAT, "I see", *PREFIXES, *(p for ps in RELATION_PHRASES.values() for p in ps)]
    texts += [*COLOR_NAMES, *SHAPES, *(plural(s) for s in SHAPES), *NUMBER_WORDS, "yes", "no", "objects"]
    for i in range(samples):
        scene = sample_scene(rng)
        question, solution = make_question(scene, rng, QUESTION_KINDS[i % len(QUESTION_KINDS)])
        texts += [caption_for(scene, rng), question, solution, think_text(scene)]
    words = {w for text in texts for w in _WORD.findall(text)}
    return sorted(words)


# ---- helpers ---------------------------------------------------------------------------------------


@contextmanager
def torch_threads(n: int | None):
    """Run with `n` intra-op threads (restored afterwards); None leaves the setting alone."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def machine_record() -> dict[str, str]:
    """What decides the build's float kernels besides the library versions: the CPU model and the instruction
    set PyTorch dispatches to (e.g. "AVX2", "AVX512")."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters per corl parameter group (PARAMETER_GROUPS) and in total."""
    from corl.policy.policy import PARAMETER_GROUPS

    counts = {
        name: sum(p.numel() for path in paths for p in model.get_submodule(path).parameters())
        for name, paths in PARAMETER_GROUPS.items()
    }
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def _test_exclusions(test_split: Any) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(caption, scene JSON) and (scene JSON, question) pairs of the test split."""
    prompts, scenes, questions = test_split["prompt"], test_split["scene"], test_split["question"]
    t2i = set(zip(prompts, scenes))
    mm2t = set(zip(scenes, questions))
    return t2i, mm2t


def _directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def mediocrity_check(metrics: dict[str, Any], low: float = MEDIOCRE_RANGE[0],
                     high: float = MEDIOCRE_RANGE[1]) -> dict[str, bool]:
    """Which of the targets hold: generation pass rate, MC and OE accuracy in [low, high], format
    rate strictly between 0 and 1."""
    def within(key: str) -> bool:
        value = metrics.get(key)
        return value is not None and low <= value <= high

    fmt = metrics.get("format_rate")
    checks = {key: within(key) for key in ("t2i.overall", "mc.accuracy", "oe.accuracy")}
    checks["format_rate"] = fmt is not None and 0.0 < fmt < 1.0
    checks["all"] = all(checks.values())
    return checks


# ---- the stages before SFT, and the evaluation -----------------------------------------------------


@dataclass
class PretrainedStart:
    """The base model before supervised training (`pretrained_start`): VQ trained, encoder pretrained."""

    policy: JanusPolicy
    test: Any  # the evaluation split (datasets.Dataset): `corl shapes build`'s default test split
    exclude_t2i: set[tuple[str, str]]  # (caption, scene JSON) pairs of the test split
    exclude_mm2t: set[tuple[str, str]]  # (scene JSON, question) pairs of the test split
    vq_report: dict[str, Any]
    vision_report: dict[str, Any]


def pretrained_start(recipe: BaseModelRecipe, seed: int,
                     lap: Callable[[str, float], float] | None = None) -> PretrainedStart:
    """Steps 1-5 of the module docstring for a resolved `recipe`: data, tokenizer, random model, VQ training,
    encoder pretraining. lap(name, since) is called after each stage (make-base's timings)."""
    import torch

    from corl.basemodel.vision_pretraining import pretrain_vision_encoder
    from corl.basemodel.vq_training import reconstruction_quality, train_vq
    from corl.policy.architecture import build_janus
    from corl.policy.policy import JanusPolicy
    from corl.policy.tokenizer import build_processor, build_tokenizer
    from corl.shapes.dataset import build_shapes_dataset
    from corl.shapes.scene import Scene

    lap = lap or (lambda _name, _since: time.perf_counter())
    t = time.perf_counter()
    data = build_shapes_dataset(recipe.n_train, recipe.n_test, seed=DATASET_SEED, image_size=recipe.sizes.image_size)
    test = data["test"]
    exclude_t2i, exclude_mm2t = _test_exclusions(test)
    tokenizer = build_tokenizer(shapes_vocabulary(recipe.vocab_samples, seed))
    processor = build_processor(tokenizer, recipe.sizes.image_size, patch_size=recipe.sizes.patch_size)
    torch.manual_seed(seed)
    model = build_janus(recipe.sizes, tokenizer)
    policy = JanusPolicy(model, processor)
    t = lap("data_and_init", t)

    vq_report = train_vq(model.model.vqmodel, replace(recipe.vq, seed=seed), recipe.sizes.image_size)
    test_scenes = [Scene.from_json(s) for s in test["scene"]][: recipe.vq_eval_scenes]
    vq_report["reconstruction"] = reconstruction_quality(model.model.vqmodel, test_scenes, recipe.sizes.image_size)
    t = lap("vq", t)

    vision_report = pretrain_vision_encoder(
        model.model.vision_model, processor.image_processor, replace(recipe.vision, seed=seed),
        recipe.sizes.image_size, eval_scenes=test_scenes, exclude=test["scene"])
    lap("vision", t)
    return PretrainedStart(policy, test, exclude_t2i, exclude_mm2t, vq_report, vision_report)


def sft_pools(start: PretrainedStart, config: SFTConfig, image_size: int,
              make_question: QuestionMaker | None = None) -> tuple[T2IPool, MM2TPool]:
    """Step 6's example pools from the recipe seed's streams, test pairs excluded (`make_question`: another
    question mix for the mm2t examples; default the Shapes templates' own)."""
    from corl.basemodel.sft import build_mm2t_pool, build_t2i_pool, sample_mm2t_examples, sample_t2i_examples

    t2i = build_t2i_pool(start.policy, sample_t2i_examples(config.t2i_pool_size, config.seed, start.exclude_t2i),
                         image_size)
    mm2t = build_mm2t_pool(
        start.policy, sample_mm2t_examples(config.mm2t_pool_size, config.seed, start.exclude_mm2t, make_question),
        image_size, config)
    return t2i, mm2t


def evaluate_base(policy: JanusPolicy, test: Any, recipe: BaseModelRecipe) -> dict[str, Any]:
    """Step 7's evaluation with the recipe's settings (greedy answers, and sampled ones per template)."""
    from corl.eval.shapes_suite import evaluate_shapes

    return evaluate_shapes(
        policy, test, images_per_prompt=recipe.eval_images_per_prompt, cfg_weight=recipe.eval_cfg_weight,
        seed=recipe.eval_seed, max_rows=recipe.eval_rows, batch_size=recipe.eval_batch_size,
        max_new_tokens=recipe.eval_max_new_tokens, answer_samples=recipe.eval_answer_samples,
    )


# ---- the recipe ------------------------------------------------------------------------------------


def make_base_model(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    *,
    quick: bool = False,
    recipe: BaseModelRecipe | None = None,
    num_threads: int | None = 2,
) -> dict[str, Any]:
    """Build, evaluate and save the Shapes base model into `out_dir` (module docstring); returns the
    report that is also written to `out_dir/make_base_report.json`.

    quick: a smoke version (tiny sizes, a few steps, a handful of evaluation rows) that runs in seconds;
    its numbers mean nothing. recipe: overrides every knob (default: the shipped recipe, or `quick_recipe()`).
    num_threads: torch CPU threads for the build (restored afterwards); part of what makes it reproducible.
    """
    import torch
    import transformers

    from corl.basemodel.sft import train_sft
    from corl.policy.loading import save_policy

    recipe = (recipe or (quick_recipe() if quick else BaseModelRecipe())).resolved()
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output directory {out} exists and is not empty")
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 1)
        logger.info("make-base: %s took %.1f s", name, now - since)
        return now

    with torch_threads(num_threads):
        start_point = pretrained_start(recipe, seed, lap)
        policy, test = start_point.policy, start_point.test
        t = time.perf_counter()
        sft_config = replace(recipe.sft, seed=seed)
        t2i_pool, mm2t_pool = sft_pools(start_point, sft_config, recipe.sizes.image_size)
        t = lap("sft_data", t)
        sft_report = train_sft(policy, t2i_pool, mm2t_pool, sft_config)
        t = lap("sft", t)

        metrics = evaluate_base(policy, test, recipe)
        t = lap("eval", t)

        save_policy(policy, out)
        lap("save", t)

    build_seconds = round(time.perf_counter() - start, 1)
    evaluation = {k: v for k, v in metrics.items() if k != "settings"}
    report = {
        "seed": seed,
        "quick": quick,
        "build_seconds": build_seconds,
        "timings_seconds": timings,
        "num_threads": num_threads,
        "evaluation": evaluation,
        "evaluation_settings": metrics.get("settings"),
        "targets": mediocrity_check(evaluation),
        "target_range": list(MEDIOCRE_RANGE),
        "vq": start_point.vq_report,
        "vision_pretraining": start_point.vision_report,
        "sft": sft_report,
        "dataset": {"n_train": recipe.n_train, "n_test": recipe.n_test, "dataset_seed": DATASET_SEED,
                    "split_evaluated": "test", "t2i_pool": len(t2i_pool.captions),
                    "mm2t_pool": len(mm2t_pool.questions)},
        "sizes": asdict(recipe.sizes),
        "vocab_size": len(policy.processor.tokenizer),
        "parameters": parameter_counts(policy.model),
        "checkpoint_bytes": _directory_bytes(out),
        "recipe": {"vq": asdict(recipe.vq), "vision": asdict(recipe.vision), "sft": asdict(recipe.sft)},
        "machine": machine_record(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
    }
    report = json.loads(json.dumps(report))  # returned exactly as written (tuples become lists)
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    if not quick and not report["targets"]["all"]:
        logger.warning("make-base: the model misses its mediocrity targets: %s", report["targets"])
    return report


# ---- CLI -------------------------------------------------------------------------------------------
