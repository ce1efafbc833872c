"""Bridges to the public generation benchmarks: read their prompt files, write images where their official
scorers look for them. Scoring itself needs the benchmarks' own detectors / VQA / judge models and runs
outside corl.

Layouts (checked against each benchmark's repository):

- GenEval (djghosh13/geneval; README "Image generation", generation/diffusers_generate.py,
  evaluation/evaluate_images.py). Prompts: `evaluation_metadata.jsonl`, one JSON object per line with
  `prompt`, `tag`, `include` (and `exclude`). Images: `<outdir>/<index:05d>/metadata.jsonl` holding that
  prompt's JSON object (the scorer reads it with json.load), `<outdir>/<index:05d>/samples/<j:04d>.png`
  (the scorer takes every `\\d+.png` there), and an optional `grid.png`. 4 images per prompt by default.
  Score: `python evaluation/evaluate_images.py <outdir> --outfile results.jsonl --model-path <detector>`,
  then `summary_scores.py` (overall = mean over tags).
- DPG-Bench (TencentQQGYLab/ELLA, dpg_bench/compute_dpg_bench.py). Prompts: a folder of `<item_id>.txt`.
  Images: `<outdir>/<item_id>.png`, a 2x2 grid of 4 images of the same prompt (the scorer crops tiles
  (0,0), (r,0), (0,r), (r,r): top-left, top-right, bottom-left, bottom-right, r = `--resolution`, the tile
  size, which is recorded in the dump report). The scorer lists every file in the folder, so nothing else
  is written there. Score: `bash dpg_bench/dist_eval.sh <outdir> <tile size>`.
- WISE (PKU-YuanGroup/WISE, gpt_eval.py). Prompts: JSON files (`data/cultural_common_sense.json`,
  `data/spatio-temporal_reasoning.json`, `data/natural_science.json`), each a list of entries with
  `prompt_id`, `Prompt`, `Explanation`, `Subcategory`, ...; prompt ids are unique across the three files.
  Images: `<outdir>/<prompt_id>.png`, one per prompt. Score: `gpt_eval.py --json_path ... --image_dir
  <outdir>` per file, then its Calculate.py (WiScore).

Choices: prompts are batched in a fixed partition of the prompt list and batch k is seeded with
`batch_seed(seed, first index of batch k)`, so a dump is deterministic for (policy, prompts, seed,
batch_size), and a resumed dump (`resume=True`: batches whose outputs all exist are skipped) produces the
same images as an uninterrupted one. Images are written through a temporary file and renamed; for GenEval
the folder's `metadata.jsonl` is written last, so a folder with one is complete.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from corl.config import DEFAULT_CFG_WEIGHT
from corl.policy.policy import JanusPolicy
from corl.eval.grading import batch_seed, batched, check_count, image_grid, save_image_atomic
from corl.generation.rollout import generate_images

logger = logging.getLogger(__name__)

BENCHMARKS: tuple[str, ...] = ("geneval", "dpg", "wise")
GENEVAL_IMAGES = 4
DPG_IMAGES = 4  # the scorer reads a 2x2 grid


@dataclass
class DumpReport:
    """What a dump wrote; `tile_size` is the generated image size (DPG's `--resolution`)."""

    benchmark: str
    outdir: str
    n_prompts: int
    images_per_prompt: int
    cfg_weight: float
    seed: int
    batch_size: int
    n_written: int = 0
    n_skipped_existing: int = 0
    tile_size: list[int] | None = None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("files")
        return out


@dataclass(frozen=True)
class PromptItem:
    """One prompt to render: `key` names its output (folder index, item id or prompt id)."""

    key: str
    prompt: str
    record: dict[str, Any]


# ---- reading prompt files ------------------------------------------------------------------------


def read_geneval_metadata(path: str | os.PathLike[str]) -> list[PromptItem]:
    """Prompts of a GenEval `evaluation_metadata.jsonl` (a folder holding one is accepted too)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "evaluation_metadata.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"GenEval metadata file not found: {path}")
    items = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{line_no}: not valid JSON: {err}") from err
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or "tag" not in record:
            raise ValueError(f"{path}:{line_no}: a GenEval metadata line needs 'prompt' (text) and 'tag'")
        items.append(PromptItem(key=f"{len(items):05d}", prompt=record["prompt"], record=record))
    if not items:
        raise ValueError(f"{path} holds no prompts")
    return items


def read_dpg_prompts(folder: str | os.PathLike[str]) -> list[PromptItem]:
    """Prompts of a DPG-Bench prompt folder (`<item_id>.txt`), sorted by item id."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"DPG-Bench prompt folder not found: {folder}")
    items = []
    for path in sorted(folder.glob("*.txt")):
        text = path.read_text(encoding="utf-8").strip()
        if not text:
            raise ValueError(f"empty DPG-Bench prompt file: {path}")
        items.append(PromptItem(key=path.stem, prompt=text, record={"item_id": path.stem}))
    if not items:
        raise ValueError(f"{folder} holds no <item_id>.txt prompt files")
    return items


def read_wise_prompts(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[PromptItem]:
    """Prompts of WISE JSON files (one path, a folder of *.json, or a list), checked for unique ids."""
    if isinstance(paths, (str, os.PathLike)):
        root = Path(paths).expanduser()
        files = sorted(root.glob("*.json")) if root.is_dir() else [root]
    else:
        files = [Path(p).expanduser() for p in paths]
    if not files:
        raise FileNotFoundError(f"no WISE prompt files (*.json) in {paths}")
    items: list[PromptItem] = []
    seen: dict[str, Path] = {}
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"WISE prompt file not found: {path}")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"{path}: a WISE prompt file is a JSON list of entries")  # noqa: TRY004  (bad data: a user error)
        for entry in data:
            if (
                not isinstance(entry, dict)
                or "prompt_id" not in entry
                or not isinstance(entry.get("Prompt"), str)
            ):
                raise ValueError(f"{path}: every WISE entry needs 'prompt_id' and 'Prompt'")
            key = str(entry["prompt_id"])
            if key in seen:
                raise ValueError(f"WISE prompt_id {key} appears in both {seen[key]} and {path}")
            seen[key] = path
            items.append(PromptItem(key=key, prompt=entry["Prompt"], record=entry))
    return items


# ---- writing ------------------------------------------------------------------------------------


def _geneval_outputs(outdir: Path, item: PromptItem, n: int) -> list[Path]:
    folder = outdir / item.key
    return [folder / "samples" / f"{j:04d}.png" for j in range(n)] + [folder / "metadata.jsonl"]


def _write_geneval(outdir: Path, item: PromptItem, images: Sequence[Image.Image], grid: bool) -> list[Path]:
    folder = outdir / item.key
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    paths = []
    for j, image in enumerate(images):
        paths.append(folder / "samples" / f"{j:04d}.png")
        save_image_atomic(image, paths[-1])
    if grid:
        save_image_atomic(image_grid(images, cols=min(len(images), 4)), folder / "grid.png")
    tmp = folder / ".metadata.jsonl.tmp"
    tmp.write_text(json.dumps(item.record) + "\n")
    os.replace(tmp, folder / "metadata.jsonl")  # last: marks the folder complete
    return paths


def _write_dpg(outdir: Path, item: PromptItem, images: Sequence[Image.Image], grid: bool) -> list[Path]:
    path = outdir / f"{item.key}.png"
    save_image_atomic(image_grid(images, cols=2), path)  # row-major 2x2: TL, TR, BL, BR
    return [path]


def _write_wise(outdir: Path, item: PromptItem, images: Sequence[Image.Image], grid: bool) -> list[Path]:
    path = outdir / f"{item.key}.png"
    save_image_atomic(images[0], path)
    return [path]


Writer = Callable[[Path, PromptItem, Sequence[Image.Image], bool], list[Path]]


def _expected_outputs(benchmark: str, outdir: Path, item: PromptItem, n: int) -> list[Path]:
    if benchmark == "geneval":
        return _geneval_outputs(outdir, item, n)
    return [outdir / f"{item.key}.png"]


def dump_images(
    policy: JanusPolicy,
    benchmark: str,
    items: Sequence[PromptItem],
    outdir: str | os.PathLike[str],
    *,
    images_per_prompt: int | None = None,
    cfg_weight: float = DEFAULT_CFG_WEIGHT,
    seed: int = 0,
    batch_size: int = 4,
    resume: bool = True,
    grid: bool = True,
) -> DumpReport:
    """Generate images for `items` and write them in `benchmark`'s layout under `outdir` (module docstring).

    images_per_prompt: GenEval any >= 1 (default 4); DPG must be 4; WISE must be 1. grid: GenEval's
    optional grid.png.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown image benchmark {benchmark!r}; valid: {', '.join(BENCHMARKS)}")
    fixed = {"dpg": DPG_IMAGES, "wise": 1}
    n = images_per_prompt if images_per_prompt is not None else fixed.get(benchmark, GENEVAL_IMAGES)
    if benchmark in fixed and n != fixed[benchmark]:
        raise ValueError(f"{benchmark} needs {fixed[benchmark]} image(s) per prompt, got {n}")
    if n < 1:
        raise ValueError(f"images_per_prompt must be >= 1, got {n}")
    writer: Writer = {"geneval": _write_geneval, "dpg": _write_dpg, "wise": _write_wise}[benchmark]
    out = Path(outdir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    report = DumpReport(
        benchmark=benchmark,
        outdir=str(out),
        n_prompts=len(items),
        images_per_prompt=n,
        cfg_weight=cfg_weight,
        seed=seed,
        batch_size=batch_size,
    )
    n_batches = -(-len(items) // batch_size)
    for start, batch in tqdm(
        batched(items, batch_size), total=n_batches, desc=f"{benchmark} images", unit="batch"
    ):
        if resume and all(p.is_file() for it in batch for p in _expected_outputs(benchmark, out, it, n)):
            report.n_skipped_existing += len(batch)
            continue
        images = generate_images(policy,
            [it.prompt for it in batch],
            n=n,
            cfg_weight=cfg_weight,
            seed=batch_seed(seed, start),
            temperature=1.0,
        )
        check_count(images, len(batch) * n, "images")
        report.tile_size = list(images[0].size)
        for i, item in enumerate(batch):
            written = writer(out, item, images[i * n : (i + 1) * n], grid)
            report.files.extend(str(p) for p in written)
            report.n_written += 1
    logger.info(
        "%s: wrote %d prompts' images to %s (%d already there)",
        benchmark,
        report.n_written,
        out,
        report.n_skipped_existing,
    )
    return report


def read_prompts(benchmark: str, source: str | os.PathLike[str]) -> list[PromptItem]:
    """The prompt reader of `benchmark` applied to `source`."""
    readers = {"geneval": read_geneval_metadata, "dpg": read_dpg_prompts, "wise": read_wise_prompts}
    if benchmark not in readers:
        raise ValueError(f"unknown image benchmark {benchmark!r}; valid: {', '.join(BENCHMARKS)}")
    return readers[benchmark](source)
