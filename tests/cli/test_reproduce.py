"""`corl reproduce` end to end on CPU for both Janus-Pro families, every hub id pointed at a tiny local
stand-in of the same class: Janus, the BLIP captioner, a 12-layer BERT for BERTScore (the recipes compare
its last layer), the real LPIPS network with its shipped linear heads (its ImageNet backbone left random:
fetching it needs the network), and tiny datasets in the upstream column layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from corl.cli import main
from corl.training.testing import save_tiny_policy

pytest.importorskip("lpips", reason="the janus extra (pip install 'corl[janus]') is not installed")
torch.set_num_threads(2)

CAPTIONS = ["a red circle", "two blue squares", "a green triangle above a red circle", "one yellow square"]


def write_datasets(folder: Path) -> dict[str, Path]:
    """Unified / refined-t2i rows (prompt, real_image, qa_problem, qa_solution, qa_type) and stage-2 MC / OE
    rows (image, problem, solution), as jsonl with image files beside them."""
    folder.mkdir(parents=True)
    colors = [(220, 30, 30), (30, 30, 220), (30, 180, 30), (230, 220, 40)]
    for i, color in enumerate(colors):
        Image.new("RGB", (32, 32), color).save(folder / f"img{i}.png")
    unified = [{"prompt": c, "real_image": f"img{i}.png", "qa_type": "MC" if i % 2 else "OE",
                "qa_problem": "What color is it?\nA. red\nB. blue" if i % 2 else "How many shapes are there?",
                "qa_solution": "<answer>B</answer>" if i % 2 else "<answer>one</answer>"}
               for i, c in enumerate(CAPTIONS)]
    mcq = [{"image": f"img{i}.png", "problem": "What color is it?\nA. red\nB. blue\nC. green",
            "solution": "<answer>A</answer>"} for i in range(4)]
    vqa = [{"image": f"img{i}.png", "problem": "What shape is it?", "solution": "<answer>circle</answer>"}
           for i in range(4)]
    paths = {}
    for name, rows in (("unified", unified), ("mcq", mcq), ("vqa", vqa)):
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(row) + "\n" for row in rows))
    # the evaluation bridges' inputs: GenEval prompts, and a benchmark recipe over local rows
    paths["geneval"] = folder / "evaluation_metadata.jsonl"
    paths["geneval"].write_text("".join(json.dumps({"prompt": c, "tag": "single_object"}) + "\n" for c in CAPTIONS))
    paths["benchmark"] = folder / "tiny_bench.yaml"
    paths["benchmark"].write_text(f"name: tiny_bench\nsource: {paths['mcq']}\nsplit: train\nquestion_type: mc\n"
                                  "column_map: {image: image, question: problem, solution: solution}\n")
    return paths


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("family", ["paper", "official"])
def test_reproduce_runs_the_whole_pipeline(family, tmp_path, monkeypatch):
    from corl.rewards.testing import save_tiny_bert, save_tiny_blip

    monkeypatch.setenv("CORL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = write_datasets(tmp_path / "data")
    model = save_tiny_policy(tmp_path / "janus")
    blip, bert = save_tiny_blip(tmp_path / "blip"), save_tiny_bert(tmp_path / "bert", num_layers=12)
    out = tmp_path / "run"
    # The stages read different datasets: the unified and t2i rows for those stages, MC / OE rows for theirs.
    pointing = [f"model.name_or_path={model}", f"rewards.captioner_model={blip}",
                f"rewards.text_similarity_model={bert}",
                "rewards.reward_kwargs={cycle: {visual_options: {pretrained_backbone: false}}}"]
    per_stage_data = {"unified": data["unified"], "t2i": data["unified"], "mc": data["mcq"], "oe": data["vqa"]}
    family_dir = tmp_path / family
    family_dir.mkdir()
    for stage, source in per_stage_data.items():  # the shipped stage recipe with its data pointed here
        (family_dir / f"{stage}.yaml").write_text(
            f"inherit: {Path(__file__).resolve().parents[2] / 'recipes/janus-pro-1b' / family / stage}.yaml\n"
            f"data:\n  source: {source}\n")
    bridges = ["--geneval", str(data["geneval"]), "--benchmark", str(data["benchmark"]), "--max-rows", "2"]
    assert main(["reproduce", str(family_dir), "--out", str(out), *pointing, *bridges]) == 0

    from transformers import JanusForConditionalGeneration

    for stage in ("unified", "t2i", "mc", "oe"):
        summary = json.loads((out / stage / "summary.json").read_text())
        JanusForConditionalGeneration.from_pretrained(summary["final_checkpoint"])  # plain transformers loads it
    JanusForConditionalGeneration.from_pretrained(out / "merged-mc-oe")
    report = (out / "report.md").read_text()
    assert "Training rewards" in report and "merged: `merged-mc-oe`" in report and "plots/stage-unified.png" in report
    assert "geneval: " in report and "tiny_bench" in report and (out / "report.html").is_file()
    assert len(list((out / "eval" / "geneval-images").rglob("*.png"))) >= 2  # the dumps GenEval's scorer reads
    assert json.loads((out / "eval" / "tiny_bench.json").read_text())["settings"]["model"].endswith("merged-mc-oe")
    unified_cfg = (out / "unified" / "config.yaml").read_text()
    assert ("accuracy_upstream" in unified_cfg) == (family == "official")
    # a second run reads every stage back instead of training again
    before = {p: p.stat().st_mtime for p in out.glob("*/summary.json")}
    assert main(["reproduce", str(family_dir), "--out", str(out), *pointing, *bridges]) == 0
    assert {p: p.stat().st_mtime for p in out.glob("*/summary.json")} == before
